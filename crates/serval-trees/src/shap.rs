//! Exact TreeSHAP contributions: the path-dependent algorithm of Lundberg, Erion & Lee ("Consistent
//! Individualized Feature Attribution for Tree Ensembles", algorithm 2), which XGBoost's
//! `pred_contribs` and LightGBM's `pred_contrib` compute, weighting each split by its nodes' covers
//! from the model file.
//!
//! For one row and one tree, every root-to-leaf path is followed while a "unique path" of the
//! features split on so far is kept, each with the fraction of rows (by cover) that would follow
//! the path without the feature (`zero`) and whether the row itself follows it (`one`), and the
//! permutation weights of all subset sizes. Written without recursion: an explicit stack of
//! nodes, and one slice of the path buffer per tree level (a node's children copy their parent's
//! slice, which no other node touches until the parent's subtree is done).

use crate::forest::{Forest, LEAF, Node};
use crate::shap_tables::Tables;

/// Trees deeper than this are not explained (the path buffer grows with the square of the
/// depth).
pub const MAX_DEPTH: u32 = 256;

#[derive(Debug, Clone, Copy, Default)]
struct PathElement {
    /// The feature split on; `usize::MAX` for the root's placeholder.
    feature: usize,
    zero: f64,
    one: f64,
    weight: f64,
}

/// Why a model cannot be explained.
pub fn check<T>(forest: &Forest<T>) -> Result<(), String> {
    if forest.covers.iter().any(|c| c.is_nan()) {
        return Err(
            "the model file has no cover statistics for its trees (XGBoost's \
                    sum_hessian, LightGBM's internal_count and leaf_count)"
                .to_string(),
        );
    }
    if let Some(depth) = forest.depths.iter().copied().find(|d| *d > MAX_DEPTH) {
        return Err(format!(
            "a tree is {depth} levels deep; explanations are computed for trees of at most {MAX_DEPTH}"
        ));
    }
    Ok(())
}

/// The expected value of each tree: its leaves' values weighted by their covers.
pub fn expected_values<T: Copy + Default + Into<f64>>(forest: &Forest<T>) -> Vec<f64> {
    (0..forest.num_trees())
        .map(|t| {
            let nodes = forest.tree_nodes(t);
            let root_cover = forest.covers[nodes.start];
            nodes
                .filter(|i| forest.nodes[*i].flags & LEAF != 0)
                .map(|i| forest.nodes[i].value.into() * forest.covers[i] / root_cover)
                .sum()
        })
        .collect()
}

/// How contributions are computed; both give the same exact values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// From per-leaf tables ([`crate::shap_tables`]) when they fit, else path-dependent.
    Fastest,
    /// The path-dependent algorithm ([`tree_shap`]) for every row: no tables.
    PathDependent,
}

/// What explaining a forest needs beyond the forest, computed once (on a model's first
/// explanation): the trees' expected values and, when they fit, the leaves' tables.
#[derive(Debug, Clone)]
pub struct Explainer {
    pub expected: Vec<f64>,
    tables: Option<Tables>,
}

impl Explainer {
    /// The explainer of `forest`, or why it cannot be explained.
    pub fn new<T: Copy + Default + Into<f64>>(forest: &Forest<T>) -> Result<Explainer, String> {
        check(forest)?;
        Ok(Explainer {
            expected: expected_values(forest),
            tables: Tables::new(forest),
        })
    }

    /// Adds `scale` × tree `t`'s contributions for `row` to `phi` (the bias is the caller's).
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub fn add<T: Copy + Default + Into<f64>, I: Copy>(
        &self,
        forest: &Forest<T>,
        t: usize,
        row: &[I],
        go_left: &impl Fn(&Forest<T>, &Node<T>, I) -> bool,
        scale: f64,
        method: Method,
        scratch: &mut Scratch,
        phi: &mut [f64],
    ) {
        match (&self.tables, method) {
            (Some(tables), Method::Fastest) => {
                tables.add(forest, t, row, go_left, scale, &mut scratch.sides, phi);
            }
            _ => tree_shap(forest, t, row, go_left, scale, scratch, phi),
        }
    }
}

/// Scratch space for [`tree_shap`] and the tables, reused across rows and trees; empty at first
/// ([`tree_shap`] fills `inv` on first use: the tables need none of it).
#[derive(Default)]
pub struct Scratch {
    /// Which way a row goes at each split of a tree (tables).
    sides: Vec<bool>,
    path: Vec<PathElement>,
    stack: Vec<Frame>,
    /// `1 / k` for every path length `k` (0 for 0): the inner loops multiply instead of divide.
    inv: Vec<f64>,
}

#[derive(Clone, Copy)]
struct Frame {
    node: u32,
    level: usize,
    /// Length of the unique path before this node extends it.
    unique_depth: usize,
    zero: f64,
    one: f64,
    feature: usize,
}

/// Adds `scale` × tree `t`'s contributions for `row` to `phi` (one per feature; the bias is the
/// caller's). `go_left` is the library's split decision, as in prediction.
pub fn tree_shap<T: Copy + Default + Into<f64>, I: Copy>(
    forest: &Forest<T>,
    t: usize,
    row: &[I],
    go_left: &impl Fn(&Forest<T>, &Node<T>, I) -> bool,
    scale: f64,
    scratch: &mut Scratch,
    phi: &mut [f64],
) {
    let root = forest.roots[t];
    if forest.nodes[root as usize].flags & LEAF != 0 {
        return;
    }
    if scratch.inv.is_empty() {
        scratch.inv = (0..MAX_DEPTH as usize + 4)
            .map(|k| if k == 0 { 0.0 } else { 1.0 / k as f64 })
            .collect();
    }
    let width = forest.depths[t] as usize + 2;
    // Each level's slice is written before it is read: grown once, never cleared.
    if scratch.path.len() < width * width {
        scratch.path.resize(width * width, PathElement::default());
    }
    scratch.stack.clear();
    scratch.stack.push(Frame {
        node: root,
        level: 0,
        unique_depth: 0,
        zero: 1.0,
        one: 1.0,
        feature: usize::MAX,
    });
    while let Some(frame) = scratch.stack.pop() {
        let inv = &scratch.inv;
        let (parents, rest) = scratch.path.split_at_mut(frame.level * width);
        let path = &mut rest[..width];
        let mut depth = frame.unique_depth;
        if frame.level > 0 {
            let parent = &parents[(frame.level - 1) * width..];
            path[..depth].copy_from_slice(&parent[..depth]);
        }
        extend(path, depth, frame.zero, frame.one, frame.feature);
        let node = &forest.nodes[frame.node as usize];
        if node.flags & LEAF != 0 {
            let value: f64 = node.value.into();
            // For an element the row does not follow (one = 0), the unwound sum is the same
            // sum over the path divided by its zero fraction: computed once per leaf.
            let mut cold_sum = None;
            for i in 1..=depth {
                let el = path[i];
                let w = if el.one != 0.0 {
                    unwound_sum(path, depth, i, inv)
                } else if el.zero != 0.0 {
                    *cold_sum.get_or_insert_with(|| {
                        let d1 = depth as f64 + 1.0;
                        (0..depth)
                            .map(|k| path[k].weight * d1 * inv[depth - k])
                            .sum::<f64>()
                    }) / el.zero
                } else {
                    0.0
                };
                phi[el.feature] += w * (el.one - el.zero) * value * scale;
            }
            continue;
        }
        let feature = node.feature as usize;
        let (hot, cold) = if go_left(forest, node, row[feature]) {
            (node.left, node.right)
        } else {
            (node.right, node.left)
        };
        let cover = forest.covers[frame.node as usize];
        let hot_zero = forest.covers[hot as usize] / cover;
        let cold_zero = forest.covers[cold as usize] / cover;
        let (mut incoming_zero, mut incoming_one) = (1.0, 1.0);
        // A feature split on before: undo that split, to redo it here.
        if let Some(k) = (0..=depth).find(|k| path[*k].feature == feature) {
            incoming_zero = path[k].zero;
            incoming_one = path[k].one;
            unwind(path, depth, k, inv);
            depth -= 1;
        }
        let child = |node, zero, one| Frame {
            node,
            level: frame.level + 1,
            unique_depth: depth + 1,
            zero,
            one,
            feature,
        };
        scratch
            .stack
            .push(child(cold, cold_zero * incoming_zero, 0.0));
        scratch
            .stack
            .push(child(hot, hot_zero * incoming_zero, incoming_one));
    }
}

/// Adds a feature to the path (at index `depth`), updating the permutation weights.
/// (Divisions are multiplications by reciprocals here and below: the loops are the cost.)
fn extend(path: &mut [PathElement], depth: usize, zero: f64, one: f64, feature: usize) {
    path[depth] = PathElement {
        feature,
        zero,
        one,
        weight: if depth == 0 { 1.0 } else { 0.0 },
    };
    let d = depth as f64;
    let inv = 1.0 / (d + 1.0);
    let (one, zero) = (one * inv, zero * inv);
    for i in (0..depth).rev() {
        let fi = i as f64;
        path[i + 1].weight += one * path[i].weight * (fi + 1.0);
        path[i].weight = zero * path[i].weight * (d - fi);
    }
}

/// Removes the element at `index` from the path of length `depth + 1`, undoing its extension.
fn unwind(path: &mut [PathElement], depth: usize, index: usize, inv: &[f64]) {
    let (one, zero) = (path[index].one, path[index].zero);
    let d = depth as f64;
    let mut next_one = path[depth].weight;
    if one != 0.0 {
        let scale = (d + 1.0) / one;
        let back = zero / (d + 1.0);
        for i in (0..depth).rev() {
            let fi = i as f64;
            let kept = path[i].weight;
            path[i].weight = next_one * scale * inv[i + 1];
            next_one = kept - path[i].weight * back * (d - fi);
        }
    } else {
        let scale = (d + 1.0) / zero;
        for i in (0..depth).rev() {
            path[i].weight = path[i].weight * scale * inv[depth - i];
        }
    }
    for i in index..depth {
        path[i].feature = path[i + 1].feature;
        path[i].zero = path[i + 1].zero;
        path[i].one = path[i + 1].one;
    }
}

/// The total permutation weight of the path without the element at `index` (what [`unwind`]
/// would leave, summed, without changing the path).
fn unwound_sum(path: &[PathElement], depth: usize, index: usize, inv: &[f64]) -> f64 {
    let (one, zero) = (path[index].one, path[index].zero);
    let d = depth as f64;
    let mut total = 0.0;
    if one != 0.0 {
        let scale = (d + 1.0) / one;
        let back = zero / (d + 1.0);
        let mut next_one = path[depth].weight;
        for i in (0..depth).rev() {
            let fi = i as f64;
            let w = next_one * scale * inv[i + 1];
            total += w;
            next_one = path[i].weight - w * back * (d - fi);
        }
    } else if zero != 0.0 {
        let scale = (d + 1.0) / zero;
        for i in (0..depth).rev() {
            total += path[i].weight * scale * inv[depth - i];
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forest::NodeBuilder;

    /// One split on feature 0 (left: 1.0 with cover 3, right: 5.0 with cover 1): the expected
    /// value is 2.0, and a row going left gets 1.0 − 2.0 = −1.0 for feature 0.
    #[test]
    fn a_stump_gives_its_feature_the_difference_to_the_expected_value() {
        let mut forest = Forest::<f64>::default();
        forest
            .add_tree(
                &[
                    NodeBuilder::Split {
                        feature: 0,
                        threshold: 0.5,
                        left: 1,
                        right: 2,
                        default_left: true,
                        missing_flag: 0,
                    },
                    NodeBuilder::Leaf(1.0),
                    NodeBuilder::Leaf(5.0),
                ],
                &[4.0, 3.0, 1.0],
            )
            .unwrap();
        check(&forest).unwrap();
        assert_eq!(expected_values(&forest), vec![2.0]);
        let go_left = |_: &Forest<f64>, node: &Node<f64>, x: f64| x <= node.value;
        let mut scratch = Scratch::default();
        for (x, want) in [(0.0, -1.0), (1.0, 3.0)] {
            let mut phi = vec![0.0; 2];
            tree_shap(&forest, 0, &[x, 7.0], &go_left, 1.0, &mut scratch, &mut phi);
            assert_eq!(phi, vec![want, 0.0]);
        }
    }

    #[test]
    fn models_without_covers_or_too_deep_are_refused() {
        let mut forest = Forest::<f64>::default();
        forest.add_tree(&[NodeBuilder::Leaf(1.0)], &[]).unwrap();
        assert!(check(&forest).unwrap_err().contains("cover"));
    }
}
