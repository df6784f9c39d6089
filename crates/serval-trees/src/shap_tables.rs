//! TreeSHAP with every leaf's contributions tabulated once per model (the idea of Yang's "Fast
//! TreeSHAP" v2): the same exact path-dependent values as [`crate::shap::tree_shap`], for a
//! fraction of its cost per row.
//!
//! For a leaf with value `v` whose path splits on the distinct features `F` (`d` of them), let
//! `z_j` be the product of the cover fractions of the path's splits on feature `j` and `o_j` be 1
//! when the row follows all of them, else 0. The path-dependent algorithm gives feature `i ∈ F`
//! `v (o_i − z_i) Σ_{S ⊆ F∖{i}} |S|!(d−|S|−1)!/d! Π_{j∈S} o_j Π_{j∉S∪{i}} z_j`. The only thing the
//! row decides is the set `O` of features it follows, so each leaf keeps one value per feature
//! for each of the `2^d` sets, computed when the model is first explained; a row then costs one
//! comparison per split (which way it goes) and, per leaf, its path's bits and `d` additions.
//!
//! Tables grow with `2^d`: a model whose tables would pass [`MAX_ENTRIES`] keeps the algorithm of
//! [`crate::shap`].

use crate::forest::{Forest, LEAF, Node};

/// At most this many tabulated values per model (8 bytes each: 32 MiB).
pub const MAX_ENTRIES: usize = 1 << 22;

/// Distinct features on one path above which a model is not tabulated.
const MAX_PATH_FEATURES: usize = 16;

#[derive(Debug, Clone)]
struct LeafTable {
    /// Steps of the path: (index in the tree's `splits`, whether the path goes left there, bit of
    /// the split's feature in `features`).
    path: Vec<(u32, bool, u8)>,
    /// The distinct features split on, in order of first appearance.
    features: Vec<u32>,
    /// `[2^d][d]`: the contribution to each of `features` when the row follows the set of them
    /// given by the index's bits.
    values: Vec<f64>,
}

#[derive(Debug, Clone)]
struct TreeTable {
    /// The tree's split nodes (forest indices).
    splits: Vec<u32>,
    leaves: Vec<LeafTable>,
}

/// The tabulated contributions of every tree of a forest.
#[derive(Debug, Clone)]
pub struct Tables {
    trees: Vec<TreeTable>,
    /// The most splits in one tree (the scratch space for a row's directions).
    widest: usize,
}

impl Tables {
    /// Tabulates `forest` (whose covers [`crate::shap::check`] accepted), or `None` when the
    /// tables would be too large.
    pub fn new<T: Copy + Default + Into<f64>>(forest: &Forest<T>) -> Option<Tables> {
        let mut entries = 0usize;
        let mut trees = Vec::with_capacity(forest.num_trees());
        for t in 0..forest.num_trees() {
            let tree = tabulate(forest, t, &mut entries)?;
            trees.push(tree);
        }
        let widest = trees.iter().map(|t| t.splits.len()).max().unwrap_or(0);
        Some(Tables { trees, widest })
    }

    /// Adds `scale` × tree `t`'s contributions for `row` to `phi`, as [`crate::shap::tree_shap`].
    /// `sides` is scratch space.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn add<T: Copy + Default, I: Copy>(
        &self,
        forest: &Forest<T>,
        t: usize,
        row: &[I],
        go_left: &impl Fn(&Forest<T>, &Node<T>, I) -> bool,
        scale: f64,
        sides: &mut Vec<bool>,
        phi: &mut [f64],
    ) {
        let tree = &self.trees[t];
        if sides.len() < self.widest {
            sides.resize(self.widest, false);
        }
        for (side, split) in sides.iter_mut().zip(&tree.splits) {
            let node = &forest.nodes[*split as usize];
            *side = go_left(forest, node, row[node.feature as usize]);
        }
        for leaf in &tree.leaves {
            let d = leaf.features.len();
            let mut followed = (1usize << d) - 1;
            for (split, left, bit) in &leaf.path {
                if sides[*split as usize] != *left {
                    followed &= !(1 << bit);
                }
            }
            let values = &leaf.values[followed * d..][..d];
            for (feature, value) in leaf.features.iter().zip(values) {
                phi[*feature as usize] += value * scale;
            }
        }
    }
}

/// One tree's table; `entries` counts the values of all trees so far.
fn tabulate<T: Copy + Default + Into<f64>>(
    forest: &Forest<T>,
    t: usize,
    entries: &mut usize,
) -> Option<TreeTable> {
    let nodes = forest.tree_nodes(t);
    let root = forest.roots[t] as usize;
    let mut tree = TreeTable {
        splits: Vec::new(),
        leaves: Vec::new(),
    };
    if forest.nodes[root].flags & LEAF != 0 {
        return Some(tree);
    }
    // Index of each split node among the tree's splits.
    let mut split_index = vec![u32::MAX; nodes.len()];
    for i in nodes.clone() {
        if forest.nodes[i].flags & LEAF == 0 {
            split_index[i - nodes.start] = u32::try_from(tree.splits.len()).ok()?;
            tree.splits.push(u32::try_from(i).ok()?);
        }
    }
    // Depth-first over the tree with an explicit stack: each entry is a node and the path to it
    // as (split node, went left).
    let mut stack: Vec<(usize, Vec<(usize, bool)>)> = vec![(root, Vec::new())];
    while let Some((i, path)) = stack.pop() {
        let node = &forest.nodes[i];
        if node.flags & LEAF == 0 {
            for (child, left) in [(node.left, true), (node.right, false)] {
                let mut longer = path.clone();
                longer.push((i, left));
                stack.push((child as usize, longer));
            }
            continue;
        }
        let mut features: Vec<u32> = Vec::new();
        let mut zero: Vec<f64> = Vec::new();
        let mut steps = Vec::with_capacity(path.len());
        for (split, left) in &path {
            let node = &forest.nodes[*split];
            let child = if *left { node.left } else { node.right };
            let fraction = forest.covers[child as usize] / forest.covers[*split];
            let bit = match features.iter().position(|f| *f == node.feature) {
                Some(bit) => {
                    zero[bit] *= fraction;
                    bit
                }
                None => {
                    features.push(node.feature);
                    zero.push(fraction);
                    features.len() - 1
                }
            };
            let bit = u8::try_from(bit).ok()?;
            steps.push((split_index[*split - nodes.start], *left, bit));
        }
        let d = features.len();
        if d > MAX_PATH_FEATURES {
            return None;
        }
        *entries += (1usize << d) * d;
        if *entries > MAX_ENTRIES {
            return None;
        }
        let value: f64 = node.value.into();
        tree.leaves.push(LeafTable {
            path: steps,
            values: leaf_values(value, &zero),
            features,
        });
    }
    Some(tree)
}

/// `[2^d][d]`: for every set `O` of followed features (bits) and feature `i`,
/// `v (o_i − z_i) Π_{j∉O∪{i}} z_j Σ_{S⊆O∖{i}} w(|S|) Π_{j∈(O∖{i})∖S} z_j`, the sum taken through the
/// elementary symmetric polynomials of the `z_j` in `O∖{i}`.
fn leaf_values(value: f64, zero: &[f64]) -> Vec<f64> {
    let d = zero.len();
    // w(k) = k! (d−k−1)! / d! = 1 / (d · C(d−1, k)).
    let mut weight = vec![0.0f64; d];
    let mut binomial = 1.0f64;
    for (k, w) in weight.iter_mut().enumerate() {
        *w = 1.0 / (d as f64 * binomial);
        binomial = binomial * (d - 1 - k) as f64 / (k + 1) as f64;
    }
    let mut values = vec![0.0f64; (1 << d) * d];
    let mut poly = vec![0.0f64; d + 1];
    let mut without = vec![0.0f64; d + 1];
    for followed in 0..(1usize << d) {
        // e_k of the z_j of the followed features.
        poly.fill(0.0);
        poly[0] = 1.0;
        let mut m = 0;
        for (j, z) in zero.iter().enumerate() {
            if followed & (1 << j) != 0 {
                m += 1;
                for k in (1..=m).rev() {
                    poly[k] += z * poly[k - 1];
                }
            }
        }
        for (i, z) in zero.iter().enumerate() {
            // Π z_j over the features neither followed nor i.
            let others: f64 = zero
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i && followed & (1 << j) == 0)
                .map(|(_, z)| z)
                .product();
            let (e, size, one) = if followed & (1 << i) != 0 {
                // Divide (1 + z t) out of the polynomial.
                without[0] = 1.0;
                for k in 1..m {
                    without[k] = poly[k] - z * without[k - 1];
                }
                (&without[..m], m - 1, 1.0)
            } else {
                (&poly[..=m], m, 0.0)
            };
            let sum: f64 = (0..=size).map(|k| weight[k] * e[size - k]).sum();
            values[followed * d + i] = value * (one - z) * others * sum;
        }
    }
    values
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forest::NodeBuilder;
    use crate::shap::{Scratch, tree_shap};

    fn split(feature: u32, threshold: f64, left: u32, right: u32) -> NodeBuilder<f64> {
        NodeBuilder::Split {
            feature,
            threshold,
            left,
            right,
            default_left: false,
            missing_flag: 0,
        }
    }

    /// A tree that splits on feature 0 twice on one path, on features 1 and 2 elsewhere, with a
    /// child of zero cover: the tables give the path-dependent values for rows going every way.
    #[test]
    fn tables_equal_the_path_dependent_algorithm() {
        let mut forest = Forest::<f64>::default();
        let nodes = [
            split(0, 0.5, 1, 2),     // 0
            split(1, 0.5, 3, 4),     // 1
            split(0, 1.5, 5, 6),     // 2: feature 0 again
            NodeBuilder::Leaf(1.0),  // 3
            split(2, 0.5, 7, 8),     // 4
            NodeBuilder::Leaf(-2.0), // 5
            split(0, 2.5, 9, 10),    // 6: and again
            NodeBuilder::Leaf(0.5),  // 7
            NodeBuilder::Leaf(4.0),  // 8
            NodeBuilder::Leaf(3.0),  // 9
            NodeBuilder::Leaf(-1.0), // 10
        ];
        let covers = [
            100.0, 60.0, 40.0, 25.0, 35.0, 10.0, 30.0, 35.0, 0.0, 12.0, 18.0,
        ];
        forest.add_tree(&nodes, &covers).unwrap();
        let go_left = |_: &Forest<f64>, node: &Node<f64>, x: f64| x <= node.value;
        let tables = Tables::new(&forest).expect("small trees are tabulated");
        let mut scratch = Scratch::default();
        let mut sides = Vec::new();
        for a in [0.0, 1.0, 2.0, 3.0] {
            for b in [0.0, 1.0] {
                for c in [0.0, 1.0] {
                    let row = [a, b, c];
                    let mut want = vec![0.0; 3];
                    tree_shap(&forest, 0, &row, &go_left, 2.0, &mut scratch, &mut want);
                    let mut got = vec![0.0; 3];
                    tables.add(&forest, 0, &row, &go_left, 2.0, &mut sides, &mut got);
                    for (g, w) in got.iter().zip(&want) {
                        assert!((g - w).abs() <= 1e-12, "row {row:?}: {got:?} vs {want:?}");
                    }
                }
            }
        }
    }

    /// A path through more distinct features than [`MAX_PATH_FEATURES`] is not tabulated.
    #[test]
    fn paths_through_too_many_features_are_left_to_the_path_dependent_algorithm() {
        let depth = MAX_PATH_FEATURES as u32 + 1;
        let mut nodes = Vec::new();
        let mut covers = Vec::new();
        for level in 0..depth {
            // Node 2·level splits; its left child is a leaf, its right child the next split.
            nodes.push(split(level, 0.5, 2 * level + 1, 2 * level + 2));
            nodes.push(NodeBuilder::Leaf(f64::from(level)));
            covers.extend([f64::from(depth - level + 1), 1.0]);
        }
        nodes.push(NodeBuilder::Leaf(-1.0));
        covers.push(1.0);
        let mut forest = Forest::<f64>::default();
        forest.add_tree(&nodes, &covers).unwrap();
        assert!(Tables::new(&forest).is_none());
    }
}
