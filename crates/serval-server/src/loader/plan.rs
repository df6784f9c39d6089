//! What loading an endpoint will do, decided from its configuration alone — no file read, no
//! process started — so that every combination of engine, model, code, forwarding and batching
//! is checked as a table ([`plan`]'s tests). [`super::Loader::load`] then executes the plan; what
//! only the files can tell (a `triton` file's format, a scikit-learn model simple enough to run
//! in the server) is decided there.

use serval_store::{Endpoint, EngineKind};

use super::LoadError;
use super::python::needs_python;

/// Where an endpoint's model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// No model: the endpoint's code is all there is.
    None,
    /// In the server (XGBoost, LightGBM, ONNX): the file is read and checked here.
    Native,
    /// A `triton` model file: ONNX in the server, other formats with their library in the
    /// workers — told by the file's content.
    Triton,
    /// In the workers (a scikit-learn pickle, a custom engine's model): the file is checked here
    /// and loaded there.
    Python,
}

/// What loading an endpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// A `triton` endpoint forwarded to a V2 gRPC server; `python`: its code runs in workers
    /// around the call.
    Forward { python: bool },
    /// Load the model where it runs; `python`: start workers (the endpoint has code, or its
    /// engine runs in Python).
    Load { model: Model, python: bool },
}

/// The plan for `endpoint`: `forward` when it goes to a V2 gRPC server (`--triton-grpc-server`),
/// `batching` when its aux configuration turns dynamic batching on. Errors are the endpoint's
/// configuration's: nothing about them changes until the endpoint does.
pub fn plan(endpoint: &Endpoint, forward: bool, batching: bool) -> Result<Plan, LoadError> {
    let python = needs_python(endpoint);
    let has_model = endpoint.model_id.is_some();
    let model = match endpoint.engine {
        EngineKind::Xgboost | EngineKind::Lightgbm | EngineKind::Onnx => Model::Native,
        EngineKind::Triton if forward => return Ok(Plan::Forward { python }),
        EngineKind::Triton if has_model => Model::Triton,
        EngineKind::Triton if endpoint.preprocess.is_some() => Model::None,
        EngineKind::Triton => {
            return Err(LoadError::NoModel {
                engine: endpoint.engine,
                hint: " (or preprocess code whose Preprocess.process runs it)",
            });
        }
        EngineKind::Sklearn => Model::Python,
        EngineKind::Custom | EngineKind::CustomAsync if has_model => Model::Python,
        EngineKind::Custom | EngineKind::CustomAsync => Model::None,
    };
    if matches!(model, Model::Native | Model::Python) && !has_model {
        return Err(LoadError::NoModel {
            engine: endpoint.engine,
            hint: "",
        });
    }
    // Batching merges rows for a model the server runs; a `triton` model run by its library in
    // Python leaves batching to the server Triton would be.
    if batching && matches!(model, Model::Python | Model::None) {
        return Err(LoadError::Batching(format!(
            "dynamic batching merges rows for a native model (xgboost, lightgbm, onnx, or the \
             native model between preprocess and postprocess); engine '{}' runs its model in \
             Python workers: remove --max-batch-size / the dynamic_batching keys",
            endpoint.engine
        )));
    }
    Ok(Plan::Load { model, python })
}

#[cfg(test)]
mod tests {
    use serval_store::{CodeKind, CodeRef, IoSpec};

    use super::*;

    fn endpoint(engine: EngineKind, model: bool, code: bool) -> Endpoint {
        Endpoint {
            name: "e".into(),
            version: None,
            engine,
            model_id: model.then(|| "m".to_string()),
            preprocess: code.then(|| CodeRef {
                kind: CodeKind::File,
                uri: "file:///p.py".into(),
                sha256: "0".into(),
                name: "p.py".into(),
            }),
            io: IoSpec::default(),
            aux_config: None,
            created_ms: 0,
        }
    }

    /// engine, model, code, forward, batching → the plan or the error's kind.
    type Case = (
        EngineKind,
        bool,
        bool,
        bool,
        bool,
        Result<Plan, &'static str>,
    );

    /// Every engine with and without a model and code, forwarded or not, batched or not.
    #[test]
    fn every_configuration_has_a_plan_or_a_reason() {
        use EngineKind::*;
        let load = |model, python| Ok(Plan::Load { model, python });
        let cases: &[Case] = &[
            (
                Xgboost,
                true,
                false,
                false,
                false,
                load(Model::Native, false),
            ),
            (Lightgbm, true, true, false, true, load(Model::Native, true)),
            (Onnx, true, false, false, true, load(Model::Native, false)),
            (Onnx, false, false, false, false, Err("no model")),
            (Triton, true, false, false, true, load(Model::Triton, false)),
            (Triton, true, true, false, false, load(Model::Triton, true)),
            (Triton, false, true, false, false, load(Model::None, true)),
            (Triton, false, false, false, false, Err("no model")),
            (
                Triton,
                false,
                false,
                true,
                false,
                Ok(Plan::Forward { python: false }),
            ),
            (
                Triton,
                true,
                true,
                true,
                false,
                Ok(Plan::Forward { python: true }),
            ),
            (
                Sklearn,
                true,
                false,
                false,
                false,
                load(Model::Python, true),
            ),
            (Sklearn, false, true, false, false, Err("no model")),
            (Sklearn, true, true, false, true, Err("batching")),
            (Custom, false, true, false, false, load(Model::None, true)),
            (Custom, true, true, false, false, load(Model::Python, true)),
            (CustomAsync, false, true, false, true, Err("batching")),
        ];
        for (engine, model, code, forward, batching, expected) in cases {
            let got = plan(&endpoint(*engine, *model, *code), *forward, *batching);
            let got = got.map_err(|e| match e {
                LoadError::NoModel { .. } => "no model",
                LoadError::Batching(_) => "batching",
                other => panic!("{other}"),
            });
            assert_eq!(
                &got, expected,
                "{engine} model={model} code={code} forward={forward} batching={batching}"
            );
        }
    }

    #[test]
    fn the_reasons_name_what_is_missing() {
        let error = plan(&endpoint(EngineKind::Triton, false, false), false, false).unwrap_err();
        assert!(error.to_string().contains("preprocess code"), "{error}");
        let error = plan(&endpoint(EngineKind::Custom, false, true), false, true).unwrap_err();
        assert!(error.to_string().contains("engine 'custom'"), "{error}");
    }
}
