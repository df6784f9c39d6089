//! Single-row latency and 1,000-row throughput of the native tree evaluators and of their
//! TreeSHAP explanations, on the fixture models. Compare with `bench/python_predict.py` (and its
//! `--explain`): the libraries' own, one thread.
//! Run: `cargo bench -p serval-trees --bench trees` (explanations only: `-- explain`).
//! `SERVAL_BENCH_MODELS=DIR` adds the iris models of `bench/front_door.sh` (its work folder's
//! `bench/models`: `xgb_iris.json`, `lgbm_iris.txt`, 100 rounds × 3 classes) as `front_door_*`.

use std::path::Path;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serval_trees::{LightgbmEngine, XgboostEngine};

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/public")
}

/// The fixture batch of a dataset (64 rows, NaN as missing), repeated to `rows` rows.
fn rows(dataset: &str, rows: usize) -> (Vec<f32>, usize) {
    let refs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("refs.json")).expect("refs"))
            .expect("json");
    let batch = &refs["inputs"][dataset]["batch"];
    let width = batch["shape"][1].as_u64().expect("width") as usize;
    let flat: Vec<f32> = batch["data"]
        .as_array()
        .expect("rows")
        .iter()
        .flat_map(|r| {
            r.as_array()
                .expect("row")
                .iter()
                .map(|v| v.as_f64().map_or(f32::NAN, |f| f as f32))
        })
        .collect();
    let data = flat.iter().copied().cycle().take(rows * width).collect();
    (data, width)
}

const MODELS: [(&str, &str, &str); 6] = [
    ("xgb_reg_diabetes", "xgb_reg_diabetes.json", "diabetes"),
    (
        "xgb_bin_breast_cancer",
        "xgb_bin_breast_cancer.json",
        "breast_cancer",
    ),
    ("xgb_multi_iris", "xgb_multi_iris.json", "iris"),
    ("lgbm_reg_diabetes", "lgbm_reg_diabetes.txt", "diabetes"),
    (
        "lgbm_bin_breast_cancer",
        "lgbm_bin_breast_cancer.txt",
        "breast_cancer",
    ),
    ("lgbm_multi_iris", "lgbm_multi_iris.txt", "iris"),
];

fn bench(c: &mut Criterion) {
    let mut models: Vec<(String, std::path::PathBuf, &str)> = MODELS
        .iter()
        .map(|(name, file, dataset)| (name.to_string(), fixtures().join(file), *dataset))
        .collect();
    if let Some(dir) = std::env::var_os("SERVAL_BENCH_MODELS") {
        let dir = Path::new(&dir);
        models.push((
            "front_door_xgb_iris".into(),
            dir.join("xgb_iris.json"),
            "iris",
        ));
        models.push((
            "front_door_lgbm_iris".into(),
            dir.join("lgbm_iris.txt"),
            "iris",
        ));
    }
    for (name, file, dataset) in models {
        let name = name.as_str();
        let bytes = std::fs::read(&file).expect("model");
        let (one, _) = rows(dataset, 1);
        let (thousand, _) = rows(dataset, 1000);
        let mut group = c.benchmark_group(name);
        if name.contains("xgb") {
            let engine = XgboostEngine::load(&bytes).expect("load");
            group.bench_function("single_row", |b| {
                b.iter(|| engine.predict(std::hint::black_box(&one), 1))
            });
            // One row at a time, a different row each call (the fixture batch's 64 in turn):
            // which way a row goes cannot be learnt, as on a server.
            let width = thousand.len() / 1000;
            let mut next = (0..64).cycle();
            group.bench_function("single_row_varied", |b| {
                b.iter(|| {
                    let r = next.next().unwrap_or(0);
                    engine.predict(
                        std::hint::black_box(&thousand[r * width..(r + 1) * width]),
                        1,
                    )
                })
            });
            group.throughput(Throughput::Elements(1000));
            group.bench_with_input(BenchmarkId::new("rows", 1000), &thousand, |b, x| {
                b.iter(|| engine.predict(x, 1000))
            });
        } else {
            let engine = LightgbmEngine::load(&bytes).expect("load");
            let one: Vec<f64> = one.iter().map(|v| f64::from(*v)).collect();
            let thousand: Vec<f64> = thousand.iter().map(|v| f64::from(*v)).collect();
            group.bench_function("single_row", |b| {
                b.iter(|| engine.predict(std::hint::black_box(&one), 1))
            });
            let width = thousand.len() / 1000;
            let mut next = (0..64).cycle();
            group.bench_function("single_row_varied", |b| {
                b.iter(|| {
                    let r = next.next().unwrap_or(0);
                    engine.predict(
                        std::hint::black_box(&thousand[r * width..(r + 1) * width]),
                        1,
                    )
                })
            });
            group.throughput(Throughput::Elements(1000));
            group.bench_with_input(BenchmarkId::new("rows", 1000), &thousand, |b, x| {
                b.iter(|| engine.predict(x, 1000))
            });
        }
        group.finish();
        // Explanations (TreeSHAP contributions).
        let mut group = c.benchmark_group(format!("{name}/explain"));
        if name.contains("xgb") {
            let model = XgboostEngine::load(&bytes).expect("load");
            let model = model.model();
            group.bench_function("single_row", |b| {
                b.iter(|| model.explain(std::hint::black_box(&one), 1))
            });
            group.throughput(Throughput::Elements(1000));
            group.bench_with_input(BenchmarkId::new("rows", 1000), &thousand, |b, x| {
                b.iter(|| model.explain(x, 1000))
            });
        } else {
            let model = LightgbmEngine::load(&bytes).expect("load");
            let model = model.model();
            let one: Vec<f64> = one.iter().map(|v| f64::from(*v)).collect();
            let thousand: Vec<f64> = thousand.iter().map(|v| f64::from(*v)).collect();
            group.bench_function("single_row", |b| {
                b.iter(|| model.explain(std::hint::black_box(&one), 1))
            });
            group.throughput(Throughput::Elements(1000));
            group.bench_with_input(BenchmarkId::new("rows", 1000), &thousand, |b, x| {
                b.iter(|| model.explain(x, 1000))
            });
        }
        group.finish();
    }
}

criterion_group! {
    name = trees;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(30);
    targets = bench
}
criterion_main!(trees);
