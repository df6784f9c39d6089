//! What a tree model's objective means for replies.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeTask {
    Regression,
    /// One probability per row (of class 1).
    Binary,
    /// One probability per class and row.
    Multiclass,
    /// Raw scores (ranking, margins).
    Raw,
}
