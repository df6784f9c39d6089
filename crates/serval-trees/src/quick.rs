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
//! Two refinements, written here too: the search runs over a feature's *distinct* thresholds
//! (LightGBM and XGBoost's histogram method bin features, so there are at most a few hundred,
//! often a few dozen, however many splits), and checkpoint tables hold, for every (or every
//! few) distinct threshold of a feature, the AND of the masks of all splits below it, per tree.
//! A value beyond many thresholds then costs one pass over the trees' words (which vectorises)
//! instead of one update per split. The tables are kept under a budget (`TABLE_BYTES`).
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

/// A feature that has splits, and where its parts of the scorer's arrays are.
#[derive(Debug, Clone, Copy)]
struct Feature {
    index: u32,
    /// Its splits: `splits[start..end]`, ascending by threshold.
    start: u32,
    end: u32,
    /// Its distinct thresholds, ascending: `distinct[first..first + count]`; `cuts[first + k]` is
    /// the end (in `splits`) of the splits whose threshold is at most the k-th.
    first: u32,
    count: u32,
    /// Where its checkpoints start in `table`, in vectors of one word per tree.
    table: u32,
}

/// The bytes the checkpoint tables of one forest may take; beyond that the checkpoints thin
/// out (every second distinct threshold, every fourth, …) or there are none.
const TABLE_BYTES: usize = 1 << 20;

#[derive(Debug, Clone)]
pub struct Quick<T> {
    rule: Rule,
    features: Vec<Feature>,
    splits: Vec<Split>,
    distinct: Vec<T>,
    cuts: Vec<u32>,
    /// Checkpoints: for every `stride`-th distinct threshold of a feature, every tree's word
    /// after the splits up to it are false (the AND of their masks), so that a value above
    /// many thresholds costs one pass over the trees instead of one update per split. Empty
    /// when `stride` is 0.
    table: Vec<u64>,
    stride: usize,
    /// The splits a checkpoint must stand for to be used (one pass over every tree's word
    /// costs about as much as updating half as many splits one at a time).
    min_cover: usize,
    /// Tree `t`'s leaves, left to right, start at `leaves[first_leaf[t]]`.
    first_leaf: Vec<u32>,
    leaves: Vec<T>,
}

/// One row's leaf values, every tree's in tree order (read as they are asked for: no buffer).
pub struct RowLeaves<'a, T> {
    alive: std::slice::Iter<'a, u64>,
    first_leaf: std::slice::Iter<'a, u32>,
    leaves: &'a [T],
}

impl<T: Copy> Iterator for RowLeaves<'_, T> {
    type Item = T;

    #[inline(always)]
    fn next(&mut self) -> Option<T> {
        let (bits, first) = (self.alive.next()?, self.first_leaf.next()?);
        Some(self.leaves[*first as usize + bits.trailing_zeros() as usize])
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.alive.size_hint()
    }
}

impl<T: Copy> ExactSizeIterator for RowLeaves<'_, T> {}

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
        let mut quick = Self::build_untabled(forest, width, rule, nan_left)?;
        let trees = quick.first_leaf.len();
        let widest = quick.features.iter().map(|f| f.count as usize).max();
        // The smallest stride whose checkpoints fit in the budget.
        let stride = std::iter::successors(Some(1usize), |s| Some(s * 2))
            .take_while(|s| widest.is_some_and(|w| *s <= w))
            .find(|s| quick.checkpoints(*s) * trees * 8 <= TABLE_BYTES);
        if let Some(stride) = stride {
            quick.tabulate(stride, trees / 2);
        }
        Some(quick)
    }

    /// How many checkpoints `stride` gives.
    fn checkpoints(&self, stride: usize) -> usize {
        self.features
            .iter()
            .map(|f| f.count as usize / stride)
            .sum()
    }

    /// Fills the checkpoint table, one every `stride` distinct thresholds.
    fn tabulate(&mut self, stride: usize, min_cover: usize) {
        let trees = self.first_leaf.len();
        let mut table = Vec::with_capacity(self.checkpoints(stride) * trees);
        let mut alive = vec![u64::MAX; trees];
        for feature in &mut self.features {
            feature.table = u32::try_from(table.len() / trees.max(1)).unwrap_or(u32::MAX);
            alive.fill(u64::MAX);
            let mut next = feature.start as usize;
            for k in (stride..=feature.count as usize).step_by(stride) {
                let end = self.cuts[feature.first as usize + k - 1] as usize;
                for split in &self.splits[next..end] {
                    alive[split.tree as usize] &= split.mask;
                }
                next = end;
                table.extend_from_slice(&alive);
            }
        }
        self.table = table;
        self.stride = stride;
        self.min_cover = min_cover;
    }

    /// The scorer without checkpoints.
    fn build_untabled(
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
        let (mut distinct, mut cuts) = (Vec::new(), Vec::new());
        let mut start = 0;
        while start < all.len() {
            let f = all[start].0;
            let end = start + all[start..].partition_point(|s| s.0 == f);
            let first = u32::try_from(distinct.len()).ok()?;
            for i in start..end {
                if i + 1 == end || all[i + 1].1.total_cmp(&all[i].1).is_ne() {
                    distinct.push(all[i].1);
                    cuts.push(u32::try_from(i + 1).ok()?);
                }
            }
            features.push(Feature {
                index: f,
                start: u32::try_from(start).ok()?,
                end: u32::try_from(end).ok()?,
                first,
                count: u32::try_from(distinct.len()).ok()? - first,
                table: 0,
            });
            start = end;
        }
        Some(Quick {
            rule,
            features,
            splits: all.iter().map(|s| s.2).collect(),
            distinct,
            cuts,
            table: Vec::new(),
            stride: 0,
            min_cover: 0,
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
        self.for_each_row(x, rows, width, |r, leaves| {
            for (t, leaf) in leaves.enumerate() {
                sink(r, t, leaf);
            }
        });
    }

    /// Calls `each(row, leaves)` for every row, with the values of the leaves it reaches, every
    /// tree's in tree order. `x` is `[rows, width]`, row-major.
    #[inline]
    pub fn for_each_row(
        &self,
        x: &[T],
        rows: usize,
        width: usize,
        mut each: impl FnMut(usize, RowLeaves<'_, T>),
    ) {
        let mut alive = vec![u64::MAX; self.first_leaf.len()];
        for r in 0..rows {
            let row = &x[r * width..(r + 1) * width];
            if r > 0 {
                alive.fill(u64::MAX);
            }
            for feature in &self.features {
                self.rule_out(feature, row[feature.index as usize], &mut alive);
            }
            each(
                r,
                RowLeaves {
                    alive: alive.iter(),
                    first_leaf: self.first_leaf.iter(),
                    leaves: &self.leaves,
                },
            );
        }
    }

    /// ANDs the masks of the splits of `feature` that `value` does not take to the left into
    /// their trees' words.
    #[inline(always)]
    fn rule_out(&self, feature: &Feature, value: T, alive: &mut [u64]) {
        let (start, end) = (feature.start as usize, feature.end as usize);
        if value.is_nan() {
            for split in self.splits[start..end].iter().filter(|s| s.nan_right) {
                alive[split.tree as usize] &= split.mask;
            }
            return;
        }
        let first = feature.first as usize;
        let distinct = &self.distinct[first..first + feature.count as usize];
        // How many distinct thresholds the value is beyond: their splits are the false ones.
        let beyond = match self.rule {
            Rule::LessOrEqual => below(distinct, |t| t < value),
            Rule::Less => below(distinct, |t| t <= value),
        };
        if beyond == 0 {
            return;
        }
        let false_end = self.cuts[first + beyond - 1] as usize;
        let mut from = start;
        if self.stride > 0 && beyond >= self.stride {
            let checkpoint = beyond / self.stride;
            let covered = self.cuts[first + checkpoint * self.stride - 1] as usize;
            if covered - start >= self.min_cover {
                let trees = alive.len();
                let at = (feature.table as usize + checkpoint - 1) * trees;
                for (word, mask) in alive.iter_mut().zip(&self.table[at..at + trees]) {
                    *word &= mask;
                }
                from = covered;
            }
        }
        for split in &self.splits[from..false_end] {
            alive[split.tree as usize] &= split.mask;
        }
    }
}

/// Adds one row's leaf values (every tree's, in tree order) to its outputs, tree `t` to output
/// `t % out.len()` (the layout of LightGBM's iterations and of XGBoost's classes), in tree
/// order as a walk adds them, so the sums are the same to the bit. Up to four outputs are
/// summed in registers rather than through memory.
#[inline]
pub fn add_round_robin<T: Copy + std::ops::AddAssign>(
    leaves: impl ExactSizeIterator<Item = T>,
    out: &mut [T],
) {
    #[inline(always)]
    fn fixed<T: Copy + std::ops::AddAssign, const G: usize>(
        mut leaves: impl ExactSizeIterator<Item = T>,
        out: &mut [T],
    ) {
        let mut sums: [T; G] = std::array::from_fn(|k| out[k]);
        for _ in 0..leaves.len() / G {
            for sum in &mut sums {
                if let Some(leaf) = leaves.next() {
                    *sum += leaf;
                }
            }
        }
        for (sum, leaf) in sums.iter_mut().zip(leaves) {
            *sum += leaf;
        }
        out.copy_from_slice(&sums);
    }
    match out.len() {
        0 => {}
        1 => fixed::<T, 1>(leaves, out),
        2 => fixed::<T, 2>(leaves, out),
        3 => fixed::<T, 3>(leaves, out),
        4 => fixed::<T, 4>(leaves, out),
        g => {
            let mut k = 0;
            for leaf in leaves {
                out[k] += leaf;
                k = if k + 1 == g { 0 } else { k + 1 };
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

    /// The scorer as built and as it could be: without checkpoints, and with checkpoints at
    /// every distinct threshold, every second and every third, always used where one applies.
    pub fn variants<T: Value>(quick: Quick<T>) -> Vec<(String, Quick<T>)> {
        let mut out = vec![("as built".to_string(), quick.clone())];
        let mut bare = quick.clone();
        bare.table.clear();
        bare.stride = 0;
        out.push(("without checkpoints".to_string(), bare.clone()));
        for stride in 1..=3 {
            let mut tabled = bare.clone();
            tabled.tabulate(stride, 0);
            out.push((format!("checkpoints every {stride}"), tabled));
        }
        out
    }

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

    #[test]
    fn round_robin_sums_are_the_walks_sums() {
        // Values whose sums depend on the order they are added in.
        let leaves: Vec<f64> = (0..23)
            .map(|i| 0.1 * f64::from(i) + 1e16 * f64::from(i % 3))
            .collect();
        for outputs in 1..=6 {
            let base: Vec<f64> = (0..outputs).map(|k| 0.3 * k as f64).collect();
            let mut expected = base.clone();
            for (t, leaf) in leaves.iter().enumerate() {
                expected[t % outputs] += leaf;
            }
            let mut got = base;
            add_round_robin(leaves.iter().copied(), &mut got);
            let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&expected), "{outputs} outputs");
        }
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
