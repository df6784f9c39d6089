//! Tensors as nested JSON lists (what a Python endpoint's `preprocess` receives, what a default
//! reply holds). Built without recursion: a shape comes from a client, and its depth must not
//! decide how deep the server's stack goes.

use serde_json::Value;

/// `items` (row-major) nested by `shape`; a scalar (shape `[]`) is its one item. Missing items are
/// `null`, extra ones ignored; a shape whose element count overflows is `null`.
pub fn nest(shape: &[usize], items: impl IntoIterator<Item = Value>) -> Value {
    let Some((&innermost, outer)) = shape.split_last() else {
        return items.into_iter().next().unwrap_or(Value::Null);
    };
    let Some(total) = shape.iter().try_fold(1usize, |n, d| n.checked_mul(*d)) else {
        return Value::Null;
    };
    let mut items = items.into_iter();
    // The innermost lists, then each outer dimension groups the level below it.
    let mut level: Vec<Value> = (0..total / innermost.max(1))
        .map(|_| {
            Value::Array(
                (0..innermost)
                    .map(|_| items.next().unwrap_or(Value::Null))
                    .collect(),
            )
        })
        .collect();
    if innermost == 0 {
        level = (0..outer.iter().product::<usize>())
            .map(|_| Value::Array(Vec::new()))
            .collect();
    }
    for &dim in outer.iter().rev() {
        let mut above = Vec::with_capacity(level.len() / dim.max(1));
        let mut lists = level.into_iter();
        while let Some(first) = lists.next() {
            let mut group = Vec::with_capacity(dim);
            group.push(first);
            group.extend(lists.by_ref().take(dim.saturating_sub(1)));
            above.push(Value::Array(group));
        }
        if dim == 0 {
            // No lists below a zero dimension: this level is empty lists.
            above = Vec::new();
        }
        level = above;
    }
    match level.pop() {
        Some(value) if level.is_empty() => value,
        _ => Value::Array(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn numbers(n: usize) -> Vec<Value> {
        (0..n).map(|i| json!(i)).collect()
    }

    #[test]
    fn shapes_nest_items() {
        assert_eq!(nest(&[], numbers(1)), json!(0));
        assert_eq!(nest(&[3], numbers(3)), json!([0, 1, 2]));
        assert_eq!(nest(&[2, 3], numbers(6)), json!([[0, 1, 2], [3, 4, 5]]));
        assert_eq!(nest(&[2, 1, 2], numbers(4)), json!([[[0, 1]], [[2, 3]]]));
        assert_eq!(nest(&[2, 0], Vec::new()), json!([[], []]));
        assert_eq!(nest(&[0, 2], Vec::new()), json!([]));
        assert_eq!(nest(&[0], Vec::new()), json!([]));
        assert_eq!(nest(&[2], numbers(1)), json!([0, null]));
    }

    #[test]
    fn deep_shapes_do_not_recurse() {
        let value = nest(&[1; 2_000], numbers(1));
        let mut depth = 0;
        let mut at = &value;
        while let Value::Array(items) = at {
            depth += 1;
            at = &items[0];
        }
        assert_eq!((depth, at.clone()), (2_000, json!(0)));
        // Dropping it must not recurse either: take it apart level by level.
        let mut at = value;
        while let Value::Array(mut items) = at {
            at = items.pop().unwrap_or(Value::Null);
        }
    }
}
