//! LightGBM models in the text format (`Booster.save_model("m.txt")`).
//!
//! Exactness rules (measured against LightGBM itself): inputs widen to f64, thresholds stay f64,
//! a row goes left iff `x <= threshold`; `decision_type` bit 0 marks a categorical split (a bitset
//! in `cat_threshold`, listed categories go left, NaN and negatives go right), bit 1 is
//! default-left, bits 2–3 the missing type (0 none, 1 zero, 2 NaN; NaN counts as 0.0 unless the
//! type is NaN). Tree `i` adds to output `i % num_tree_per_iteration`; sums are f64.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::compact::Compact;
use crate::forest::{
    CATEGORICAL, DEFAULT_LEFT, Forest, MISSING_NAN, MISSING_ZERO, Node, NodeBuilder,
};
use crate::quick::{Quick, Rule, add_round_robin};
use crate::shap::{Explainer, Method as ShapMethod};
use crate::task::TreeTask;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LgbLink {
    Identity,
    Sigmoid(f64),
    Softmax,
    /// One-vs-all sigmoids (multiclassova), not normalised.
    SigmoidEach(f64),
    Exp,
    /// `regression` with `sqrt`: sign(x)·x².
    Square,
    /// `cross_entropy_lambda`: log(1 + exp(x)).
    Log1pExp,
}

#[derive(Debug, Clone)]
pub struct LgbModel {
    pub(crate) forest: Forest<f64>,
    /// The forest for predictions when all its splits are numerical without zero-as-missing.
    compact: Option<Compact>,
    /// The same, scored without walks, when its trees also have at most 64 leaves.
    quick: Option<Quick<f64>>,
    /// Computed on the first explanation.
    explainer: OnceLock<Result<Explainer, String>>,
    /// The output group of each tree (`tree % num_groups`, computed once: a division per tree
    /// and row costs more than the tree's walk).
    groups: Vec<u32>,
    pub num_features: usize,
    /// Outputs per row (`num_tree_per_iteration`).
    pub num_groups: usize,
    pub average_output: bool,
    pub link: LgbLink,
    pub task: TreeTask,
    pub objective: String,
    /// Names as stored; `None` when they are LightGBM's defaults (`Column_0`, ...).
    pub feature_names: Option<Vec<String>>,
}

fn parse_list<T: std::str::FromStr>(key: &str, text: &str) -> Result<Vec<T>, String> {
    text.split_whitespace()
        .map(|t| {
            t.parse()
                .map_err(|_| format!("{key}: '{t}' is not a number"))
        })
        .collect()
}

fn objective_semantics(objective: &str) -> Result<(LgbLink, TreeTask), String> {
    let mut tokens = objective.split_whitespace();
    let name = tokens.next().unwrap_or("");
    let params: HashMap<&str, &str> = tokens.filter_map(|t| t.split_once(':')).collect();
    let sigmoid = || -> Result<f64, String> {
        params.get("sigmoid").map_or(Ok(1.0), |s| {
            s.parse()
                .map_err(|_| format!("bad sigmoid parameter '{s}'"))
        })
    };
    let has_sqrt = objective.split_whitespace().any(|t| t == "sqrt");
    Ok(match name {
        "regression"
        | "regression_l2"
        | "l2"
        | "mean_squared_error"
        | "mse"
        | "regression_l1"
        | "l1"
        | "mean_absolute_error"
        | "mae"
        | "huber"
        | "fair"
        | "quantile"
        | "mape" => (
            if has_sqrt {
                LgbLink::Square
            } else {
                LgbLink::Identity
            },
            TreeTask::Regression,
        ),
        "binary" => (LgbLink::Sigmoid(sigmoid()?), TreeTask::Binary),
        "multiclass" | "softmax" => (LgbLink::Softmax, TreeTask::Multiclass),
        "multiclassova" | "multiclass_ova" | "ova" | "ovr" => {
            (LgbLink::SigmoidEach(sigmoid()?), TreeTask::Multiclass)
        }
        "cross_entropy" | "xentropy" => (LgbLink::Sigmoid(1.0), TreeTask::Regression),
        "cross_entropy_lambda" | "xentlambda" => (LgbLink::Log1pExp, TreeTask::Regression),
        "poisson" | "gamma" | "tweedie" => (LgbLink::Exp, TreeTask::Regression),
        "lambdarank" | "rank_xendcg" | "xendcg" | "xe_ndcg" | "xe_ndcg_mart" | "xendcg_mart"
        | "custom" | "" => (LgbLink::Identity, TreeTask::Raw),
        other => {
            return Err(format!(
                "objective '{other}' is not supported by serval's LightGBM engine"
            ));
        }
    })
}

/// The `key=value` lines of one section.
fn section(lines: &[&str]) -> HashMap<String, String> {
    lines
        .iter()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

impl LgbModel {
    /// Loads a model from the text format.
    pub fn load(bytes: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| "not a LightGBM text model (not UTF-8)".to_string())?;
        let mut lines = text.lines();
        if lines.next().map(str::trim) != Some("tree") {
            return Err("not a LightGBM text model (it must start with a 'tree' line)".to_string());
        }
        let all: Vec<&str> = lines.collect();
        let header_end = all
            .iter()
            .position(|l| l.starts_with("Tree="))
            .unwrap_or(all.len());
        let header = section(&all[..header_end]);
        let flags: Vec<&str> = all[..header_end].iter().map(|l| l.trim()).collect();
        let get = |key: &str| {
            header
                .get(key)
                .ok_or_else(|| format!("the model header has no '{key}'"))
        };

        let num_features = get("max_feature_idx")?
            .parse::<usize>()
            .map_err(|_| "bad max_feature_idx".to_string())?
            + 1;
        let num_groups: usize = get("num_tree_per_iteration")?
            .parse()
            .map_err(|_| "bad num_tree_per_iteration".to_string())?;
        if num_groups == 0 {
            return Err("num_tree_per_iteration must be at least 1".to_string());
        }
        let objective = header.get("objective").cloned().unwrap_or_default();
        let (link, task) = objective_semantics(&objective)?;
        let average_output = flags.contains(&"average_output");
        let names: Vec<String> = header
            .get("feature_names")
            .map(|n| n.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        if !names.is_empty() && names.len() != num_features {
            return Err(format!(
                "{} feature names for {num_features} features",
                names.len()
            ));
        }
        let defaults = names
            .iter()
            .enumerate()
            .all(|(i, n)| *n == format!("Column_{i}"));
        let feature_names = (!names.is_empty() && !defaults).then_some(names);

        let mut forest = Forest::default();
        let mut rest = &all[header_end..];
        while let Some(first) = rest.first() {
            if first.trim() == "end of trees" {
                break;
            }
            if !first.starts_with("Tree=") {
                rest = &rest[1..];
                continue;
            }
            let end = rest[1..]
                .iter()
                .position(|l| l.starts_with("Tree=") || l.trim() == "end of trees")
                .map_or(rest.len(), |p| p + 1);
            let label = first.trim().to_string();
            let tree = section(&rest[1..end]);
            Self::add_tree(&mut forest, &tree, num_features)
                .map_err(|e| format!("{label}: {e}"))?;
            rest = &rest[end..];
        }
        if forest.num_trees() == 0 {
            return Err("the model has no trees".to_string());
        }
        if forest.num_trees() % num_groups != 0 {
            return Err(format!(
                "{} trees are not a whole number of iterations of {num_groups}",
                forest.num_trees()
            ));
        }
        let groups = (0..forest.num_trees())
            .map(|t| u32::try_from(t % num_groups.max(1)).unwrap_or(0))
            .collect();
        let compact = Compact::new(&forest, nan_goes_left);
        let quick = Quick::new(&forest, num_features, Rule::LessOrEqual, nan_goes_left);
        Ok(LgbModel {
            forest,
            compact,
            quick,
            explainer: OnceLock::new(),
            groups,
            num_features,
            num_groups,
            average_output,
            link,
            task,
            objective,
            feature_names,
        })
    }

    fn add_tree(
        forest: &mut Forest<f64>,
        tree: &HashMap<String, String>,
        num_features: usize,
    ) -> Result<(), String> {
        let get = |key: &str| {
            tree.get(key)
                .map(String::as_str)
                .ok_or_else(|| format!("missing '{key}'"))
        };
        if tree.get("is_linear").is_some_and(|v| v != "0") {
            return Err(
                "linear trees (linear_tree=true) are not supported by serval's LightGBM engine"
                    .to_string(),
            );
        }
        let num_leaves: usize = get("num_leaves")?
            .parse()
            .map_err(|_| "bad num_leaves".to_string())?;
        let leaf_values: Vec<f64> = parse_list("leaf_value", get("leaf_value")?)?;
        if num_leaves == 0 || leaf_values.len() != num_leaves {
            return Err(format!(
                "{} leaf values for {num_leaves} leaves",
                leaf_values.len()
            ));
        }
        if num_leaves == 1 {
            let covers = tree
                .get("leaf_count")
                .map(|c| parse_list::<f64>("leaf_count", c))
                .transpose()?
                .filter(|c| c.len() == 1)
                // A lone leaf's cover does not matter: its value is the tree's expected value.
                .unwrap_or_else(|| vec![1.0]);
            return forest
                .add_tree(&[NodeBuilder::Leaf(leaf_values[0])], &covers)
                .map_err(|e| e.to_string());
        }
        let internal = num_leaves - 1;
        let split_feature: Vec<i64> = parse_list("split_feature", get("split_feature")?)?;
        let threshold: Vec<f64> = parse_list("threshold", get("threshold")?)?;
        let decision_type: Vec<u8> = parse_list("decision_type", get("decision_type")?)?;
        let left: Vec<i64> = parse_list("left_child", get("left_child")?)?;
        let right: Vec<i64> = parse_list("right_child", get("right_child")?)?;
        let lens = [
            split_feature.len(),
            threshold.len(),
            decision_type.len(),
            left.len(),
            right.len(),
        ];
        if lens.iter().any(|l| *l != internal) {
            return Err(format!(
                "split arrays have lengths {lens:?}, expected {internal}"
            ));
        }
        let (cat_boundaries, cat_threshold): (Vec<usize>, Vec<u32>) =
            match tree.get("cat_boundaries") {
                Some(b) => (
                    parse_list("cat_boundaries", b)?,
                    parse_list("cat_threshold", get("cat_threshold")?)?,
                ),
                None => (Vec::new(), Vec::new()),
            };
        let child = |c: i64| -> Result<u32, String> {
            let index = if c >= 0 { c } else { internal as i64 + !c };
            u32::try_from(index)
                .ok()
                .filter(|i| (*i as usize) < internal + num_leaves)
                .ok_or_else(|| format!("child {c} out of range"))
        };
        let mut nodes = Vec::with_capacity(internal + num_leaves);
        for i in 0..internal {
            let feature = u32::try_from(split_feature[i])
                .ok()
                .filter(|f| (*f as usize) < num_features)
                .ok_or_else(|| format!("split feature {} out of range", split_feature[i]))?;
            let d = decision_type[i];
            let default_left = d & 2 != 0;
            let (l, r) = (child(left[i])?, child(right[i])?);
            if d & 1 != 0 {
                let cat_index = threshold[i] as usize;
                let words = cat_boundaries
                    .get(cat_index)
                    .zip(cat_boundaries.get(cat_index + 1))
                    .and_then(|(s, e)| cat_threshold.get(*s..*e))
                    .ok_or_else(|| format!("categorical split {i} points outside cat_threshold"))?;
                let categories = words
                    .iter()
                    .enumerate()
                    .flat_map(|(w, bits)| {
                        (0..32)
                            .filter(move |b| bits & (1 << b) != 0)
                            .map(move |b| (w * 32 + b) as u32)
                    })
                    .collect();
                nodes.push(NodeBuilder::Categorical {
                    feature,
                    left: l,
                    right: r,
                    default_left,
                    categories,
                    listed_go_left: true,
                });
            } else {
                let missing_flag = match (d >> 2) & 3 {
                    0 => 0,
                    1 => MISSING_ZERO,
                    2 => MISSING_NAN,
                    other => return Err(format!("unknown missing type {other}")),
                };
                nodes.push(NodeBuilder::Split {
                    feature,
                    threshold: threshold[i],
                    left: l,
                    right: r,
                    default_left,
                    missing_flag,
                });
            }
        }
        nodes.extend(leaf_values.into_iter().map(NodeBuilder::Leaf));
        // Data counts (internal nodes, then leaves: the nodes' order here), for TreeSHAP.
        let covers = match (tree.get("internal_count"), tree.get("leaf_count")) {
            (Some(internal_count), Some(leaf_count)) => {
                let mut covers: Vec<f64> = parse_list("internal_count", internal_count)?;
                covers.extend(parse_list::<f64>("leaf_count", leaf_count)?);
                if covers.len() != nodes.len() {
                    return Err(format!(
                        "internal_count and leaf_count have {} values for {} nodes",
                        covers.len(),
                        nodes.len()
                    ));
                }
                covers
            }
            _ => Vec::new(),
        };
        forest.add_tree(&nodes, &covers).map_err(|e| e.to_string())
    }

    /// Raw scores `[rows, num_groups]` for `x` = `[rows, num_features]` (f64, row-major).
    pub fn predict_raw(&self, x: &[f64], rows: usize) -> Vec<f64> {
        let g = self.num_groups;
        let mut out = vec![0.0f64; rows * g];
        let groups = &self.groups;
        let sink =
            |row: usize, tree: usize, leaf: f64| out[row * g + groups[tree] as usize] += leaf;
        if let Some(quick) = &self.quick {
            quick.for_each_row(x, rows, self.num_features, |row, leaves| {
                add_round_robin(leaves, &mut out[row * g..(row + 1) * g]);
            });
        } else if let Some(compact) = &self.compact {
            compact.accumulate(x, rows, self.num_features, sink);
        } else {
            self.forest
                .accumulate(x, rows, self.num_features, go_left, sink);
        }
        if self.average_output {
            let iterations = (self.forest.num_trees() / g) as f64;
            out.iter_mut().for_each(|v| *v /= iterations);
        }
        out
    }

    /// Exact TreeSHAP contributions in raw-score space, laid out as LightGBM's `pred_contrib`:
    /// `[rows, features + 1]`, or `[rows, outputs × (features + 1)]` with several outputs (each
    /// output's block ends with its bias, the trees' expected values). Refused (with why) for
    /// models that cannot be explained.
    pub fn explain(&self, x: &[f64], rows: usize) -> Result<(Vec<f64>, Vec<usize>), String> {
        self.explain_with(x, rows, ShapMethod::Fastest)
    }

    /// Whether what explaining needs is computed (on the first explanation: the trees' expected
    /// values and leaf tables, from a tenth of a millisecond to tens of milliseconds).
    pub fn explanation_ready(&self) -> bool {
        self.explainer.get().is_some()
    }

    /// [`LgbModel::explain`] by the given method (the same values).
    pub fn explain_with(
        &self,
        x: &[f64],
        rows: usize,
        method: ShapMethod,
    ) -> Result<(Vec<f64>, Vec<usize>), String> {
        if self.average_output {
            return Err("random forest models (average_output) are not explained".to_string());
        }
        let explainer = self
            .explainer
            .get_or_init(|| Explainer::new(&self.forest))
            .as_ref()
            .map_err(Clone::clone)?;
        let (f, g) = (self.num_features, self.num_groups);
        let width = f + 1;
        let mut out = vec![0.0f64; rows * g * width];
        let mut scratch = crate::shap::Scratch::default();
        for (r, phi) in out.chunks_mut(g * width).enumerate() {
            let row = &x[r * f..(r + 1) * f];
            for (t, group) in self.groups.iter().enumerate() {
                let block = &mut phi[*group as usize * width..][..width];
                block[f] += explainer.expected[t];
                explainer.add(
                    &self.forest,
                    t,
                    row,
                    &go_left,
                    1.0,
                    method,
                    &mut scratch,
                    block,
                );
            }
        }
        let shape = if g == 1 {
            vec![rows, width]
        } else {
            vec![rows, g * width]
        };
        Ok((out, shape))
    }

    /// Applies the objective's output conversion in place.
    pub fn transform(&self, raw: &mut [f64]) {
        match self.link {
            LgbLink::Identity => {}
            LgbLink::Sigmoid(s) | LgbLink::SigmoidEach(s) => {
                raw.iter_mut()
                    .for_each(|v| *v = 1.0 / (1.0 + (-s * *v).exp()));
            }
            LgbLink::Exp => raw.iter_mut().for_each(|v| *v = v.exp()),
            LgbLink::Square => raw.iter_mut().for_each(|v| *v = v.signum() * *v * *v),
            LgbLink::Log1pExp => raw.iter_mut().for_each(|v| *v = v.exp().ln_1p()),
            LgbLink::Softmax => raw.chunks_mut(self.num_groups).for_each(|row| {
                let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mut sum = 0.0;
                for v in row.iter_mut() {
                    *v = (*v - max).exp();
                    sum += *v;
                }
                row.iter_mut().for_each(|v| *v /= sum);
            }),
        }
    }
}

/// Where a missing value goes at a split that one comparison decides (see [`Compact`]): NaN counts
/// as 0.0 unless the missing type is NaN, when it takes the default direction.
fn nan_goes_left(node: &Node<f64>) -> Option<bool> {
    if node.flags & (CATEGORICAL | MISSING_ZERO) != 0 {
        None
    } else if node.flags & MISSING_NAN != 0 {
        Some(node.flags & DEFAULT_LEFT != 0)
    } else {
        Some(0.0 <= node.value)
    }
}

/// LightGBM's split decision (see the module docs).
#[inline(always)]
fn go_left(forest: &Forest<f64>, node: &Node<f64>, x: f64) -> bool {
    if node.flags & CATEGORICAL != 0 {
        if x.is_nan() || x <= -1.0 || x >= 2_147_483_648.0 {
            return false;
        }
        return forest.in_category_set(node, x as u32);
    }
    let missing = node.flags & (MISSING_ZERO | MISSING_NAN);
    let mut v = x;
    if v.is_nan() && missing != MISSING_NAN {
        v = 0.0;
    }
    if (missing == MISSING_ZERO && (-1e-35..=1e-35).contains(&v))
        || (missing == MISSING_NAN && v.is_nan())
    {
        return node.flags & DEFAULT_LEFT != 0;
    }
    v <= node.value
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quick::testing::{assert_same_leaves, leaf_table, rows_at_thresholds, variants};

    fn model(decision_type: &str, extra: &str) -> String {
        format!(
            "tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nlabel_index=0\nmax_feature_idx=1\n\
             objective=regression\nfeature_names=a b\n\nTree=0\nnum_leaves=2\nnum_cat={}\nsplit_feature=1\n\
             threshold=0.5\ndecision_type={decision_type}\nleft_child=-1\nright_child=-2\nleaf_value=1 2\n{extra}\
             is_linear=0\nshrinkage=1\n\n\nend of trees\n",
            if extra.is_empty() { 0 } else { 1 }
        )
    }

    /// Asserts that the compact walk and the scorer (where they apply; the scorer also where
    /// the model would not use it) reach the general walk's leaves for every row of `x`.
    fn same_leaves(m: &LgbModel, x: &[f64], what: &str) {
        let (width, trees) = (m.num_features, m.forest.num_trees());
        let rows = x.len() / width;
        let general = leaf_table(rows, trees, |sink| {
            m.forest.accumulate(x, rows, width, go_left, sink)
        });
        if let Some(compact) = &m.compact {
            let leaves = leaf_table(rows, trees, |sink| compact.accumulate(x, rows, width, sink));
            assert_same_leaves(
                &general,
                &leaves,
                x,
                width,
                &format!("{what}: compact walk"),
            );
        }
        let built = Quick::build(&m.forest, width, Rule::LessOrEqual, nan_goes_left);
        for (how, quick) in built.into_iter().flat_map(variants) {
            let leaves = leaf_table(rows, trees, |sink| quick.accumulate(x, rows, width, sink));
            let name = format!("{what}: scorer {how}");
            assert_same_leaves(&general, &leaves, x, width, &name);
            // Its sums too, to the bit.
            let scored = LgbModel {
                quick: Some(quick),
                ..m.clone()
            }
            .predict_raw(x, rows);
            let walked = LgbModel {
                quick: None,
                ..m.clone()
            }
            .predict_raw(x, rows);
            let bits = |v: Vec<f64>| v.into_iter().map(f64::to_bits).collect::<Vec<_>>();
            assert!(bits(scored) == bits(walked), "{name}: sums differ");
        }
    }

    /// The prediction for `[0, x1]`, checked to be the same through every walk.
    fn predict(m: &LgbModel, x1: f64) -> f64 {
        let x = [0.0, x1];
        same_leaves(m, &x, &format!("x1 = {x1}"));
        m.predict_raw(&x, 1)[0]
    }

    #[test]
    fn the_compact_walk_takes_numerical_splits_and_settles_missing_values() {
        // Missing type none, threshold below zero: NaN counts as 0.0 → right.
        let m = LgbModel::load(
            model("2", "")
                .replace("threshold=0.5", "threshold=-0.5")
                .as_bytes(),
        )
        .unwrap();
        assert!(m.compact.is_some());
        assert_eq!(predict(&m, f64::NAN), 2.0);
        assert_eq!(predict(&m, -0.5), 1.0);
        assert_eq!(predict(&m, 0.0), 2.0);
        assert_eq!(predict(&m, f64::NEG_INFINITY), 1.0);
        // Missing type NaN, default left.
        let m = LgbModel::load(model("10", "").as_bytes()).unwrap();
        assert!(m.compact.is_some());
        assert_eq!(predict(&m, f64::NAN), 1.0);
        assert_eq!(predict(&m, f64::INFINITY), 2.0);
        // Zero-as-missing needs the general walk (and so does the scorer).
        let m = LgbModel::load(model("4", "").as_bytes()).unwrap();
        assert!(m.compact.is_none());
        assert!(Quick::build(&m.forest, 2, Rule::LessOrEqual, nan_goes_left).is_none());
    }

    #[test]
    fn every_walk_reaches_the_same_leaves_at_and_around_every_threshold() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/public");
        for file in [
            "lgbm_reg_diabetes.txt",
            "lgbm_bin_breast_cancer.txt",
            "lgbm_multi_iris.txt",
            "clearml_lgbm.txt",
        ] {
            let m = LgbModel::load(&std::fs::read(dir.join(file)).unwrap()).unwrap();
            // 30 trees of 8 leaves on 24 features are walked (too few splits per feature).
            let walked = file == "lgbm_bin_breast_cancer.txt";
            assert_eq!(
                m.quick.is_none(),
                walked,
                "{file}: whether the scorer is used"
            );
            let x = rows_at_thresholds(&m.forest, m.num_features, |t| {
                let specials = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.0, -0.0];
                [t, t.next_up(), t.next_down()]
                    .into_iter()
                    .chain(specials)
                    .collect()
            });
            same_leaves(&m, &x, file);
        }
    }

    #[test]
    fn numeric_split_is_less_or_equal() {
        let m = LgbModel::load(model("0", "").as_bytes()).unwrap();
        assert_eq!(predict(&m, 0.5), 1.0);
        assert_eq!(predict(&m, 0.5000001), 2.0);
        // Missing type none: NaN counts as 0.0 → left.
        assert_eq!(predict(&m, f64::NAN), 1.0);
        assert_eq!(
            m.feature_names.as_deref(),
            Some(&["a".to_string(), "b".to_string()][..])
        );
    }

    #[test]
    fn missing_types_follow_default_left() {
        // NaN missing type (8), default right: NaN → right, 0 → left (0 <= 0.5).
        let m = LgbModel::load(model("8", "").as_bytes()).unwrap();
        assert_eq!(predict(&m, f64::NAN), 2.0);
        assert_eq!(predict(&m, 0.0), 1.0);
        // Zero missing type (4), default right: 0 and NaN → right.
        let m = LgbModel::load(model("4", "").as_bytes()).unwrap();
        assert_eq!(predict(&m, 0.0), 2.0);
        assert_eq!(predict(&m, f64::NAN), 2.0);
        assert_eq!(predict(&m, 0.1), 1.0);
        // Zero missing type with default left (4|2).
        let m = LgbModel::load(model("6", "").as_bytes()).unwrap();
        assert_eq!(predict(&m, 0.0), 1.0);
        assert_eq!(predict(&m, 0.7), 2.0);
    }

    #[test]
    fn categorical_bitsets_send_listed_categories_left() {
        // Categories {1, 3, 33} listed; threshold 0 = first bitset.
        let bits = (1u32 << 1) | (1 << 3);
        let extra = format!("cat_boundaries=0 2\ncat_threshold={bits} 2\n");
        let m = LgbModel::load(
            model("1", &extra)
                .replace("threshold=0.5", "threshold=0")
                .as_bytes(),
        )
        .unwrap();
        for (x, want) in [
            (1.0, 1.0),
            (3.0, 1.0),
            (33.0, 1.0),
            (2.0, 2.0),
            (-1.0, 2.0),
            (f64::NAN, 2.0),
            (1e12, 2.0),
            (3.7, 1.0),
        ] {
            assert_eq!(predict(&m, x), want, "category {x}");
        }
    }

    #[test]
    fn bad_models_are_named_errors() {
        assert!(
            LgbModel::load(b"nope")
                .unwrap_err()
                .contains("not a LightGBM")
        );
        let linear = model("0", "").replace("is_linear=0", "is_linear=1");
        assert!(
            LgbModel::load(linear.as_bytes())
                .unwrap_err()
                .contains("linear trees")
        );
        let broken = model("0", "").replace("right_child=-2", "right_child=-9");
        assert!(
            LgbModel::load(broken.as_bytes())
                .unwrap_err()
                .contains("out of range")
        );
        let objective = model("0", "").replace("objective=regression", "objective=weird");
        assert!(
            LgbModel::load(objective.as_bytes())
                .unwrap_err()
                .contains("weird")
        );
        let no_trees = "tree\nmax_feature_idx=1\nnum_tree_per_iteration=1\nobjective=regression\nend of trees\n";
        assert!(
            LgbModel::load(no_trees.as_bytes())
                .unwrap_err()
                .contains("no trees")
        );
    }
}
