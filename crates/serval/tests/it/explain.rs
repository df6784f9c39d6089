//! Explanations over every protocol: the same request asked with `?explain=true` (clearml
//! `/serve`), `parameters.explain` over V2 REST and over gRPC (NVIDIA's tritonclient) gives the
//! same contributions — XGBoost in FP32, LightGBM in FP64, each library's layout — summing to the
//! margin; a batched endpoint explains too; endpoints that cannot explain answer 400 with why.

use serde_json::Value;

use crate::Home;
use crate::serve::Server;

const PROTOCOLS: &str = r#"
import json, sys, urllib.request, urllib.error
import numpy as np
import tritonclient.grpc as grpcclient

base, grpc_address = sys.argv[1], sys.argv[2]
rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 2.9, 4.3, 1.3]]

def post(path, body):
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())

out = {}
client = grpcclient.InferenceServerClient(grpc_address)
for endpoint, datatype in [("xgb", "FP32"), ("lgbm", "FP64"), ("lgbm-batched", "FP64")]:
    clearml = post(f"/serve/{endpoint}?explain=true", {"instances": [[None if v != v else v for v in r] for r in rows]})
    v2_body = {"inputs": [{"name": "input", "shape": [3, 4], "datatype": datatype,
                           "data": [None if v != v else v for r in rows for v in r]}],
               "parameters": {"explain": True}}
    rest = post(f"/v2/models/{endpoint}/infer", v2_body)
    # Asking for one output by name still brings the explanation.
    rest_named = post(f"/v2/models/{endpoint}/infer", {**v2_body, "outputs": [{"name": rest[1]["outputs"][0]["name"]}]})
    x = np.array(rows, dtype=np.float32 if datatype == "FP32" else np.float64)
    tensor = grpcclient.InferInput("input", list(x.shape), datatype)
    tensor.set_data_from_numpy(x)
    reply = client.infer(endpoint, [tensor], parameters={"explain": True})
    grpc = reply.as_numpy("contributions")
    out[endpoint] = {
        "clearml": clearml,
        "rest": rest,
        "rest_named": [o["name"] for o in rest_named[1]["outputs"]],
        "grpc": {"shape": list(grpc.shape), "dtype": str(grpc.dtype), "data": grpc.ravel().tolist()},
    }
out["refused"] = {
    "onnx": post("/serve/onnx?explain=true", {"instances": [[5.1, 3.5, 1.4, 0.2]]}),
    "python": post("/serve/python?explain=true", {"x0": 1, "x1": 2}),
    "bad_flag": post("/serve/xgb?explain=maybe", {"instances": [[5.1, 3.5, 1.4, 0.2]]}),
    "bad_parameter": post("/v2/models/xgb/infer", {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}], "parameters": {"explain": "yes"}}),
    "plain": post("/serve/xgb", {"instances": [[5.1, 3.5, 1.4, 0.2]]}),
    # 30 rows × 3 classes × 5 = 450 values: more than --max-values 400 allows, refused before.
    "too_many": post("/serve/xgb?explain=true", {"instances": [[5.1, 3.5, 1.4, 0.2]] * 30}),
}
out["python"] = {
    "explained": post("/serve/lgbm-python?explain=true", {"row": rows[1]}),
    "plain": post("/serve/lgbm-python", {"row": rows[1]}),
}
with urllib.request.urlopen(base + "/metrics") as r:
    out["metrics"] = r.read().decode()
print(json.dumps(out))
"#;

fn flat(value: &Value) -> Vec<f64> {
    let mut out = Vec::new();
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items.iter().rev()),
            Value::Null => out.push(f64::NAN),
            other => out.push(other.as_f64().unwrap()),
        }
    }
    out
}

#[test]
fn explanations_agree_across_protocols_and_refusals_say_why() {
    let home = Home::new();
    home.service("explain");
    let xgb = home.upload("iris-xgb", "xgb_multi_iris.json", &[]);
    let lgbm = home.upload("iris-lgbm", "lgbm_multi_iris.txt", &[]);
    let onnx = home.upload("iris-onnx", "sklearn_logreg_iris.onnx", &[]);
    for (endpoint, engine, model, extra) in [
        ("xgb", "xgboost", &xgb, vec![]),
        ("lgbm", "lightgbm", &lgbm, vec![]),
        (
            "lgbm-batched",
            "lightgbm",
            &lgbm,
            vec!["--max-batch-size", "8"],
        ),
        ("onnx", "onnx", &onnx, vec![]),
    ] {
        let mut args = vec![
            "model",
            "add",
            "--engine",
            engine,
            "--endpoint",
            endpoint,
            "--model-id",
            model,
        ];
        args.extend(extra);
        home.ok(&args);
    }
    home.add_custom(
        "python",
        &home.write("python/preprocess.py", crate::PREPROCESS),
    );
    // Python code around a native model: postprocess gets the explanation in its state.
    let code = home.write(
        "lgbm-python/preprocess.py",
        "class Preprocess:\n\
         \x20   def preprocess(self, body, state, collect_custom_statistics_fn=None):\n\
         \x20       return [body['row']]\n\
         \x20   def postprocess(self, data, state, collect_custom_statistics_fn=None):\n\
         \x20       why = state.get('contributions')\n\
         \x20       return {'explained': None if why is None else why.tolist()}\n",
    );
    home.ok(&[
        "model",
        "add",
        "--engine",
        "lightgbm",
        "--endpoint",
        "lgbm-python",
        "--model-id",
        &lgbm,
        "--preprocess",
        code.to_str().unwrap(),
    ]);
    let server = Server::start_with(&home, &["--max-values", "400"]);
    let out = crate::python_script(PROTOCOLS, &[&server.base, &server.grpc]);
    let out: Value = serde_json::from_str(&out).unwrap();

    for (endpoint, datatype, width) in [
        ("xgb", "FP32", 3),
        ("lgbm", "FP64", 15),
        ("lgbm-batched", "FP64", 15),
    ] {
        let got = &out[endpoint];
        let (status, clearml) = (&got["clearml"][0], &got["clearml"][1]);
        assert_eq!(status, 200, "{endpoint}: {clearml}");
        let (status, rest) = (&got["rest"][0], &got["rest"][1]);
        assert_eq!(status, 200, "{endpoint}: {rest}");
        let contributions = rest["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == "contributions")
            .unwrap();
        assert_eq!(contributions["datatype"], datatype, "{endpoint}");
        // XGBoost's multiclass layout [rows, classes, features + 1]; LightGBM's [rows, classes × (features + 1)].
        let shape: Vec<u64> = contributions["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap())
            .collect();
        if datatype == "FP32" {
            assert_eq!(shape, [3, 3, 5], "{endpoint}");
        } else {
            assert_eq!(shape, [3, width], "{endpoint}");
        }
        let rest_values = flat(&contributions["data"]);
        let clearml_values = flat(&clearml["contributions"]);
        let grpc_values = flat(&got["grpc"]["data"]);
        assert_eq!(rest_values.len(), 45, "{endpoint}");
        // The same numbers everywhere (FP32 compared as FP32).
        for (what, values) in [("/serve", &clearml_values), ("gRPC", &grpc_values)] {
            for (i, (a, b)) in values.iter().zip(&rest_values).enumerate() {
                let same = if datatype == "FP32" {
                    (*a as f32) == (*b as f32)
                } else {
                    a == b
                };
                assert!(same, "{endpoint} {what}[{i}]: {a} vs V2 REST {b}");
            }
            assert_eq!(values.len(), rest_values.len());
        }
        assert_eq!(
            got["grpc"]["dtype"],
            if datatype == "FP32" {
                "float32"
            } else {
                "float64"
            }
        );
        // The prediction is still there, and a named output does not drop the explanation.
        assert!(clearml["probabilities"].is_array(), "{endpoint}: {clearml}");
        assert_eq!(got["rest_named"].as_array().unwrap().len(), 2, "{endpoint}");
        // Each row's class blocks sum to its margins: softmax of the sums gives the probabilities.
        let probabilities = flat(&clearml["probabilities"]);
        for (r, row) in rest_values.chunks(15).enumerate() {
            let margins: Vec<f64> = row.chunks(5).map(|b| b.iter().sum()).collect();
            let max = margins.iter().copied().fold(f64::MIN, f64::max);
            let exp: Vec<f64> = margins.iter().map(|m| (m - max).exp()).collect();
            let total: f64 = exp.iter().sum();
            for (c, e) in exp.iter().enumerate() {
                let p = probabilities[r * 3 + c];
                assert!(
                    (e / total - p).abs() < 1e-5,
                    "{endpoint} row {r} class {c}: {} vs {p}",
                    e / total
                );
            }
        }
    }
    let refused = &out["refused"];
    for case in ["onnx", "python"] {
        assert_eq!(refused[case][0], 400, "{case}: {}", refused[case][1]);
        let detail = refused[case][1]["detail"].as_str().unwrap();
        assert!(detail.contains("does not explain"), "{case}: {detail}");
    }
    assert_eq!(refused["bad_flag"][0], 400);
    assert_eq!(refused["bad_parameter"][0], 400);
    assert!(
        refused["plain"][1].get("contributions").is_none(),
        "not asked, not given"
    );
    // The Python endpoint's postprocess saw the same contributions as the native endpoint gives.
    let python = &out["python"];
    assert_eq!(python["explained"][0], 200, "{}", python["explained"][1]);
    let seen = flat(&python["explained"][1]["explained"]);
    let native = flat(&out["lgbm"]["clearml"][1]["contributions"]);
    assert_eq!(seen, native[15..30].to_vec(), "row 2's contributions");
    assert_eq!(
        python["plain"][1]["explained"],
        Value::Null,
        "not asked: not in the state"
    );
    assert_eq!(refused["too_many"][0], 400);
    let detail = refused["too_many"][1]["detail"].as_str().unwrap();
    assert!(
        detail.contains("450 values") && detail.contains("--max-values"),
        "{detail}"
    );
    // Explained requests are counted on their own, by protocol and outcome.
    let metrics = out["metrics"].as_str().unwrap();
    for line in [
        "serval_explained_requests_total{endpoint=\"xgb\",version=\"\",protocol=\"clearml\",outcome=\"ok\"} 1",
        "serval_explained_requests_total{endpoint=\"xgb\",version=\"\",protocol=\"v2_rest\",outcome=\"ok\"} 2",
        "serval_explained_requests_total{endpoint=\"xgb\",version=\"\",protocol=\"v2_grpc\",outcome=\"ok\"} 1",
        "serval_explained_requests_total{endpoint=\"xgb\",version=\"\",protocol=\"clearml\",outcome=\"bad_request\"} 1",
        "serval_explained_requests_total{endpoint=\"onnx\",version=\"\",protocol=\"clearml\",outcome=\"bad_request\"} 1",
    ] {
        assert!(metrics.contains(line), "{line} not in:\n{metrics}");
    }
}
