//! The example body of the console's "Try it" form, built from an endpoint's metadata.

use serde_json::{Map, Value, json};

use crate::pipeline::{Endpoint, Runner};
use crate::wire::Datatype;

/// Largest example body the "try it" form is prefilled with (values).
const EXAMPLE_VALUES: usize = 4_096;

/// A value of a datatype for an example body.
fn zero(datatype: Datatype) -> Value {
    match datatype {
        Datatype::Bytes => json!(""),
        Datatype::Bool => json!(false),
        Datatype::Fp16 | Datatype::Bf16 | Datatype::Fp32 | Datatype::Fp64 => json!(0.0),
        _ => json!(0),
    }
}

/// A nested list of `shape` (a variable dimension taken as 1) filled with `value`.
fn filled(shape: &[i64], value: &Value) -> Value {
    match shape.split_first() {
        None => value.clone(),
        Some((dim, rest)) => {
            let n = usize::try_from(*dim).ok().filter(|n| *n > 0).unwrap_or(1);
            Value::Array(vec![filled(rest, value); n])
        }
    }
}

/// A `/serve` body that is valid for the endpoint, built from its metadata (`None` when only its
/// Python code knows what it reads), with a note on how it was made.
pub(super) fn example(endpoint: &Endpoint) -> (Option<Value>, &'static str) {
    let inputs = &endpoint.signature.inputs;
    let values = |shape: &[i64]| -> usize {
        shape
            .iter()
            .map(|d| usize::try_from(*d).ok().filter(|n| *n > 0).unwrap_or(1))
            .product()
    };
    if !matches!(endpoint.runner, Runner::Native(_)) || inputs.is_empty() {
        if endpoint.input_names.is_empty() {
            return (
                None,
                "this endpoint's preprocess code decides what a request holds: write the body it expects",
            );
        }
        let body: Map<String, Value> = endpoint
            .input_names
            .iter()
            .map(|n| (n.clone(), json!(0)))
            .collect();
        return (
            Some(Value::Object(body)),
            "one value per --input-name; its preprocess code decides what a request holds",
        );
    }
    if inputs.iter().map(|i| values(&i.shape)).sum::<usize>() > EXAMPLE_VALUES {
        return (None, "the model's inputs are too large for an example body");
    }
    if let [input] = inputs.as_slice()
        && input.shape.len() == 2
    {
        return (
            Some(json!({ "instances": filled(&input.shape, &zero(input.datatype)) })),
            "one row of zeros, in column order",
        );
    }
    let body: Map<String, Value> = inputs
        .iter()
        .map(|i| (i.name.clone(), filled(&i.shape, &zero(i.datatype))))
        .collect();
    (
        Some(Value::Object(body)),
        "each input filled with zeros (a variable dimension as 1)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_shapes_follow_the_metadata() {
        assert_eq!(filled(&[-1, 3], &json!(0.0)), json!([[0.0, 0.0, 0.0]]));
        assert_eq!(filled(&[2], &json!(0)), json!([0, 0]));
        assert_eq!(filled(&[], &json!(false)), json!(false));
    }
}
