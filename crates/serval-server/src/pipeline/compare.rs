//! How a shadow's answer is compared with the endpoint's: both as named outputs (a clearml reply's
//! top-level keys, a V2 reply's tensors), the explanation left out.
//!
//! - A **classifier's** answer has a `probabilities` output and a label output (`y` in clearml's
//!   reply, `label` in V2's): the pair agrees when every row's label is the same; the difference
//!   is the largest absolute difference of a probability.
//! - **Anything else** is compared element by element: numbers agree when
//!   `|a - b| <= tolerance * max(|a|, |b|)` (NaN equals NaN), other values when equal; the pair
//!   agrees when every element of every output agrees; the difference is the largest relative one.
//!
//! An output missing on one side, or of another length or kind, disagrees (difference infinite).
//! A request of several rows is one pair: it agrees when every row agrees.

use serde_json::Value;

use crate::endpoint::Output;
use crate::wire::{Elements, InferTensor};

/// A copy of an answer, made on the request path only when the request was sampled for a
/// shadow (cheap: no parsing), compared later off the path.
#[derive(Debug)]
pub enum Copy {
    /// A reply written as JSON text.
    Json(Vec<u8>),
    /// A reply as a JSON tree.
    Tree(Value),
    Tensors(Vec<InferTensor>),
}

impl Copy {
    /// A copy of `output`.
    pub fn of(output: &Output) -> Copy {
        match output {
            Output::Body(value) => Copy::Tree(value.clone()),
            Output::Json(text) => Copy::Json(text.clone()),
            Output::Text(text) => Copy::Json(text.to_vec()),
            Output::Tensors(tensors) => Copy::Tensors(tensors.clone()),
        }
    }

    /// `output` itself, kept.
    pub fn from_output(output: Output) -> Copy {
        match output {
            Output::Body(value) => Copy::Tree(value),
            Output::Json(text) => Copy::Json(text),
            Output::Text(text) => Copy::Json(text.to_vec()),
            Output::Tensors(tensors) => Copy::Tensors(tensors),
        }
    }

    /// The answer as text, for a person (at most `limit` bytes, cut on a character boundary).
    pub fn text(&self, limit: usize) -> String {
        let text = match self {
            Copy::Json(text) => String::from_utf8_lossy(text).into_owned(),
            Copy::Tree(value) => value.to_string(),
            Copy::Tensors(tensors) => Value::Object(
                tensors
                    .iter()
                    .map(|t| (t.name.clone(), Value::Array(t.data.json_values())))
                    .collect(),
            )
            .to_string(),
        };
        cut(text, limit)
    }
}

/// `text` cut to at most `limit` bytes (with `…` when cut).
pub fn cut(mut text: String, limit: usize) -> String {
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// One output's values, flattened row-major.
#[derive(Debug, PartialEq)]
enum Values {
    Numbers(Vec<f64>),
    Other(Vec<Value>),
}

/// The outputs of an answer by name (a clearml reply that is not an object is one output named
/// `""`).
fn outputs(copy: &Copy) -> Vec<(String, Values)> {
    let tree;
    let value = match copy {
        Copy::Tensors(tensors) => {
            return tensors
                .iter()
                .filter(|t| t.name != serval_engine::CONTRIBUTIONS)
                .map(|t| (t.name.clone(), tensor_values(&t.data)))
                .collect();
        }
        Copy::Tree(value) => value,
        Copy::Json(text) => {
            tree = serde_json::from_slice::<Value>(text).unwrap_or(Value::Null);
            &tree
        }
    };
    match value {
        Value::Object(map) => map
            .iter()
            .filter(|(k, _)| k.as_str() != serval_engine::CONTRIBUTIONS)
            .map(|(k, v)| (k.clone(), json_values(v)))
            .collect(),
        other => vec![(String::new(), json_values(other))],
    }
}

fn tensor_values(data: &Elements) -> Values {
    match data {
        Elements::Bytes(_) | Elements::Bool(_) => Values::Other(data.json_values()),
        numbers => Values::Numbers(
            numbers
                .json_values()
                .iter()
                .map(|v| v.as_f64().unwrap_or(f64::NAN))
                .collect(),
        ),
    }
}

/// The leaves of a JSON value, in order (without recursion): all numbers → `Numbers`.
fn json_values(value: &Value) -> Values {
    let mut leaves = Vec::new();
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items.iter().rev()),
            Value::Object(map) => stack.extend(map.values().rev()),
            leaf => leaves.push(leaf),
        }
    }
    if leaves.iter().all(|v| v.is_number()) {
        Values::Numbers(leaves.iter().filter_map(|v| v.as_f64()).collect())
    } else {
        Values::Other(leaves.into_iter().cloned().collect())
    }
}

/// What a comparison found.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub agree: bool,
    /// The largest difference (see the module docs).
    pub difference: f64,
    /// Where the answers first differ, for a person (`None` when they agree).
    pub detail: Option<String>,
}

/// Compares the endpoint's answer with the shadow's.
pub fn compare(primary: &Copy, shadow: &Copy, tolerance: f64) -> Verdict {
    let a = outputs(primary);
    let b = outputs(shadow);
    let label = ["y", "label"]
        .into_iter()
        .find(|name| find(&a, name).is_some() && find(&b, name).is_some());
    if let (Some(label), Some(pa), Some(pb)) =
        (label, find(&a, "probabilities"), find(&b, "probabilities"))
    {
        let difference = match (pa, pb) {
            (Values::Numbers(x), Values::Numbers(y)) if x.len() == y.len() => x
                .iter()
                .zip(y)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max),
            _ => f64::INFINITY,
        };
        let (la, lb) = (find(&a, label), find(&b, label));
        let detail = (la != lb).then(|| first_difference(label, la, lb));
        return Verdict {
            agree: detail.is_none(),
            difference,
            detail,
        };
    }
    let mut verdict = Verdict {
        agree: true,
        difference: 0.0,
        detail: None,
    };
    let disagree = |verdict: &mut Verdict, difference: f64, detail: String| {
        verdict.agree = false;
        verdict.difference = verdict.difference.max(difference);
        verdict.detail.get_or_insert(detail);
    };
    for (name, _) in b.iter().filter(|(n, _)| find(&a, n).is_none()) {
        disagree(
            &mut verdict,
            f64::INFINITY,
            format!("output '{name}' is only in the target's answer"),
        );
    }
    for (name, x) in &a {
        let Some(y) = find(&b, name) else {
            disagree(
                &mut verdict,
                f64::INFINITY,
                format!("output '{name}' is missing from the target's answer"),
            );
            continue;
        };
        match (x, y) {
            (Values::Numbers(x), Values::Numbers(y)) if x.len() == y.len() => {
                for (i, (p, s)) in x.iter().zip(y).enumerate() {
                    let d = relative(*p, *s);
                    verdict.difference = verdict.difference.max(d);
                    if d > tolerance {
                        disagree(
                            &mut verdict,
                            d,
                            format!(
                                "output '{name}' element {i}: {} vs {}",
                                number(*p),
                                number(*s)
                            ),
                        );
                    }
                }
            }
            (x, y) if x == y => {}
            (x, y) => disagree(
                &mut verdict,
                f64::INFINITY,
                first_difference(name, Some(x), Some(y)),
            ),
        }
    }
    verdict
}

fn find<'a>(outputs: &'a [(String, Values)], name: &str) -> Option<&'a Values> {
    outputs
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, values)| values)
}

/// `|a - b|` relative to the larger magnitude; 0 when equal (NaN equals NaN).
fn relative(a: f64, b: f64) -> f64 {
    if a == b || (a.is_nan() && b.is_nan()) {
        return 0.0;
    }
    let d = (a - b).abs() / a.abs().max(b.abs());
    if d.is_nan() { f64::INFINITY } else { d }
}

/// A number as JSON: whole numbers without a fraction (labels read as they were written).
fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        Value::from(x as i64)
    } else {
        serde_json::json!(x)
    }
}

fn first_difference(name: &str, a: Option<&Values>, b: Option<&Values>) -> String {
    let items = |v: Option<&Values>| -> Vec<Value> {
        match v {
            Some(Values::Numbers(n)) => n.iter().map(|x| number(*x)).collect(),
            Some(Values::Other(o)) => o.clone(),
            None => Vec::new(),
        }
    };
    let (a, b) = (items(a), items(b));
    if a.len() != b.len() {
        return format!(
            "output '{name}' has {} elements vs {} in the target's answer",
            a.len(),
            b.len()
        );
    }
    match a.iter().zip(&b).position(|(x, y)| x != y) {
        Some(i) => format!("output '{name}' element {i}: {} vs {}", a[i], b[i]),
        None => format!("output '{name}' differs"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tree(value: Value) -> Copy {
        Copy::Tree(value)
    }

    #[test]
    fn classifiers_agree_on_labels_and_report_the_largest_probability_difference() {
        let a = Copy::Json(br#"{"y":[1,0],"probabilities":[[0.2,0.8],[0.9,0.1]]}"#.to_vec());
        let same = tree(json!({"y": [1, 0], "probabilities": [[0.25, 0.75], [0.9, 0.1]]}));
        let verdict = compare(&a, &same, 1e-6);
        assert!(verdict.agree, "{verdict:?}");
        assert!((verdict.difference - 0.05).abs() < 1e-12);
        let other = tree(json!({"y": [1, 1], "probabilities": [[0.2, 0.8], [0.4, 0.6]]}));
        let verdict = compare(&a, &other, 1e-6);
        assert!(!verdict.agree);
        assert_eq!(
            verdict.detail.as_deref(),
            Some("output 'y' element 1: 0 vs 1")
        );
    }

    #[test]
    fn v2_tensors_compare_by_name_within_the_tolerance() {
        let tensor = |name: &str, data: Vec<f32>| InferTensor {
            name: name.into(),
            shape: vec![data.len()],
            data: Elements::F32(data),
        };
        let a = Copy::Tensors(vec![tensor("predict", vec![1.0, 2.0, 0.0])]);
        let close = Copy::Tensors(vec![
            tensor("predict", vec![1.0, 2.000_001, 0.0]),
            tensor(serval_engine::CONTRIBUTIONS, vec![9.0]),
        ]);
        assert!(compare(&a, &close, 1e-6).agree);
        let verdict = compare(&a, &close, 1e-9);
        assert!(!verdict.agree);
        assert!(verdict.difference > 1e-9 && verdict.difference < 1e-6);
        let far = Copy::Tensors(vec![tensor("predict", vec![1.0, 2.0, 1e-30])]);
        assert_eq!(compare(&a, &far, 1e-6).difference, 1.0);
        let renamed = Copy::Tensors(vec![tensor("output", vec![1.0, 2.0, 0.0])]);
        let verdict = compare(&a, &renamed, 1e-6);
        assert!(!verdict.agree);
        assert_eq!(verdict.difference, f64::INFINITY);
    }

    #[test]
    fn other_answers_compare_every_leaf_and_text_exactly() {
        let a = tree(json!({"result": {"score": 0.5, "tag": "x"}}));
        assert!(
            compare(
                &a,
                &tree(json!({"result": {"score": 0.5, "tag": "x"}})),
                0.0
            )
            .agree
        );
        let verdict = compare(
            &a,
            &tree(json!({"result": {"score": 0.5, "tag": "z"}})),
            0.0,
        );
        assert!(!verdict.agree);
        assert_eq!(
            verdict.detail.as_deref(),
            Some(r#"output 'result' element 1: "x" vs "z""#)
        );
        assert!(compare(&tree(json!(3.0)), &tree(json!([3.0])), 0.0).agree);
        assert!(!compare(&tree(json!([3.0])), &tree(json!([3.0, 4.0])), 1.0).agree);
        // Deep nesting is walked without recursion.
        let mut deep = json!(1.0);
        for _ in 0..1_000 {
            deep = json!([deep]);
        }
        assert!(compare(&tree(deep.clone()), &tree(deep), 0.0).agree);
    }
}
