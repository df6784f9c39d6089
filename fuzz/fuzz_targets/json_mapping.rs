//! The default request mapping (clearml JSON bodies → tensors → a tree model → the reply) on an
//! XGBoost iris classifier: any JSON either maps or is refused with an error, never a panic.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use serval_engine::Engine;
use serval_store::EngineKind;

fn model() -> &'static Arc<dyn Engine> {
    static MODEL: OnceLock<Arc<dyn Engine>> = OnceLock::new();
    MODEL.get_or_init(|| {
        let bytes = include_bytes!("../../fixtures/public/xgb_multi_iris.json");
        serval_core::load_engine(EngineKind::Xgboost, bytes, "iris", &Default::default())
            .expect("the fixture loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice(data) else {
        return;
    };
    let engine = model();
    let meta = engine.metadata();
    let names = ["x0", "x1", "x2", "x3"].map(String::from);
    for input_names in [&[][..], &names[..]] {
        if let Ok(inputs) = serval_core::request_to_inputs(&body, meta, input_names)
            && let Ok(outputs) = engine.infer(&inputs)
        {
            let _ = serval_core::reply_from_outputs(meta, &outputs);
        }
    }
});
