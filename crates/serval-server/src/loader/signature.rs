//! An endpoint's V2 model metadata and input checks, fixed when it loads: native models from
//! their engine (tree engines: `input`; ONNX: the graph's names and types), Python endpoints
//! from the clearml io flags.

use serval_engine::{NamedOutput, OutputValue};
use serval_store::{Endpoint, EngineKind};

use crate::endpoint::{Checks, NativeModel, Signature, TensorMeta};
use crate::wire::Datatype;

fn dims(shape: &[Option<usize>]) -> Vec<i64> {
    shape
        .iter()
        .map(|d| d.map_or(-1, |d| i64::try_from(d).unwrap_or(-1)))
        .collect()
}

/// `<engine>_<format>` of a native model, from its engine's format description.
fn platform(kind: EngineKind, format: &str) -> String {
    match kind {
        EngineKind::Xgboost if format.contains("ubjson") => "xgboost_ubjson".to_string(),
        EngineKind::Xgboost => "xgboost_json".to_string(),
        EngineKind::Lightgbm => "lightgbm_text".to_string(),
        EngineKind::Onnx => "onnx_onnxv1".to_string(),
        other => format!("{other}_native"),
    }
}

/// A native model's signature. `warm` is the warm-up prediction, which gives the number of
/// classes of a ZipMap output (a sequence of maps, exposed as FP32 `[-1, classes]`).
pub fn native(kind: EngineKind, model: &NativeModel, warm: Option<&[NamedOutput]>) -> Signature {
    let meta = model.metadata();
    let inputs = meta
        .inputs
        .iter()
        .map(|spec| TensorMeta {
            name: spec.name.clone(),
            datatype: Datatype::of_engine(spec.dtype),
            shape: dims(&spec.shape),
        })
        .collect();
    let outputs = meta
        .outputs
        .iter()
        .map(|spec| {
            let warmed = warm.and_then(|w| w.iter().find(|o| o.name == spec.name));
            match warmed.map(|o| &o.value) {
                Some(OutputValue::Maps(rows)) => TensorMeta {
                    name: spec.name.clone(),
                    datatype: Datatype::Fp32,
                    shape: vec![-1, rows.first().map_or(-1, |r| r.len() as i64)],
                },
                _ => TensorMeta {
                    name: spec.name.clone(),
                    datatype: Datatype::of_engine(spec.dtype),
                    shape: dims(&spec.shape),
                },
            }
        })
        .collect();
    Signature {
        platform: platform(kind, &meta.format),
        inputs,
        outputs,
        checks: Checks::Full,
        floats_interchangeable: matches!(kind, EngineKind::Xgboost | EngineKind::Lightgbm),
    }
}

fn declared(names: &[String], types: &[String], sizes: &[Vec<i64>]) -> Vec<TensorMeta> {
    names
        .iter()
        .enumerate()
        .map(|(i, name)| TensorMeta {
            name: name.clone(),
            datatype: types
                .get(i)
                .and_then(|t| Datatype::from_numpy(t))
                .unwrap_or(Datatype::Fp32),
            shape: sizes.get(i).cloned().unwrap_or_else(|| vec![-1]),
        })
        .collect()
}

/// A Python endpoint's signature, from `--input-name/--input-type/--input-size` and the
/// `--output-*` flags. Inputs are checked by name and datatype when every input name has a
/// known type; without names, any inputs reach the code.
pub fn python(endpoint: &Endpoint) -> Signature {
    let io = &endpoint.io;
    let typed = !io.input_name.is_empty()
        && io.input_type.len() == io.input_name.len()
        && io
            .input_type
            .iter()
            .all(|t| Datatype::from_numpy(t).is_some());
    Signature {
        platform: format!("python_{}", endpoint.engine),
        inputs: declared(&io.input_name, &io.input_type, &io.input_size),
        outputs: declared(&io.output_name, &io.output_type, &io.output_size),
        checks: if typed {
            Checks::NamesAndTypes
        } else {
            Checks::None
        },
        floats_interchangeable: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serval_store::IoSpec;

    #[test]
    fn python_signatures_come_from_the_io_flags() {
        let mut endpoint = Endpoint {
            name: "digits".into(),
            version: None,
            engine: EngineKind::Custom,
            model_id: None,
            preprocess: None,
            io: IoSpec::default(),
            aux_config: None,
            created_ms: 0,
        };
        let open = python(&endpoint);
        assert_eq!(open.checks, Checks::None);
        assert!(open.inputs.is_empty());
        assert_eq!(open.platform, "python_custom");
        endpoint.io = IoSpec {
            input_name: vec!["INPUT__0".into()],
            input_type: vec!["float32".into()],
            input_size: vec![vec![1, 28, 28]],
            output_name: vec!["OUTPUT__0".into()],
            output_type: vec!["float32".into()],
            output_size: vec![vec![-1, 10]],
        };
        let sig = python(&endpoint);
        assert_eq!(sig.checks, Checks::NamesAndTypes);
        assert_eq!(
            sig.inputs,
            vec![TensorMeta {
                name: "INPUT__0".into(),
                datatype: Datatype::Fp32,
                shape: vec![1, 28, 28],
            }]
        );
        assert_eq!(sig.outputs[0].shape, vec![-1, 10]);
    }
}
