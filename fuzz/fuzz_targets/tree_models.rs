//! XGBoost (JSON and UBJSON) and LightGBM (text) model files: a damaged file is a load error, and
//! a model that loads answers a row without panicking or looping.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serval_engine::{NamedTensor, Tensor, TensorData};
use serval_store::EngineKind;

fuzz_target!(|data: &[u8]| {
    for kind in [EngineKind::Xgboost, EngineKind::Lightgbm] {
        let Ok(engine) = serval_core::load_engine(kind, data, "fuzz", &Default::default()) else {
            continue;
        };
        let width = engine.metadata().num_features().unwrap_or(4).min(4096);
        let Ok(tensor) = Tensor::new(vec![2, width], TensorData::F32(vec![0.5; 2 * width])) else {
            continue;
        };
        let _ = engine.infer(&[NamedTensor {
            name: "input".into(),
            tensor,
        }]);
    }
});
