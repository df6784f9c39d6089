//! XGBoost models saved with `save_model` as JSON or UBJSON (XGBoost 1.x–3.x schema).
//!
//! Exactness rules (measured against XGBoost itself): inputs and thresholds are f32, a row goes
//! left iff `x < threshold`, NaN follows `default_left`, leaf values are summed in f32 in tree
//! order starting from the base margin, and the link function is applied in f32. `base_score` is
//! stored in output space (XGBoost ≥ 2; a vector string such as `"[6.27E-1]"` in 3.x), so the
//! starting margin is its inverse link: logit for logistic objectives, log for count/gamma/tweedie.

use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

use crate::forest::{CATEGORICAL, DEFAULT_LEFT, Forest, Node, NodeBuilder};
use crate::quick::{Quick, Rule, add_round_robin};
use crate::shap::{Explainer, Method as ShapMethod};
use crate::task::TreeTask;

/// How raw margins become predictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    Identity,
    Sigmoid,
    Exp,
    Softmax,
    /// `multi:softmax`: the predicted class index (probabilities come from a softmax).
    ArgMax,
    /// `binary:hinge`: 1 if the margin is positive, else 0.
    Hinge,
}

/// A loaded XGBoost model.
#[derive(Debug, Clone)]
pub struct XgbModel {
    pub(crate) forest: Forest<f32>,
    /// The forest scored without walks, when it allows (numerical splits, small trees).
    quick: Option<Quick<f32>>,
    /// Computed on the first explanation.
    explainer: OnceLock<Result<Explainer, String>>,
    /// Output group (class or target) of every tree.
    tree_group: Vec<u32>,
    /// Whether tree `t` is in group `t % num_groups` (one tree per class per round, unweighted):
    /// the scorer's sums then go round robin.
    round_robin: bool,
    /// Per-tree weight (dart); `None` for gbtree.
    tree_weight: Option<Vec<f32>>,
    base_margin: Vec<f32>,
    pub link: Link,
    pub task: TreeTask,
    pub objective: String,
    pub num_features: usize,
    pub num_groups: usize,
    pub feature_names: Option<Vec<String>>,
    pub format: &'static str,
}

#[derive(Deserialize)]
struct FileSchema {
    learner: LearnerSchema,
}

#[derive(Deserialize)]
struct LearnerSchema {
    #[serde(default)]
    feature_names: Vec<String>,
    gradient_booster: Value,
    learner_model_param: ModelParamSchema,
    objective: ObjectiveSchema,
}

#[derive(Deserialize)]
struct ModelParamSchema {
    base_score: String,
    #[serde(default)]
    num_class: Option<String>,
    num_feature: String,
    #[serde(default)]
    num_target: Option<String>,
}

#[derive(Deserialize)]
struct ObjectiveSchema {
    name: String,
}

#[derive(Deserialize)]
struct GbTreeModelSchema {
    tree_info: Vec<i64>,
    trees: Vec<TreeSchema>,
}

#[derive(Deserialize)]
struct TreeParamSchema {
    num_nodes: String,
    #[serde(default)]
    size_leaf_vector: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Flag {
    Bool(bool),
    Int(i64),
}

impl Flag {
    fn is_set(&self) -> bool {
        match self {
            Flag::Bool(b) => *b,
            Flag::Int(i) => *i != 0,
        }
    }
}

#[derive(Deserialize)]
struct TreeSchema {
    tree_param: TreeParamSchema,
    left_children: Vec<i64>,
    right_children: Vec<i64>,
    split_indices: Vec<i64>,
    split_conditions: Vec<f32>,
    default_left: Vec<Flag>,
    #[serde(default)]
    split_type: Vec<i64>,
    #[serde(default)]
    categories: Vec<i64>,
    #[serde(default)]
    categories_nodes: Vec<i64>,
    #[serde(default)]
    categories_segments: Vec<i64>,
    #[serde(default)]
    categories_sizes: Vec<i64>,
    /// Each node's cover (the sum of the training rows' hessians), for TreeSHAP.
    #[serde(default)]
    sum_hessian: Vec<f64>,
}

fn parse_number<T: std::str::FromStr>(what: &str, text: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{what} '{text}' is not a number"))
}

/// `"0.5"`, `"5E-1"` or XGBoost 3's `"[6.274165E-1]"` / `"[0E0,0E0,0E0]"`.
fn parse_base_score(text: &str) -> Result<Vec<f32>, String> {
    let inner = text.trim().trim_start_matches('[').trim_end_matches(']');
    inner
        .split(',')
        .map(|part| parse_number::<f32>("base_score", part))
        .collect()
}

fn objective_semantics(name: &str) -> Result<(Link, TreeTask), String> {
    Ok(match name {
        "reg:squarederror"
        | "reg:linear"
        | "reg:squaredlogerror"
        | "reg:pseudohubererror"
        | "reg:absoluteerror"
        | "reg:quantileerror" => (Link::Identity, TreeTask::Regression),
        "reg:logistic" => (Link::Sigmoid, TreeTask::Regression),
        "binary:logistic" => (Link::Sigmoid, TreeTask::Binary),
        "binary:logitraw" => (Link::Identity, TreeTask::Raw),
        "binary:hinge" => (Link::Hinge, TreeTask::Binary),
        "count:poisson" | "reg:gamma" | "reg:tweedie" => (Link::Exp, TreeTask::Regression),
        "multi:softprob" => (Link::Softmax, TreeTask::Multiclass),
        "multi:softmax" => (Link::ArgMax, TreeTask::Multiclass),
        "rank:pairwise" | "rank:ndcg" | "rank:map" => (Link::Identity, TreeTask::Raw),
        other => {
            return Err(format!(
                "objective '{other}' is not supported by serval's XGBoost engine (supported: regression, logistic, \
                 binary, multi:softprob/softmax, count:poisson, reg:gamma, reg:tweedie, rank:*)"
            ));
        }
    })
}

/// The starting margin for an output-space base score.
fn base_margin(objective: &str, base_score: f32) -> f32 {
    match objective {
        "reg:logistic" | "binary:logistic" | "binary:logitraw" => {
            let p = base_score.clamp(f32::MIN_POSITIVE, 1.0 - f32::EPSILON);
            -(1.0 / p - 1.0).ln()
        }
        "count:poisson" | "reg:gamma" | "reg:tweedie" => base_score.max(f32::MIN_POSITIVE).ln(),
        _ => base_score,
    }
}

fn index(what: &str, value: i64, len: usize) -> Result<u32, String> {
    usize::try_from(value)
        .ok()
        .filter(|v| *v < len)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| format!("{what} {value} is out of range (0..{len})"))
}

impl XgbModel {
    /// Loads a model from JSON or UBJSON bytes (detected from the content).
    pub fn load(bytes: &[u8]) -> Result<Self, String> {
        let is_json = bytes
            .iter()
            .skip(1)
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|b| *b == b'"' || *b == b'}');
        if bytes.first() != Some(&b'{') {
            return Err("not an XGBoost model (expected a JSON or UBJSON object)".to_string());
        }
        let (value, format) = if is_json {
            let v: Value =
                serde_json::from_slice(bytes).map_err(|e| format!("invalid XGBoost JSON: {e}"))?;
            (v, "json")
        } else {
            let v = crate::ubjson::Reader::new(bytes)
                .document()
                .map_err(|e| format!("invalid XGBoost UBJSON: {e}"))?;
            (v, "ubjson")
        };
        Self::from_value(value, format)
    }

    fn from_value(value: Value, format: &'static str) -> Result<Self, String> {
        let file: FileSchema =
            serde_json::from_value(value).map_err(|e| format!("not an XGBoost model ({e})"))?;
        let learner = file.learner;
        let objective = learner.objective.name.clone();
        let (link, task) = objective_semantics(&objective)?;
        let num_features: usize =
            parse_number("num_feature", &learner.learner_model_param.num_feature)?;
        let num_class: usize = learner
            .learner_model_param
            .num_class
            .as_deref()
            .map(|t| parse_number("num_class", t))
            .transpose()?
            .unwrap_or(0);
        let num_target: usize = learner
            .learner_model_param
            .num_target
            .as_deref()
            .map(|t| parse_number("num_target", t))
            .transpose()?
            .unwrap_or(1);
        let num_groups = num_class.max(num_target).max(1);
        if matches!(task, TreeTask::Multiclass) && num_class < 2 {
            return Err(format!(
                "objective {objective} needs num_class >= 2, the model has {num_class}"
            ));
        }

        let booster = learner.gradient_booster;
        let booster_name = booster.get("name").and_then(Value::as_str).unwrap_or("");
        let (model_value, weights) = match booster_name {
            "gbtree" => (booster.get("model").cloned(), None),
            "dart" => {
                let weights: Vec<f32> = booster
                    .get("weight_drop")
                    .cloned()
                    .map(serde_json::from_value)
                    .transpose()
                    .map_err(|e| format!("invalid dart weight_drop: {e}"))?
                    .unwrap_or_default();
                (
                    booster.get("gbtree").and_then(|g| g.get("model")).cloned(),
                    Some(weights),
                )
            }
            "gblinear" => {
                return Err("gblinear boosters are not supported by serval's XGBoost engine (use gbtree or dart)".into());
            }
            other => return Err(format!("unknown XGBoost booster '{other}'")),
        };
        let model: GbTreeModelSchema = model_value
            .ok_or("the booster has no model")
            .map_err(str::to_string)
            .and_then(|v| {
                serde_json::from_value(v).map_err(|e| format!("invalid tree model: {e}"))
            })?;
        if model.tree_info.len() != model.trees.len() {
            return Err(format!(
                "tree_info has {} entries for {} trees",
                model.tree_info.len(),
                model.trees.len()
            ));
        }
        if let Some(w) = weights.as_ref().filter(|w| w.len() != model.trees.len()) {
            return Err(format!(
                "dart weight_drop has {} weights for {} trees",
                w.len(),
                model.trees.len()
            ));
        }

        let mut base = parse_base_score(&learner.learner_model_param.base_score)?;
        if base.len() == 1 {
            base = vec![base[0]; num_groups];
        }
        if base.len() != num_groups {
            return Err(format!(
                "base_score has {} values for {num_groups} outputs",
                base.len()
            ));
        }
        let base_margin = base.iter().map(|b| base_margin(&objective, *b)).collect();

        let mut forest = Forest::default();
        let mut tree_group = Vec::with_capacity(model.trees.len());
        for (t, (tree, group)) in model.trees.iter().zip(&model.tree_info).enumerate() {
            tree_group.push(index("tree_info group", *group, num_groups)?);
            Self::add_tree(&mut forest, tree, num_features)
                .map_err(|e| format!("tree {t}: {e}"))?;
        }
        let feature_names = (!learner.feature_names.is_empty()).then_some(learner.feature_names);
        if let Some(names) = feature_names.as_ref().filter(|n| n.len() != num_features) {
            return Err(format!(
                "{} feature names for {num_features} features",
                names.len()
            ));
        }
        let quick = Quick::new(&forest, num_features, Rule::Less, nan_goes_left);
        let round_robin = weights.is_none()
            && (tree_group.iter().enumerate()).all(|(t, g)| *g as usize == t % num_groups);
        Ok(XgbModel {
            forest,
            quick,
            explainer: OnceLock::new(),
            tree_group,
            round_robin,
            tree_weight: weights,
            base_margin,
            link,
            task,
            objective,
            num_features,
            num_groups,
            feature_names,
            format,
        })
    }

    fn add_tree(
        forest: &mut Forest<f32>,
        tree: &TreeSchema,
        num_features: usize,
    ) -> Result<(), String> {
        if let Some(size) = &tree.tree_param.size_leaf_vector {
            let size: usize = parse_number("size_leaf_vector", size)?;
            if size > 1 {
                return Err(
                    "vector leaves (multi_strategy=multi_output_tree) are not supported".into(),
                );
            }
        }
        let n: usize = parse_number("num_nodes", &tree.tree_param.num_nodes)?;
        let lens = [
            tree.left_children.len(),
            tree.right_children.len(),
            tree.split_indices.len(),
            tree.split_conditions.len(),
            tree.default_left.len(),
        ];
        if n == 0 || lens.iter().any(|l| *l != n) {
            return Err(format!("node arrays have lengths {lens:?}, expected {n}"));
        }
        if !tree.split_type.is_empty() && tree.split_type.len() != n {
            return Err("split_type length does not match the nodes".into());
        }
        // Categories of each categorical node, as listed (these categories go right).
        let mut node_categories: Vec<Option<Vec<u32>>> = vec![None; n];
        if tree.categories_nodes.len() != tree.categories_segments.len()
            || tree.categories_nodes.len() != tree.categories_sizes.len()
        {
            return Err("categorical split arrays have different lengths".into());
        }
        for ((node, seg), size) in tree
            .categories_nodes
            .iter()
            .zip(&tree.categories_segments)
            .zip(&tree.categories_sizes)
        {
            let node = index("categorical node", *node, n)? as usize;
            let start = usize::try_from(*seg).map_err(|_| "negative category segment")?;
            let size = usize::try_from(*size).map_err(|_| "negative category size")?;
            let cats = start
                .checked_add(size)
                .and_then(|end| tree.categories.get(start..end))
                .ok_or("category segment out of range")?;
            let cats = cats
                .iter()
                .map(|c| u32::try_from(*c).map_err(|_| format!("invalid category {c}")))
                .collect::<Result<Vec<_>, _>>()?;
            node_categories[node] = Some(cats);
        }

        let nodes = (0..n)
            .map(|i| {
                let left = tree.left_children[i];
                if left == -1 {
                    return Ok(NodeBuilder::Leaf(tree.split_conditions[i]));
                }
                let left = index("left child", left, n)?;
                let right = index("right child", tree.right_children[i], n)?;
                let feature = index("split feature", tree.split_indices[i], num_features)?;
                let default_left = tree.default_left[i].is_set();
                let categorical = tree.split_type.get(i).copied().unwrap_or(0) == 1;
                if categorical {
                    let cats = node_categories[i]
                        .take()
                        .ok_or_else(|| format!("categorical node {i} has no categories"))?;
                    Ok(NodeBuilder::Categorical {
                        feature,
                        left,
                        right,
                        default_left,
                        categories: cats,
                        listed_go_left: false,
                    })
                } else {
                    Ok(NodeBuilder::Split {
                        feature,
                        threshold: tree.split_conditions[i],
                        left,
                        right,
                        default_left,
                        missing_flag: 0,
                    })
                }
            })
            .collect::<Result<Vec<_>, String>>()?;
        let covers = if tree.sum_hessian.len() == n {
            tree.sum_hessian.as_slice()
        } else {
            &[]
        };
        forest.add_tree(&nodes, covers).map_err(|e| e.to_string())
    }

    /// Raw margins, `[rows, num_groups]` row-major. `x` is `[rows, num_features]` row-major.
    pub fn predict_margin(&self, x: &[f32], rows: usize) -> Vec<f32> {
        let g = self.num_groups;
        let mut out = Vec::with_capacity(rows * g);
        for _ in 0..rows {
            out.extend_from_slice(&self.base_margin);
        }
        let groups = &self.tree_group;
        if let Some(quick) = self.quick.as_ref().filter(|_| self.round_robin) {
            quick.for_each_row(x, rows, self.num_features, |row, leaves| {
                add_round_robin(leaves, &mut out[row * g..(row + 1) * g]);
            });
            return out;
        }
        match &self.tree_weight {
            None => self.leaves(x, rows, |row, tree, leaf| {
                out[row * g + groups[tree] as usize] += leaf;
            }),
            Some(weights) => self.leaves(x, rows, |row, tree, leaf| {
                out[row * g + groups[tree] as usize] += leaf * weights[tree];
            }),
        }
        out
    }

    /// Calls `sink(row, tree, leaf value)` for every row and tree, trees in order for each row.
    #[inline]
    fn leaves(&self, x: &[f32], rows: usize, sink: impl FnMut(usize, usize, f32)) {
        match &self.quick {
            Some(quick) => quick.accumulate(x, rows, self.num_features, sink),
            None => self
                .forest
                .accumulate(x, rows, self.num_features, go_left, sink),
        }
    }

    /// Exact TreeSHAP contributions in margin space, laid out as XGBoost's `pred_contribs`:
    /// `[rows, features + 1]`, or `[rows, outputs, features + 1]` with several outputs; the last
    /// column is the bias (the base margin and the trees' expected values). Computed in f64 and
    /// given in f32, XGBoost's precision. Refused (with why) for models that cannot be explained.
    pub fn explain(&self, x: &[f32], rows: usize) -> Result<(Vec<f32>, Vec<usize>), String> {
        self.explain_with(x, rows, ShapMethod::Fastest)
    }

    /// Whether what explaining needs is computed (on the first explanation: the trees' expected
    /// values and leaf tables, from a tenth of a millisecond to tens of milliseconds).
    pub fn explanation_ready(&self) -> bool {
        self.explainer.get().is_some()
    }

    /// [`XgbModel::explain`] by the given method (the same values).
    pub fn explain_with(
        &self,
        x: &[f32],
        rows: usize,
        method: ShapMethod,
    ) -> Result<(Vec<f32>, Vec<usize>), String> {
        let explainer = self
            .explainer
            .get_or_init(|| Explainer::new(&self.forest))
            .as_ref()
            .map_err(Clone::clone)?;
        let (f, g) = (self.num_features, self.num_groups);
        let width = f + 1;
        let mut out = Vec::with_capacity(rows * g * width);
        let mut phi = vec![0.0f64; g * width];
        let mut scratch = crate::shap::Scratch::default();
        for r in 0..rows {
            let row = &x[r * f..(r + 1) * f];
            phi.fill(0.0);
            for (group, margin) in self.base_margin.iter().enumerate() {
                phi[group * width + f] = f64::from(*margin);
            }
            for (t, group) in self.tree_group.iter().enumerate() {
                let scale = self.tree_weight.as_ref().map_or(1.0, |w| f64::from(w[t]));
                let block = &mut phi[*group as usize * width..][..width];
                block[f] += explainer.expected[t] * scale;
                explainer.add(
                    &self.forest,
                    t,
                    row,
                    &go_left,
                    scale,
                    method,
                    &mut scratch,
                    block,
                );
            }
            out.extend(phi.iter().map(|v| *v as f32));
        }
        let shape = if g == 1 {
            vec![rows, width]
        } else {
            vec![rows, g, width]
        };
        Ok((out, shape))
    }

    /// Applies the link function to margins in place (per row of `num_groups`).
    pub fn transform(&self, margins: &mut [f32]) {
        let g = self.num_groups;
        match self.link {
            Link::Identity => {}
            Link::Sigmoid => margins
                .iter_mut()
                .for_each(|m| *m = 1.0 / (1.0 + (-*m).exp())),
            Link::Exp => margins.iter_mut().for_each(|m| *m = m.exp()),
            Link::Hinge => margins
                .iter_mut()
                .for_each(|m| *m = if *m > 0.0 { 1.0 } else { 0.0 }),
            Link::Softmax | Link::ArgMax => margins.chunks_mut(g).for_each(softmax),
        }
    }
}

/// XGBoost's split decision: NaN takes the default direction; a categorical split sends the
/// listed categories right and everything else (including invalid categories) left; a numeric
/// split goes left iff `x < threshold`, both in f32.
#[inline(always)]
fn go_left(forest: &Forest<f32>, node: &Node<f32>, x: f32) -> bool {
    if x.is_nan() {
        node.flags & DEFAULT_LEFT != 0
    } else if node.flags & CATEGORICAL != 0 {
        !(0.0..16_777_216.0).contains(&x) || !forest.in_category_set(node, x as u32)
    } else {
        x < node.value
    }
}

/// Where a missing value goes at a numerical split, for [`Quick`] (`None`: categorical).
fn nan_goes_left(node: &Node<f32>) -> Option<bool> {
    (node.flags & CATEGORICAL == 0).then_some(node.flags & DEFAULT_LEFT != 0)
}

/// In-place softmax in f32 (max-shifted, as XGBoost does).
pub fn softmax(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quick::testing::{assert_same_leaves, leaf_table, rows_at_thresholds, variants};

    #[test]
    fn the_scorer_reaches_the_walks_leaves_at_and_around_every_threshold() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/public");
        for file in [
            "xgb_reg_diabetes.json",
            "xgb_bin_breast_cancer.json",
            "xgb_multi_iris.json",
            "clearml_xgb.json",
        ] {
            let m = XgbModel::load(&std::fs::read(dir.join(file)).unwrap()).unwrap();
            // 30 small trees on 26 features are walked (too few splits per feature).
            let walked = file == "xgb_bin_breast_cancer.json";
            assert_eq!(
                m.quick.is_none(),
                walked,
                "{file}: whether the scorer is used"
            );
            let (width, trees) = (m.num_features, m.forest.num_trees());
            let x = rows_at_thresholds(&m.forest, width, |t| {
                let specials = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0];
                [t, t.next_up(), t.next_down()]
                    .into_iter()
                    .chain(specials)
                    .collect()
            });
            let rows = x.len() / width;
            let general = leaf_table(rows, trees, |sink| {
                m.forest.accumulate(&x, rows, width, go_left, sink)
            });
            let built = Quick::build(&m.forest, width, Rule::Less, nan_goes_left).unwrap();
            for (how, quick) in variants(built) {
                let leaves =
                    leaf_table(rows, trees, |sink| quick.accumulate(&x, rows, width, sink));
                let name = format!("{file}: scorer {how}");
                assert_same_leaves(&general, &leaves, &x, width, &name);
                // Its sums too, to the bit.
                let scored = XgbModel {
                    quick: Some(quick),
                    ..m.clone()
                }
                .predict_margin(&x, rows);
                let walked = XgbModel {
                    quick: None,
                    ..m.clone()
                }
                .predict_margin(&x, rows);
                let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
                assert!(bits(scored) == bits(walked), "{name}: sums differ");
            }
        }
    }

    #[test]
    fn base_scores_parse_in_all_spellings() {
        assert_eq!(parse_base_score("0.5").unwrap(), vec![0.5]);
        assert_eq!(parse_base_score("[6.274165E-1]").unwrap(), vec![0.6274165]);
        assert_eq!(parse_base_score("[0E0,0E0,0E0]").unwrap(), vec![0.0; 3]);
        assert!(parse_base_score("[x]").is_err());
    }

    fn tiny_model(objective: &str, extra_tree: &str) -> String {
        format!(
            r#"{{"learner": {{"feature_names": [], "feature_types": [],
            "gradient_booster": {{"name": "gbtree", "model": {{"tree_info": [0], "trees": [{{
                "tree_param": {{"num_nodes": "3", "size_leaf_vector": "1"}},
                "left_children": [1, -1, -1], "right_children": [2, -1, -1],
                "split_indices": [1, 0, 0], "split_conditions": [0.5, -1.0, 2.0],
                "default_left": [1, 0, 0] {extra_tree} }}]}}}},
            "learner_model_param": {{"base_score": "5E-1", "num_class": "0", "num_feature": "2", "num_target": "1"}},
            "objective": {{"name": "{objective}"}}}}, "version": [3, 2, 0]}}"#
        )
    }

    #[test]
    fn numeric_split_is_strictly_less_and_nan_follows_default() {
        let m = XgbModel::load(tiny_model("reg:squarederror", "").as_bytes()).unwrap();
        let x = [0.0, 0.4999, 0.0, 0.5, 0.0, f32::NAN];
        assert_eq!(m.predict_margin(&x, 3), vec![-0.5, 2.5, -0.5]);
    }

    #[test]
    fn logistic_base_score_is_a_probability() {
        let m = XgbModel::load(tiny_model("binary:logistic", "").as_bytes()).unwrap();
        // base 0.5 → margin 0; leaf -1 → sigmoid(-1).
        let mut margins = m.predict_margin(&[0.0, 0.0], 1);
        assert_eq!(margins, vec![-1.0]);
        m.transform(&mut margins);
        assert!((margins[0] - 0.268_941_43).abs() < 1e-7);
    }

    #[test]
    fn categorical_split_sends_listed_categories_right() {
        let extra = r#", "split_type": [1, 0, 0], "categories": [2, 5],
            "categories_nodes": [0], "categories_segments": [0], "categories_sizes": [2]"#;
        let m = XgbModel::load(tiny_model("reg:squarederror", extra).as_bytes()).unwrap();
        let rows = [
            0.0,
            2.0,
            0.0,
            5.0,
            0.0,
            3.0,
            0.0,
            -1.0,
            0.0,
            f32::NAN,
            0.0,
            1000.0,
        ];
        // 2 and 5 → right (2.0 + 0.5); others → left; NaN → default left.
        assert_eq!(
            m.predict_margin(&rows, 6),
            vec![2.5, 2.5, -0.5, -0.5, -0.5, -0.5]
        );
    }

    #[test]
    fn unsupported_features_are_named() {
        let linear = tiny_model("reg:squarederror", "").replace("\"gbtree\"", "\"gblinear\"");
        assert!(
            XgbModel::load(linear.as_bytes())
                .unwrap_err()
                .contains("gblinear")
        );
        let survival = tiny_model("survival:cox", "");
        assert!(
            XgbModel::load(survival.as_bytes())
                .unwrap_err()
                .contains("survival:cox")
        );
        let broken = tiny_model("reg:squarederror", "").replace("[1, -1, -1]", "[7, -1, -1]");
        assert!(
            XgbModel::load(broken.as_bytes())
                .unwrap_err()
                .contains("out of range")
        );
        assert!(
            XgbModel::load(b"{\"a\": 1}")
                .unwrap_err()
                .contains("not an XGBoost model")
        );
        assert!(XgbModel::load(b"tree\n").is_err());
    }

    #[test]
    fn dart_weights_scale_trees() {
        let dart = tiny_model("reg:squarederror", "")
            .replace(
                r#""name": "gbtree", "model""#,
                r#""name": "dart", "weight_drop": [0.5], "gbtree": {"model""#,
            )
            .replace(
                "}]}},\n            \"learner_model_param\"",
                "}]}}},\n            \"learner_model_param\"",
            );
        let m = XgbModel::load(dart.as_bytes()).unwrap();
        assert_eq!(m.predict_margin(&[0.0, 0.0], 1), vec![0.0]);
    }
}
