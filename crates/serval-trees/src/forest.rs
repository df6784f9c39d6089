//! The compiled form of a tree ensemble shared by both evaluators: every tree's nodes in one flat
//! array (children as absolute indices), categorical splits as bitsets. Each library supplies its
//! own split decision (comparison, missing-value rules) as a closure that the walk inlines.

/// Node flags.
pub const LEAF: u8 = 1;
pub const DEFAULT_LEFT: u8 = 2;
pub const CATEGORICAL: u8 = 4;
/// LightGBM missing type "Zero": zero (and NaN) take the default direction.
pub const MISSING_ZERO: u8 = 8;
/// LightGBM missing type "NaN": NaN takes the default direction.
pub const MISSING_NAN: u8 = 16;
/// Categorical node whose listed categories go left (LightGBM); otherwise they go right (XGBoost).
pub const LISTED_LEFT: u8 = 32;

#[derive(Debug, Clone, Copy)]
pub struct Node<T> {
    /// Threshold of a split, or the value of a leaf.
    pub value: T,
    pub feature: u32,
    pub left: u32,
    pub right: u32,
    /// Index into [`Forest::category_sets`] for categorical splits.
    pub categories: u32,
    pub flags: u8,
}

/// A node as a loader describes it, with children relative to its tree.
#[derive(Debug, Clone)]
pub enum NodeBuilder<T> {
    Leaf(T),
    /// A numerical split; `missing_flag` is [`MISSING_ZERO`] or [`MISSING_NAN`] for LightGBM's
    /// missing types, 0 otherwise.
    Split {
        feature: u32,
        threshold: T,
        left: u32,
        right: u32,
        default_left: bool,
        missing_flag: u8,
    },
    Categorical {
        feature: u32,
        left: u32,
        right: u32,
        default_left: bool,
        categories: Vec<u32>,
        listed_go_left: bool,
    },
}

/// A tree that cannot be compiled (bad child indices, cycles, huge categories).
#[derive(Debug)]
pub struct TreeError(pub String);

impl std::fmt::Display for TreeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Categories above this are refused at load time (bitsets stay small).
const MAX_CATEGORY: u32 = 1 << 24;

#[derive(Debug, Clone, Default)]
pub struct Forest<T> {
    pub nodes: Vec<Node<T>>,
    pub roots: Vec<u32>,
    pub category_sets: Vec<Vec<u64>>,
    /// Each node's cover (XGBoost's `sum_hessian`, LightGBM's data count), parallel to `nodes`;
    /// NaN where the model file has none. Only explanations (TreeSHAP) read them.
    pub covers: Vec<f64>,
    /// Each tree's depth (edges from its root to its deepest leaf).
    pub depths: Vec<u32>,
}

impl<T: Copy + Default> Forest<T> {
    /// Appends a tree; node 0 is its root. Checks that the tree is acyclic and every node is
    /// reached once, so walks always end. `covers` are the nodes' covers (empty: unknown).
    pub fn add_tree(&mut self, nodes: &[NodeBuilder<T>], covers: &[f64]) -> Result<(), TreeError> {
        let offset =
            u32::try_from(self.nodes.len()).map_err(|_| TreeError("model too large".into()))?;
        let n = nodes.len();
        if n == 0 {
            return Err(TreeError("empty tree".into()));
        }
        if !covers.is_empty() && covers.len() != n {
            return Err(TreeError(format!("{} covers for {n} nodes", covers.len())));
        }
        // Every child index must be a later-unvisited node: check reachability once.
        let mut seen = vec![false; n];
        let mut stack = vec![(0usize, 0u32)];
        let mut depth = 0;
        while let Some((i, level)) = stack.pop() {
            depth = depth.max(level);
            if std::mem::replace(&mut seen[i], true) {
                return Err(TreeError(format!(
                    "node {i} is reached twice (the tree has a cycle)"
                )));
            }
            let children = match &nodes[i] {
                NodeBuilder::Leaf(_) => None,
                NodeBuilder::Split { left, right, .. }
                | NodeBuilder::Categorical { left, right, .. } => Some((*left, *right)),
            };
            if let Some((l, r)) = children {
                for c in [l, r] {
                    if c as usize >= n {
                        return Err(TreeError(format!(
                            "node {i} has child {c} outside the tree"
                        )));
                    }
                    stack.push((c as usize, level + 1));
                }
            }
        }
        for node in nodes {
            let compiled = match node {
                NodeBuilder::Leaf(v) => Node {
                    value: *v,
                    feature: 0,
                    left: 0,
                    right: 0,
                    categories: 0,
                    flags: LEAF,
                },
                NodeBuilder::Split {
                    feature,
                    threshold,
                    left,
                    right,
                    default_left,
                    missing_flag,
                } => Node {
                    value: *threshold,
                    feature: *feature,
                    left: offset + left,
                    right: offset + right,
                    categories: 0,
                    flags: missing_flag | if *default_left { DEFAULT_LEFT } else { 0 },
                },
                NodeBuilder::Categorical {
                    feature,
                    left,
                    right,
                    default_left,
                    categories,
                    listed_go_left,
                } => {
                    let max = categories.iter().copied().max().unwrap_or(0);
                    if max >= MAX_CATEGORY {
                        return Err(TreeError(format!("category {max} is too large")));
                    }
                    let mut bits = vec![0u64; (max as usize / 64) + 1];
                    for c in categories {
                        bits[*c as usize / 64] |= 1 << (c % 64);
                    }
                    let index = u32::try_from(self.category_sets.len())
                        .map_err(|_| TreeError("too many categorical splits".into()))?;
                    self.category_sets.push(bits);
                    let mut flags = CATEGORICAL;
                    if *default_left {
                        flags |= DEFAULT_LEFT;
                    }
                    if *listed_go_left {
                        flags |= LISTED_LEFT;
                    }
                    Node {
                        value: T::default(),
                        feature: *feature,
                        left: offset + left,
                        right: offset + right,
                        categories: index,
                        flags,
                    }
                }
            };
            self.nodes.push(compiled);
        }
        if covers.is_empty() {
            self.covers.extend(std::iter::repeat_n(f64::NAN, n));
        } else {
            self.covers.extend_from_slice(covers);
        }
        self.roots.push(offset);
        self.depths.push(depth);
        Ok(())
    }

    /// The nodes of tree `t`: from its root to the next tree's.
    pub fn tree_nodes(&self, t: usize) -> std::ops::Range<usize> {
        let start = self.roots[t] as usize;
        let end = self
            .roots
            .get(t + 1)
            .map_or(self.nodes.len(), |r| *r as usize);
        start..end
    }

    pub fn num_trees(&self) -> usize {
        self.roots.len()
    }

    /// Whether a non-negative integral category is in a categorical node's set.
    #[inline]
    pub fn in_category_set(&self, node: &Node<T>, category: u32) -> bool {
        let bits = &self.category_sets[node.categories as usize];
        bits.get(category as usize / 64)
            .is_some_and(|word| word & (1 << (category % 64)) != 0)
    }

    /// Walks one tree for one row; `go_left(node, x)` is the library's decision rule.
    #[inline]
    pub fn leaf<I: Copy>(
        &self,
        root: u32,
        row: &[I],
        go_left: &impl Fn(&Self, &Node<T>, I) -> bool,
    ) -> T {
        let mut node = &self.nodes[root as usize];
        while node.flags & LEAF == 0 {
            let x = row[node.feature as usize];
            let next = if go_left(self, node, x) {
                node.left
            } else {
                node.right
            };
            node = &self.nodes[next as usize];
        }
        node.value
    }

    /// Calls `sink(row, tree, leaf value)` for every row and tree (see [`blocked`]).
    #[inline]
    pub fn accumulate<I: Copy>(
        &self,
        x: &[I],
        rows: usize,
        width: usize,
        go_left: impl Fn(&Self, &Node<T>, I) -> bool,
        mut sink: impl FnMut(usize, usize, T),
    ) {
        blocked(rows, &self.roots, |r, t, root| {
            let row = &x[r * width..(r + 1) * width];
            sink(r, t, self.leaf(root, row, &go_left));
        });
    }
}

/// Calls `visit(row, tree, root)` for every row and tree: trees in order for each row, rows in
/// blocks of 64 so a block's trees stay in cache.
#[inline(always)]
pub fn blocked(rows: usize, roots: &[u32], mut visit: impl FnMut(usize, usize, u32)) {
    const BLOCK: usize = 64;
    let mut start = 0;
    while start < rows {
        let end = (start + BLOCK).min(rows);
        for (t, root) in roots.iter().enumerate() {
            for r in start..end {
                visit(r, t, *root);
            }
        }
        start = end;
    }
}
