//! The default request mapping (clearml JSON bodies → tensors → a tree model → the reply) on an
//! XGBoost iris classifier: any JSON either maps or is refused with an error, never a panic; and
//! the typed rows parser agrees with the tree path on every body it reads (differential), with
//! objects of named features read too and not.
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
    let engine = model();
    let meta = engine.metadata();
    let names = ["x0", "x1", "x2", "x3"].map(String::from);
    let body = serde_json::from_slice(data).ok();
    for named in [None, Some(&[][..]), Some(&names[..])] {
        let typed = serval_core::rows::parse_rows(data, meta, named);
        let Some(body) = &body else {
            assert!(
                !matches!(
                    typed,
                    serval_core::rows::Parsed::Rows(_) | serval_core::rows::Parsed::Invalid(_)
                ),
                "the typed parser read a body that is not JSON"
            );
            continue;
        };
        let tree = serval_core::request_to_inputs(body, meta, named.unwrap_or_default());
        match (typed, &tree) {
            (serval_core::rows::Parsed::Rows(rows), Ok(inputs)) => {
                assert_eq!(format!("{:?}", [rows]), format!("{inputs:?}"))
            }
            (serval_core::rows::Parsed::Invalid(message), Err(error)) => {
                assert_eq!(
                    serval_engine::EngineError::InvalidInput(message).to_string(),
                    error.to_string()
                )
            }
            (serval_core::rows::Parsed::Other, _) => {}
            (typed, tree) => panic!("typed {typed:?}, tree {tree:?}"),
        }
    }
    let Some(body) = body else {
        return;
    };
    for input_names in [&[][..], &names[..]] {
        if let Ok(inputs) = serval_core::request_to_inputs(&body, meta, input_names)
            && let Ok(outputs) = engine.infer(&inputs)
        {
            let tree = serval_core::reply_from_outputs(meta, &outputs).expect("a reply");
            let direct = serval_core::reply_json(meta, &outputs).expect("a reply");
            assert_eq!(serde_json::to_vec(&tree).expect("JSON"), direct);
        }
    }
});
