//! Invariants over random inputs: evaluators never panic, a row predicts the same alone or in a
//! batch, and damaged model files fail to load with an error instead of a panic.

use proptest::prelude::*;
use serval_trees::{LightgbmEngine, XgboostEngine};

use crate::fixtures;

fn xgb(file: &str) -> XgboostEngine {
    XgboostEngine::load(&std::fs::read(fixtures().join(file)).unwrap()).unwrap()
}

fn lgb(file: &str) -> LightgbmEngine {
    LightgbmEngine::load(&std::fs::read(fixtures().join(file)).unwrap()).unwrap()
}

fn feature() -> impl Strategy<Value = f32> {
    prop_oneof![
        -10.0f32..10.0,
        -1e6f32..1e6,
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(0.0),
        Just(-0.0),
        (0u32..40).prop_map(|c| c as f32),
    ]
}

fn rows(width: usize) -> impl Strategy<Value = Vec<Vec<f32>>> {
    prop::collection::vec(prop::collection::vec(feature(), width), 1..40)
}

fn check_batch_invariance<T: PartialEq + std::fmt::Debug + Copy>(
    batch: &[Vec<f32>],
    groups: usize,
    predict: impl Fn(&[f32], usize) -> Vec<T>,
) {
    let flat: Vec<f32> = batch.iter().flatten().copied().collect();
    let together = predict(&flat, batch.len());
    assert_eq!(together.len(), batch.len() * groups);
    for (i, row) in batch.iter().enumerate() {
        let alone = predict(row, 1);
        let same = alone
            .iter()
            .zip(&together[i * groups..(i + 1) * groups])
            .all(|(a, b)| {
                // NaN compares unequal to itself; treat NaN == NaN here.
                format!("{a:?}") == format!("{b:?}")
            });
        assert!(
            same,
            "row {i}: alone {alone:?} vs in batch {:?}",
            &together[i * groups..(i + 1) * groups]
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn xgboost_rows_predict_the_same_alone_or_batched(batch in rows(4)) {
        let engine = xgb("xgb_multi_iris.json");
        check_batch_invariance(&batch, 3, |x, n| engine.predict(x, n));
    }

    #[test]
    fn xgboost_binary_never_panics(batch in rows(30)) {
        let engine = xgb("xgb_bin_breast_cancer.ubj");
        check_batch_invariance(&batch, 1, |x, n| engine.predict(x, n));
    }

    #[test]
    fn lightgbm_rows_predict_the_same_alone_or_batched(batch in rows(4)) {
        let engine = lgb("lgbm_multi_iris.txt");
        let widen = |x: &[f32]| x.iter().map(|v| f64::from(*v)).collect::<Vec<_>>();
        check_batch_invariance(&batch, 3, |x, n| engine.predict(&widen(x), n));
    }

    #[test]
    fn lightgbm_regression_never_panics(batch in rows(10)) {
        let engine = lgb("lgbm_reg_diabetes.txt");
        let widen = |x: &[f32]| x.iter().map(|v| f64::from(*v)).collect::<Vec<_>>();
        check_batch_invariance(&batch, 1, |x, n| engine.predict(&widen(x), n));
    }

    #[test]
    fn damaged_xgboost_files_fail_cleanly(cut in 0usize..100_000, flips in prop::collection::vec((0usize..100_000, any::<u8>()), 0..8)) {
        for file in ["xgb_multi_iris.ubj", "xgb_multi_iris.json"] {
            let mut bytes = std::fs::read(fixtures().join(file)).unwrap();
            for (pos, byte) in &flips {
                let len = bytes.len();
                bytes[pos % len] = *byte;
            }
            bytes.truncate(cut.min(bytes.len()));
            if let Ok(engine) = XgboostEngine::load(&bytes) {
                let _ = engine.predict(&[1.0, 2.0, 3.0, 4.0], 1);
            }
        }
    }

    #[test]
    fn damaged_lightgbm_files_fail_cleanly(cut in 0usize..100_000, flips in prop::collection::vec((0usize..100_000, any::<u8>()), 0..8)) {
        let mut bytes = std::fs::read(fixtures().join("lgbm_multi_iris.txt")).unwrap();
        for (pos, byte) in &flips {
            let len = bytes.len();
            bytes[pos % len] = *byte;
        }
        bytes.truncate(cut.min(bytes.len()));
        if let Ok(engine) = LightgbmEngine::load(&bytes) {
            let _ = engine.predict(&[1.0, 2.0, 3.0, 4.0], 1);
        }
    }

    #[test]
    fn random_bytes_never_panic_loaders(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = XgboostEngine::load(&bytes);
        let _ = LightgbmEngine::load(&bytes);
        let mut ubj = vec![b'{'];
        ubj.extend(&bytes);
        let _ = XgboostEngine::load(&ubj);
    }
}
