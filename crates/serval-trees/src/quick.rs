//! Predictions without walking the trees, for forests of numerical splits and small trees: the
//! QuickScorer algorithm (Lucchese et al., SIGIR 2015), written for this project.
//!
//! A tree's leaves are numbered left to right, and every split has a mask with zeros on the
//! leaves of its left subtree. A split a row does *not* take to the left (a "false" split) rules
//! those leaves out; the leaf the row reaches is the leftmost one that no false split of its tree
//! rules out. So a row's leaves come from the false splits alone, in any order: per feature, the
//! splits sorted by threshold, where one binary search finds the row's false splits (every
//! threshold below its value) and their masks are ANDed into their trees' bit vectors, then one
//! trailing-zero count per tree names its leaf. A walk does a chain of dependent loads and
//! branches per tree (depth × load latency); here the work is a few independent loads and ANDs
//! per false split, which the processor overlaps.
//!
//! Used when every split is numerical with its missing-value side settled at load (as for
//! [`crate::compact`]) and every tree has at most 64 leaves (one `u64` per tree): LightGBM's
//! default of 31 leaves and XGBoost's default depth of 6 both fit. The sums come out in the same
//! order as the walks' (trees in order for each row), so predictions are bit-for-bit the same
//! (tests in `lightgbm.rs` and `xgboost.rs` run both).

use crate::forest::{Forest, LEAF, Node};

/// Trees with more leaves than this are walked instead (one bit per leaf in a `u64`).
const MAX_LEAVES: usize = 64;

/// Forests with fewer splits per feature they split on (on average) are walked instead: a row
/// costs the scorer one search per such feature, and with few splits behind each search a walk
/// is cheaper. Criterion, this scorer against the compact walk: 30 trees of 8 leaves on 24
/// features (8.75 splits per feature) 5–12 % slower; 70 and 155 splits per feature 22–70 %
/// faster.
const MIN_SPLITS_PER_FEATURE: usize = 16;

/// Threshold and leaf types: f32 (XGBoost) and f64 (LightGBM).
pub trait Value: Copy + PartialOrd + Default {
    fn is_nan(self) -> bool;
    fn total_cmp(&self, other: &Self) -> std::cmp::Ordering;
}

impl Value for f32 {
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    fn total_cmp(&self, other: &Self) -> std::cmp::Ordering {
        f32::total_cmp(self, other)
    }
}

impl Value for f64 {
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    fn total_cmp(&self, other: &Self) -> std::cmp::Ordering {
        f64::total_cmp(self, other)
    }
}

/// How a split compares a present value with its threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// Left when `x <= threshold` (LightGBM).
    LessOrEqual,
    /// Left when `x < threshold` (XGBoost).
    Less,
}

/// A split as the scorer keeps it: which leaves it rules out when false, of which tree.
#[derive(Debug, Clone, Copy)]
struct Split {
    /// Ones everywhere but on the leaves of the split's left subtree.
    mask: u64,
    tree: u32,
    /// Whether a missing value (NaN) goes right, i.e. the split is false for it.
    nan_right: bool,
}

#[derive(Debug, Clone)]
pub struct Quick<T> {
    rule: Rule,
    /// Each feature that has splits: its index and its splits' range of `thresholds` and
    /// `splits`, ascending by threshold.
    features: Vec<(u32, u32, u32)>,
    thresholds: Vec<T>,
    splits: Vec<Split>,
    /// Tree `t`'s leaves, left to right, start at `leaves[first_leaf[t]]`.
    first_leaf: Vec<u32>,
    leaves: Vec<T>,
}

impl<T: Value> Quick<T> {
    /// The scorer for `forest` over rows of `width` features, or `None` when it does not apply: a
    /// split that is not numerical (`nan_left(node)` is `None`: categories, LightGBM's
    /// zero-as-missing), a NaN threshold, a feature outside the row, a tree with more than 64
    /// leaves, or too few splits per feature. `nan_left(node)` says where a missing value goes at a numerical split.
    pub fn new(
        forest: &Forest<T>,
        width: usize,
        rule: Rule,
        nan_left: impl Fn(&Node<T>) -> Option<bool>,
    ) -> Option<Self> {
        Self::build(forest, width, rule, nan_left)
            .filter(|q| q.splits.len() >= MIN_SPLITS_PER_FEATURE * q.features.len())
    }

    /// [`Quick::new`] whatever the splits per feature.
    pub fn build(
        forest: &Forest<T>,
        width: usize,
        rule: Rule,
        nan_left: impl Fn(&Node<T>) -> Option<bool>,
    ) -> Option<Self> {
        // (feature, threshold, split) of every split, sorted below.
        let mut all: Vec<(u32, T, Split)> = Vec::new();
        let mut first_leaf = Vec::with_capacity(forest.num_trees());
        let mut leaves = Vec::new();
        let mut order = Vec::new();
        let mut stack = Vec::new();
        for t in 0..forest.num_trees() {
            let nodes = forest.tree_nodes(t);
            let base = nodes.start;
            // Leaves under each node (children before parents: reverse pre-order).
            let mut count = vec![0usize; nodes.len()];
            order.clear();
            stack.clear();
            stack.push(forest.roots[t] as usize);
            while let Some(n) = stack.pop() {
                order.push(n);
                let node = &forest.nodes[n];
                if node.flags & LEAF == 0 {
                    stack.extend([node.left as usize, node.right as usize]);
                }
            }
            for &n in order.iter().rev() {
                let node = &forest.nodes[n];
                count[n - base] = if node.flags & LEAF != 0 {
                    1
                } else {
                    count[node.left as usize - base] + count[node.right as usize - base]
                };
            }
            if count[forest.roots[t] as usize - base] > MAX_LEAVES {
                return None;
            }
            // Leaf numbers from the left: a node's first leaf, handed down.
            first_leaf.push(u32::try_from(leaves.len()).ok()?);
            let tree = u32::try_from(t).ok()?;
            let mut numbered = vec![T::default(); count[forest.roots[t] as usize - base]];
            let mut stack = vec![(forest.roots[t] as usize, 0usize)];
            while let Some((n, first)) = stack.pop() {
                let node = &forest.nodes[n];
                if node.flags & LEAF != 0 {
                    numbered[first] = node.value;
                    continue;
                }
                let on_left = count[node.left as usize - base];
                if node.feature as usize >= width || node.value.is_nan() {
                    return None;
                }
                let mask = !(((1u64 << on_left) - 1) << first);
                let split = Split {
                    mask,
                    tree,
                    nan_right: !nan_left(node)?,
                };
                all.push((node.feature, node.value, split));
                stack.push((node.left as usize, first));
                stack.push((node.right as usize, first + on_left));
            }
            leaves.extend(numbered);
        }
        all.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
        let mut features = Vec::new();
        let mut start = 0;
        while start < all.len() {
            let f = all[start].0;
            let end = start + all[start..].partition_point(|s| s.0 == f);
            features.push((f, u32::try_from(start).ok()?, u32::try_from(end).ok()?));
            start = end;
        }
        Some(Quick {
            rule,
            features,
            thresholds: all.iter().map(|s| s.1).collect(),
            splits: all.iter().map(|s| s.2).collect(),
            first_leaf,
            leaves,
        })
    }

    /// Calls `sink(row, tree, leaf value)` for every row and tree, trees in order for each row
    /// (the order of [`Forest::accumulate`]). `x` is `[rows, width]`, row-major.
    #[inline]
    pub fn accumulate(
        &self,
        x: &[T],
        rows: usize,
        width: usize,
        mut sink: impl FnMut(usize, usize, T),
    ) {
        let mut alive = vec![u64::MAX; self.first_leaf.len()];
        for r in 0..rows {
            let row = &x[r * width..(r + 1) * width];
            if r > 0 {
                alive.fill(u64::MAX);
            }
            for &(feature, start, end) in &self.features {
                let value = row[feature as usize];
                let (start, end) = (start as usize, end as usize);
                let splits = &self.splits[start..end];
                if value.is_nan() {
                    for split in splits.iter().filter(|s| s.nan_right) {
                        alive[split.tree as usize] &= split.mask;
                    }
                    continue;
                }
                let thresholds = &self.thresholds[start..end];
                let false_ones = match self.rule {
                    Rule::LessOrEqual => below(thresholds, |t| t < value),
                    Rule::Less => below(thresholds, |t| t <= value),
                };
                for split in &splits[..false_ones] {
                    alive[split.tree as usize] &= split.mask;
                }
            }
            for (t, (bits, first)) in alive.iter().zip(&self.first_leaf).enumerate() {
                sink(
                    r,
                    t,
                    self.leaves[*first as usize + bits.trailing_zeros() as usize],
                );
            }
        }
    }
}

/// How many of the ascending `thresholds` satisfy `is_below` (true for a prefix): counted when
/// there are few (no branch to mispredict, and the comparisons vectorise), else a binary search.
#[inline(always)]
fn below<T: Copy>(thresholds: &[T], is_below: impl Fn(T) -> bool) -> usize {
    if thresholds.len() <= 32 {
        thresholds.iter().filter(|t| is_below(**t)).count()
    } else {
        thresholds.partition_point(|t| is_below(*t))
    }
}

/// What the evaluators' tests share: rows that put every split's feature at and around its
/// threshold, and a comparison of each walk's leaves.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// Rows of `width` features: per split, a base row (each feature at one of its thresholds,
    /// so that rows go down both sides) with the split's feature set to each of `around(its
    /// threshold)` (the threshold, the floats beside it, the special values).
    pub fn rows_at_thresholds<T: Value>(
        forest: &Forest<T>,
        width: usize,
        around: impl Fn(T) -> Vec<T>,
    ) -> Vec<T> {
        let splits: Vec<&Node<T>> = forest
            .nodes
            .iter()
            .filter(|n| n.flags & LEAF == 0)
            .collect();
        let base: Vec<T> = (0..width)
            .map(|f| {
                splits
                    .iter()
                    .find(|n| n.feature as usize == f)
                    .map_or(T::default(), |n| n.value)
            })
            .collect();
        let mut x = Vec::new();
        for node in &splits {
            for v in around(node.value) {
                x.extend(&base);
                let at = x.len() - width + node.feature as usize;
                x[at] = v;
            }
        }
        x
    }

    /// Every tree's leaf (`[row * trees + tree]`) as an `accumulate` reports them, in any order.
    pub fn leaf_table<T: Value>(
        rows: usize,
        trees: usize,
        accumulate: impl FnOnce(&mut dyn FnMut(usize, usize, T)),
    ) -> Vec<T> {
        let mut out = vec![T::default(); rows * trees];
        accumulate(&mut |r, t, leaf| out[r * trees + t] = leaf);
        out
    }

    /// Panics naming the first row and tree where `other` (named `name`) reaches another leaf
    /// than `general` (NaN leaves are equal here).
    pub fn assert_same_leaves<T: Value + std::fmt::Debug>(
        general: &[T],
        other: &[T],
        x: &[T],
        width: usize,
        name: &str,
    ) {
        let trees = general.len() / (x.len() / width).max(1);
        let same = |a: T, b: T| a.total_cmp(&b).is_eq();
        if let Some(i) = (0..general.len()).find(|&i| !same(general[i], other[i])) {
            let (r, t) = (i / trees, i % trees);
            let row = &x[r * width..(r + 1) * width];
            panic!("the {name} differs at tree {t} for row {row:?}");
        }
    }
}
