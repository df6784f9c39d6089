//! `predict`: one request through a native engine, locally, without a store or a server.

use anyhow::{Context as _, Result, anyhow};
use serval_core::{ModelFormat, load_engine, reply_from_outputs, request_to_inputs};
use serval_onnx::OnnxOptions;

use crate::cli::PredictArgs;

/// Reads `--input`: JSON text, or `@path`.
fn read_body(input: &str) -> Result<serde_json::Value> {
    let (text, source) = match input.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path)
                .with_context(|| format!("reading --input file '{path}'"))?,
            format!("'{path}'"),
        ),
        None => (input.to_string(), "--input".to_string()),
    };
    serde_json::from_str(&text).map_err(|e| anyhow!("{source} is not valid JSON: {e}"))
}

pub fn predict(args: &PredictArgs) -> Result<()> {
    let name = args.model.display().to_string();
    let bytes =
        std::fs::read(&args.model).map_err(|e| anyhow!("cannot read model file '{name}': {e}"))?;
    let body = read_body(&args.input)?;
    let engine_kind = match args.engine {
        Some(kind) => kind,
        None => {
            let format = ModelFormat::detect(&bytes);
            format
                .native_engine()
                .ok_or_else(|| match format {
                    ModelFormat::Pickle => anyhow!(
                        "{name} is {format}: it runs in a Python worker (sklearn engine), not in `serval predict`"
                    ),
                    _ => anyhow!("{name} is {format}: pass --engine xgboost, lightgbm or onnx"),
                })?
        }
    };
    let options = OnnxOptions {
        library: args.onnxruntime_lib.clone(),
        python: args.python.clone(),
        intra_threads: args.threads,
    };
    let engine = load_engine(engine_kind, &bytes, &name, &options)?;
    let inputs = request_to_inputs(&body, engine.metadata(), &args.input_name)?;
    let outputs = engine.infer(&inputs)?;
    let reply = reply_from_outputs(engine.metadata(), &outputs)?;
    println!("{}", serde_json::to_string(&reply)?);
    Ok(())
}
