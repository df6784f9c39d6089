//! A compact copy of a LightGBM forest whose splits are all numerical, used for predictions only.
//!
//! [`Forest`] keeps every node in one 32-byte record (f64), leaves included, and decides a split
//! through LightGBM's full rule (categories, three missing-value types). Most models have
//! numerical splits only, and a prediction visits a few nodes of every tree, so a row's cost is
//! loading nodes and deciding. Here a tree keeps only its splits (threshold, feature, both
//! children: 24 bytes), the leaves' values sit in their own array (a child reference with
//! [`LEAF`] set indexes it), and where a missing value goes is settled when the model loads (one
//! bit per split): a split is one comparison and one bit. Criterion against the general walk on
//! the LightGBM fixtures (`benches/trees.rs`, three runs): `single_row` 20–25 % faster,
//! `single_row_varied` (a different row each call) 0–33 % faster. XGBoost keeps the general walk: the same layout
//! measured no faster there (its nodes are 24 bytes already and it has one missing-value rule).
//! The walk visits the same leaves as [`Forest::leaf`] with LightGBM's rule (tests in
//! `lightgbm.rs` run both).

use crate::forest::{Forest, LEAF as LEAF_FLAG, Node, blocked};

/// Set on a child reference that names a leaf (its index in [`Compact::leaves`]).
const LEAF: u32 = 1 << 31;
/// Set on a split's `feature` when a missing value (NaN) goes left.
const NAN_LEFT: u32 = 1 << 31;

#[derive(Debug, Clone, Copy)]
struct Split {
    threshold: f64,
    /// The feature's index, with [`NAN_LEFT`].
    feature: u32,
    left: u32,
    right: u32,
}

#[derive(Debug, Clone, Default)]
pub struct Compact {
    splits: Vec<Split>,
    leaves: Vec<f64>,
    /// Each tree's root, a child reference (a tree may be a single leaf).
    roots: Vec<u32>,
}

impl Compact {
    /// The compact copy of `forest`, or `None` when one of its splits is not numerical.
    /// `nan_left(node)` says where a missing value goes at a split, or `None` when the split
    /// needs more than one comparison (categories, LightGBM's zero-as-missing).
    pub fn new(
        forest: &Forest<f64>,
        nan_left: impl Fn(&Node<f64>) -> Option<bool>,
    ) -> Option<Self> {
        let mut compact = Compact::default();
        // Node index in the forest → child reference here.
        let mut reference = vec![0u32; forest.nodes.len()];
        for (i, node) in forest.nodes.iter().enumerate() {
            reference[i] = if node.flags & LEAF_FLAG != 0 {
                let index = u32::try_from(compact.leaves.len())
                    .ok()
                    .filter(|i| i & LEAF == 0)?;
                compact.leaves.push(node.value);
                index | LEAF
            } else {
                let index = u32::try_from(compact.splits.len())
                    .ok()
                    .filter(|i| i & LEAF == 0)?;
                let feature = node.feature;
                if feature & NAN_LEFT != 0 {
                    return None;
                }
                let flag = if nan_left(node)? { NAN_LEFT } else { 0 };
                compact.splits.push(Split {
                    threshold: node.value,
                    feature: feature | flag,
                    left: node.left,
                    right: node.right,
                });
                index
            };
        }
        for split in &mut compact.splits {
            split.left = reference[split.left as usize];
            split.right = reference[split.right as usize];
        }
        compact.roots = forest
            .roots
            .iter()
            .map(|r| reference[*r as usize])
            .collect();
        Some(compact)
    }

    /// The leaf value of tree `root` for `row`: a present value goes left when `x <= threshold`.
    #[inline(always)]
    fn leaf(&self, root: u32, row: &[f64]) -> f64 {
        let mut at = root;
        while at & LEAF == 0 {
            let split = &self.splits[at as usize];
            let x = row[(split.feature & !NAN_LEFT) as usize];
            let left = (x <= split.threshold) | (x.is_nan() & (split.feature & NAN_LEFT != 0));
            // `black_box` keeps the choice a branch: as a conditional move (the compiler's pick
            // without it) loading the next split waits for this comparison, where a branch lets
            // the processor go on down the predicted side (measured: the conditional move was up to
            // 1.8× slower on a repeated row, as a server sees similar rows, and no faster on
            // varied rows).
            at = if left {
                split.left
            } else {
                std::hint::black_box(split.right)
            };
        }
        self.leaves[(at & !LEAF) as usize]
    }

    /// Calls `sink(row, tree, leaf value)` for every row and tree, as [`Forest::accumulate`].
    #[inline]
    pub fn accumulate(
        &self,
        x: &[f64],
        rows: usize,
        width: usize,
        mut sink: impl FnMut(usize, usize, f64),
    ) {
        blocked(rows, &self.roots, |r, t, root| {
            let row = &x[r * width..(r + 1) * width];
            sink(r, t, self.leaf(root, row));
        });
    }
}
