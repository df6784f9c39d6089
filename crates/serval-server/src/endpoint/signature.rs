//! An endpoint's V2 model metadata and request checks, fixed when it loads.

use crate::error::Error;
use crate::wire::{Datatype, InferTensor};

/// One input or output in a model's V2 metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorMeta {
    pub name: String,
    pub datatype: Datatype,
    /// -1 is a variable dimension.
    pub shape: Vec<i64>,
}

/// How strictly requests are checked against the declared inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checks {
    /// Names, datatypes and shapes (native models).
    Full,
    /// Names and datatypes (Python endpoints with `--input-name/--input-type`; clearml does not
    /// use `--input-size` at request time either).
    NamesAndTypes,
    /// Nothing declared: any inputs reach the endpoint's code.
    None,
}

/// An endpoint's V2 model metadata and request checks, fixed when it loads.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    /// `<engine>_<format>`, e.g. `xgboost_json`, `onnx_onnxv1`, `python_sklearn`.
    pub platform: String,
    pub inputs: Vec<TensorMeta>,
    pub outputs: Vec<TensorMeta>,
    pub checks: Checks,
    /// Tree models take FP32 and FP64 alike (they declare the one they compute in).
    pub floats_interchangeable: bool,
}

impl Signature {
    /// Checks a request's inputs against the declared ones.
    pub fn check_inputs(&self, model: &str, inputs: &[InferTensor]) -> Result<(), Error> {
        for (i, input) in inputs.iter().enumerate() {
            if inputs[..i].iter().any(|o| o.name == input.name) {
                return Err(Error::BadRequest(format!(
                    "input '{}' is given more than once",
                    input.name
                )));
            }
        }
        if self.checks == Checks::None {
            return Ok(());
        }
        let names = || {
            self.inputs
                .iter()
                .map(|m| format!("'{}'", m.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for input in inputs {
            let Some(meta) = self.inputs.iter().find(|m| m.name == input.name) else {
                return Err(Error::BadRequest(format!(
                    "model '{model}' has no input '{}' (its inputs: {})",
                    input.name,
                    names()
                )));
            };
            let given = input.datatype();
            let float = |d: Datatype| matches!(d, Datatype::Fp32 | Datatype::Fp64);
            let accepted = given == meta.datatype
                || (self.floats_interchangeable && float(given) && float(meta.datatype));
            if !accepted {
                return Err(Error::BadRequest(format!(
                    "input '{}' has datatype {given}, model '{model}' expects {}",
                    input.name, meta.datatype
                )));
            }
            if self.checks == Checks::Full {
                let fits = meta.shape.len() == input.shape.len()
                    && meta
                        .shape
                        .iter()
                        .zip(&input.shape)
                        .all(|(want, got)| *want < 0 || *want as usize == *got);
                if !fits {
                    return Err(Error::BadRequest(format!(
                        "input '{}' has shape {:?}, model '{model}' expects {:?} (-1: any size)",
                        input.name, input.shape, meta.shape
                    )));
                }
            }
        }
        if let Some(missing) = self
            .inputs
            .iter()
            .find(|m| !inputs.iter().any(|i| i.name == m.name))
        {
            return Err(Error::BadRequest(format!(
                "model '{model}' needs input '{}' (its inputs: {})",
                missing.name,
                names()
            )));
        }
        Ok(())
    }
}

/// Keeps the requested outputs (all when `requested` is `None`), in the requested order; an
/// unknown name is the client's error.
pub fn select_outputs(
    model: &str,
    outputs: Vec<InferTensor>,
    requested: Option<&[String]>,
) -> Result<Vec<InferTensor>, Error> {
    let Some(requested) = requested else {
        return Ok(outputs);
    };
    let mut slots: Vec<Option<InferTensor>> = outputs.into_iter().map(Some).collect();
    requested
        .iter()
        .map(|name| {
            let found = slots
                .iter_mut()
                .find(|s| s.as_ref().is_some_and(|t| &t.name == name))
                .and_then(Option::take);
            found
                .ok_or_else(|| Error::BadRequest(format!("model '{model}' has no output '{name}'")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Elements;

    fn signature(checks: Checks) -> Signature {
        Signature {
            platform: "test".into(),
            inputs: vec![TensorMeta {
                name: "input".into(),
                datatype: Datatype::Fp32,
                shape: vec![-1, 4],
            }],
            outputs: vec![],
            checks,
            floats_interchangeable: false,
        }
    }

    #[test]
    fn inputs_are_checked_by_name_datatype_and_shape() {
        let sig = signature(Checks::Full);
        let input = |name: &str, shape: Vec<usize>, data: Elements| InferTensor {
            name: name.into(),
            shape,
            data,
        };
        let good = input("input", vec![2, 4], Elements::F32(vec![0.0; 8]));
        assert!(sig.check_inputs("m", std::slice::from_ref(&good)).is_ok());
        let e = sig
            .check_inputs(
                "m",
                &[input("input", vec![1, 4], Elements::F64(vec![0.0; 4]))],
            )
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("datatype FP64, model 'm' expects FP32"),
            "{e}"
        );
        let e = sig
            .check_inputs(
                "m",
                &[input("input", vec![1, 3], Elements::F32(vec![0.0; 3]))],
            )
            .unwrap_err();
        assert!(e.to_string().contains("shape [1, 3]"), "{e}");
        let e = sig
            .check_inputs(
                "m",
                &[input("other", vec![1, 4], Elements::F32(vec![0.0; 4]))],
            )
            .unwrap_err();
        assert!(e.to_string().contains("no input 'other'"), "{e}");
        assert!(
            sig.check_inputs("m", &[])
                .unwrap_err()
                .to_string()
                .contains("needs input")
        );
        assert!(
            sig.check_inputs("m", &[good.clone(), good.clone()])
                .is_err()
        );
        // Names and types only: any shape.
        let sig = signature(Checks::NamesAndTypes);
        let any_shape = input("input", vec![3], Elements::F32(vec![0.0; 3]));
        assert!(sig.check_inputs("m", &[any_shape]).is_ok());
        // Trees take either float type.
        let mut sig = signature(Checks::Full);
        sig.floats_interchangeable = true;
        let f64s = input("input", vec![1, 4], Elements::F64(vec![0.0; 4]));
        assert!(sig.check_inputs("m", &[f64s]).is_ok());
    }

    #[test]
    fn requested_outputs_are_selected_in_order() {
        let t = |n: &str| InferTensor {
            name: n.into(),
            shape: vec![1],
            data: Elements::I64(vec![1]),
        };
        let picked = select_outputs("m", vec![t("a"), t("b")], Some(&["b".to_string()])).unwrap();
        assert_eq!(picked, vec![t("b")]);
        assert_eq!(
            select_outputs("m", vec![t("a")], None).unwrap(),
            vec![t("a")]
        );
        let e = select_outputs("m", vec![t("a")], Some(&["z".to_string()])).unwrap_err();
        assert!(e.to_string().contains("no output 'z'"), "{e}");
    }
}
