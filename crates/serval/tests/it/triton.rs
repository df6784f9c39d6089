//! clearml's `triton` engine served by serval itself: the pytorch-style example (image → preprocess
//! → an MNIST-shaped ONNX model → `{"digit": N}`) with clearml's exact `model add` flags, io flags
//! checked against the graph, the model without preprocess code over `/serve` and V2, and a model
//! whose runtime is missing.

use serde_json::{Value, json};

use crate::serve::{Server, wait_until};
use crate::{Home, example, python};

/// Runs `examples/pytorch/make_model.py` into the home: the ONNX model and digit images.
fn make_model(home: &Home) -> std::path::PathBuf {
    let out = home.path().join("pytorch");
    let output = std::process::Command::new(python())
        .arg(example("pytorch/make_model.py"))
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run make_model.py");
    assert!(
        output.status.success(),
        "make_model.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// clearml's `model add` for the pytorch example, with `extra` flags replacing the io ones.
fn add(home: &Home, endpoint: &str, model: &str, preprocess: Option<&str>, io: &[&str]) {
    let mut args = vec![
        "model",
        "add",
        "--engine",
        "triton",
        "--endpoint",
        endpoint,
        "--model-id",
        model,
    ];
    if let Some(code) = preprocess {
        args.extend(["--preprocess", code]);
    }
    args.extend(io);
    home.ok(&args);
}

const CLEARML_IO: &[&str] = &[
    "--input-size",
    "1",
    "28",
    "28",
    "--input-name",
    "INPUT__0",
    "--input-type",
    "float32",
    "--output-size",
    "-1",
    "10",
    "--output-name",
    "OUTPUT__0",
    "--output-type",
    "float32",
];

fn endpoint_status(home: &Home, url: &str) -> Value {
    home.json(&["model", "list"])["instances"][0]["endpoints"][url].clone()
}

#[test]
fn the_pytorch_example_runs_natively_through_the_triton_engine() {
    let home = Home::new();
    home.service("triton");
    let files = make_model(&home);
    let model = home.upload_path(
        "mnist",
        &files.join("model.onnx"),
        &["--project", "serving examples", "--framework", "onnx"],
    );
    let preprocess = example("pytorch/preprocess.py");
    add(
        &home,
        "test_model_pytorch",
        &model,
        Some(&preprocess),
        CLEARML_IO,
    );
    // The same model without preprocess code, and with io flags that do not fit it.
    add(&home, "mnist_raw", &model, None, CLEARML_IO);
    let mut wrong = CLEARML_IO.to_vec();
    wrong.splice(1..4, ["1", "784"]);
    add(&home, "mnist_wrong", &model, Some(&preprocess), &wrong);
    let server = Server::start(&home);
    wait_until("test_model_pytorch", || {
        endpoint_status(&home, "test_model_pytorch")["state"] == "loaded"
    });
    let status = endpoint_status(&home, "test_model_pytorch");
    assert!(
        status["path"].as_str().unwrap().contains("native onnx"),
        "{status}"
    );

    // Image bytes, as clearml's README sends them, for every digit; a JPEG; a {"url"}.
    for digit in 0..10 {
        let image = std::fs::read(files.join(format!("{digit}.png"))).unwrap();
        assert_eq!(
            server.post_as("/serve/test_model_pytorch", "image/png", &image),
            (200, json!({"digit": digit})),
            "digit {digit}"
        );
    }
    let jpeg = std::fs::read(files.join("5.jpg")).unwrap();
    assert_eq!(
        server.post_as("/serve/test_model_pytorch", "image/jpeg", &jpeg),
        (200, json!({"digit": 5}))
    );
    let url = json!({"url": files.join("7.png")}).to_string();
    assert_eq!(
        server.post("/serve/test_model_pytorch", &url),
        (200, json!({"digit": 7}))
    );
    // Bytes that are no image: the example's RuntimeError, a 500 as upstream.
    let (status, reply) = server.post_as("/serve/test_model_pytorch", "image/jpeg", b"not a jpeg");
    assert_eq!(status, 500, "{reply}");
    assert!(
        reply["detail"]
            .as_str()
            .unwrap()
            .contains("Image could not be decoded"),
        "{reply}"
    );

    // Without preprocess: the input by name, the output by name; V2 too.
    let mut image = vec![vec![0.0f32; 28]; 28];
    for row in &mut image[10..12] {
        row[4..24].fill(255.0);
    }
    let (status, reply) = server.post(
        "/serve/mnist_raw",
        &json!({"INPUT__0": [image.clone()]}).to_string(),
    );
    assert_eq!(status, 200, "{reply}");
    let probabilities = reply["OUTPUT__0"][0].as_array().unwrap();
    assert_eq!(probabilities.len(), 10);
    let best = (0..10)
        .max_by(|a, b| {
            let p = |i: usize| probabilities[i].as_f64().unwrap();
            p(*a).total_cmp(&p(*b))
        })
        .unwrap();
    assert_eq!(best, 3, "{reply}");
    let flat: Vec<f32> = image.iter().flatten().copied().collect();
    let (status, reply) = server.post(
        "/v2/models/mnist_raw/infer",
        &json!({"inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [1, 28, 28], "data": flat}]})
            .to_string(),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["outputs"][0]["name"], "OUTPUT__0");
    assert_eq!(reply["outputs"][0]["shape"], json!([1, 10]));

    // io flags that do not fit the graph: a load error naming both, never "loaded".
    let status = endpoint_status(&home, "mnist_wrong");
    assert_eq!(status["state"], "failed", "{status}");
    let error = status["error"].as_str().unwrap();
    assert!(
        error.contains(
            "input 'INPUT__0' has size [1, 784] by --input-size but [1, 28, 28] in the model"
        ),
        "{error}"
    );
    assert_eq!(server.post("/serve/mnist_wrong", "{}").0, 503);
}

#[test]
fn a_triton_model_whose_runtime_is_missing_is_a_load_error_naming_it() {
    let home = Home::new();
    home.service("triton-missing");
    // A TorchScript archive as torch.jit.save writes it (a zip with data.pkl and constants.pkl);
    // the test venv has no torch.
    let dir = home.path().join("torchscript");
    std::fs::create_dir_all(&dir).unwrap();
    let script = "import sys, zipfile\nwith zipfile.ZipFile(sys.argv[1], 'w') as z:\n    z.writestr('model/data.pkl', b'x')\n    z.writestr('model/constants.pkl', b'x')\n    z.writestr('model/version', b'3')\n";
    let path = dir.join("model.pt");
    let status = std::process::Command::new(python())
        .args(["-c", script])
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let model = home.upload("torch", path.to_str().unwrap(), &["--framework", "pytorch"]);
    add(&home, "torch_model", &model, None, CLEARML_IO);
    let server = Server::start(&home);
    wait_until("the load error", || {
        endpoint_status(&home, "torch_model")["state"] == "failed"
    });
    let error = endpoint_status(&home, "torch_model")["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        error.contains("TorchScript models with the 'torch' package"),
        "{error}"
    );
    assert!(error.contains("--extra-python-packages torch"), "{error}");
    let (status, reply) = server.post("/serve/torch_model", "{}");
    assert_eq!(status, 503, "{reply}");
}

/// `serval triton-repo`: the layout and `config.pbtxt` Triton reads, for each io flag and both
/// aux-config forms; non-triton endpoints left out; gone endpoints removed; `--watch` follows.
#[test]
fn triton_repo_writes_the_model_repository() {
    let home = Home::new();
    home.service("triton-repo");
    let files = make_model(&home);
    let onnx = files.join("model.onnx");
    let model = home.upload("mnist", onnx.to_str().unwrap(), &["--framework", "onnx"]);
    let mut io = vec!["--version", "2"];
    io.extend(CLEARML_IO);
    io.extend([
        "--aux-config",
        "max_batch_size=8",
        "dynamic_batching.max_queue_delay_microseconds=100",
        "instance_group=[{\"kind\": \"KIND_CPU\", \"count\": 2}]",
    ]);
    add(&home, "mnist", &model, None, &io);
    let pbtxt = home.write(
        "aux/config.pbtxt",
        "platform: \"onnxruntime_onnx\"\nmax_batch_size: 0\n",
    );
    add(
        &home,
        "from_file",
        &model,
        None,
        &["--aux-config", pbtxt.to_str().unwrap()],
    );
    let trees = home.upload("iris", "xgb_multi_iris.json", &[]);
    home.add_endpoint("xgboost", "iris", None, &trees);
    let repo = home.path().join("repo");
    std::fs::create_dir_all(repo.join("users_own_model/1")).unwrap();
    home.ok(&["triton-repo", "--out", repo.to_str().unwrap()]);

    let mut folders: Vec<String> = std::fs::read_dir(&repo)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    assert_eq!(folders, ["from_file", "mnist_2", "users_own_model"]);
    assert_eq!(
        std::fs::read(repo.join("mnist_2/1/model.onnx")).unwrap(),
        std::fs::read(&onnx).unwrap()
    );
    let config = std::fs::read_to_string(repo.join("mnist_2/config.pbtxt")).unwrap();
    for line in [
        "max_batch_size: 8",
        "dynamic_batching: {\n  max_queue_delay_microseconds: 100\n}",
        "instance_group: [ {\n  kind: KIND_CPU\n  count: 2\n} ]",
        "platform: \"onnxruntime_onnx\"",
        "input [\n  {\n    name: \"INPUT__0\"\n    data_type: TYPE_FP32\n    dims: [ 1, 28, 28 ]\n  }\n]",
        "output [\n  {\n    name: \"OUTPUT__0\"\n    data_type: TYPE_FP32\n    dims: [ -1, 10 ]\n  }\n]",
    ] {
        assert!(config.contains(line), "{line:?} not in\n{config}");
    }
    // A file's text as is, first; no io flags → no input/output blocks.
    assert_eq!(
        std::fs::read_to_string(repo.join("from_file/config.pbtxt")).unwrap(),
        "platform: \"onnxruntime_onnx\"\nmax_batch_size: 0\n"
    );

    // Removing an endpoint removes its folder (never a folder serval did not write).
    home.ok(&["model", "remove", "--endpoint", "from_file"]);
    let mut watch = home
        .command(&[
            "triton-repo",
            "--out",
            repo.to_str().unwrap(),
            "--watch",
            "--interval-ms",
            "100",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_until("from_file removed", || !repo.join("from_file").exists());
    assert!(repo.join("users_own_model/1").is_dir());
    // --watch follows new endpoints.
    add(&home, "later", &model, None, CLEARML_IO);
    wait_until("later written", || {
        repo.join("later/1/model.onnx").is_file()
    });
    let _ = watch.kill();
    let _ = watch.wait();
}

/// Uploads the example's ONNX model into `home` and returns its id.
fn upload_mnist(home: &Home, files: &std::path::Path) -> String {
    let onnx = files.join("model.onnx");
    home.upload("mnist", onnx.to_str().unwrap(), &["--framework", "onnx"])
}

/// `config --triton-grpc-server`: triton endpoints are forwarded over V2 gRPC as clearml forwards
/// them (model `<url>`, version "1"), here to a second serval serving the model natively; gzip on;
/// the model without preprocess code too; an upstream that is down is a 502 naming the gRPC status
/// and the server stays healthy.
#[test]
fn triton_endpoints_forward_to_a_v2_grpc_server() {
    // The upstream: the model as `test_model_pytorch` and `mnist_raw`, version 1.
    let upstream_home = Home::new();
    upstream_home.service("upstream");
    let files = make_model(&upstream_home);
    let model = upload_mnist(&upstream_home, &files);
    let mut io = vec!["--version", "1"];
    io.extend(CLEARML_IO);
    add(&upstream_home, "test_model_pytorch", &model, None, &io);
    add(&upstream_home, "mnist_raw", &model, None, &io);
    let upstream = Server::start(&upstream_home);
    wait_until("the upstream model", || {
        upstream
            .get("/v2/models/test_model_pytorch/versions/1/ready")
            .0
            == 200
            && upstream.get("/v2/models/mnist_raw/versions/1/ready").0 == 200
    });

    // The forwarding server: clearml's flags; its model file is never loaded here.
    let home = Home::new();
    home.service("forwarding");
    let local = upload_mnist(&home, &files);
    home.ok(&["config", "--triton-grpc-server", &upstream.grpc]);
    home.ok(&["config", "--triton-grpc-compression", "true"]);
    let preprocess = example("pytorch/preprocess.py");
    add(
        &home,
        "test_model_pytorch",
        &local,
        Some(&preprocess),
        CLEARML_IO,
    );
    add(&home, "mnist_raw", &local, None, CLEARML_IO);
    let server = Server::start(&home);
    wait_until("forwarded endpoints", || {
        endpoint_status(&home, "test_model_pytorch")["state"] == "loaded"
            && endpoint_status(&home, "mnist_raw")["state"] == "loaded"
    });
    let status = endpoint_status(&home, "test_model_pytorch");
    assert!(
        status["path"].as_str().unwrap().contains(&format!(
            "forwarded to the V2 gRPC server at {}",
            upstream.grpc
        )),
        "{status}"
    );
    for digit in [0, 5, 9] {
        let image = std::fs::read(files.join(format!("{digit}.png"))).unwrap();
        assert_eq!(
            server.post_as("/serve/test_model_pytorch", "image/png", &image),
            (200, json!({"digit": digit})),
            "digit {digit}"
        );
    }
    let mut image = vec![vec![0.0f32; 28]; 28];
    for row in &mut image[8..10] {
        row[4..24].fill(255.0);
    }
    let (status, reply) = server.post(
        "/serve/mnist_raw",
        &json!({"INPUT__0": [image.clone()]}).to_string(),
    );
    assert_eq!(status, 200, "{reply}");
    let row = reply["OUTPUT__0"][0].as_array().unwrap();
    let best = (0..10)
        .max_by(|a, b| {
            row[*a]
                .as_f64()
                .unwrap()
                .total_cmp(&row[*b].as_f64().unwrap())
        })
        .unwrap();
    assert_eq!(best, 2, "{reply}");
    // The same through the forwarding server's V2 REST route.
    let flat: Vec<f32> = image.iter().flatten().copied().collect();
    let (status, reply) = server.post(
        "/v2/models/mnist_raw/infer",
        &json!({"inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [1, 28, 28], "data": flat}]})
            .to_string(),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["outputs"][0]["shape"], json!([1, 10]));

    // The upstream goes away: a 502 naming the gRPC status, and the server stays healthy.
    drop(upstream);
    let image = std::fs::read(files.join("3.png")).unwrap();
    let (status, reply) = server.post_as("/serve/test_model_pytorch", "image/png", &image);
    assert_eq!(status, 502, "{reply}");
    let detail = reply["detail"].as_str().unwrap();
    assert!(
        detail.contains("answered Unavailable") && detail.contains("test_model_pytorch"),
        "{detail}"
    );
    assert_eq!(server.get("/health/live").0, 200);
    assert_eq!(server.get("/health/ready").0, 200);
}

/// A custom MLServer runtime that runs an ONNX model with onnxruntime (MLServer has no ONNX
/// runtime of its own).
const MLSERVER_RUNTIME: &str = r#"
import onnxruntime
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceResponse
from mlserver.utils import get_model_uri


class OnnxModel(MLModel):
    async def load(self):
        uri = await get_model_uri(self._settings)
        self.session = onnxruntime.InferenceSession(uri, providers=["CPUExecutionProvider"])
        return True

    async def predict(self, request):
        feed = {i.name: NumpyCodec.decode_input(i) for i in request.inputs}
        names = [o.name for o in request.outputs or []] or [o.name for o in self.session.get_outputs()]
        results = self.session.run(names, feed)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[NumpyCodec.encode_output(n, r) for n, r in zip(names, results)],
        )
"#;

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The pytorch-style endpoint forwarded to a real MLServer (PyPI) over V2 gRPC, serving the model
/// from a repository folder as `test_model_pytorch` version "1".
#[test]
fn triton_endpoints_forward_to_mlserver() {
    let home = Home::new();
    home.service("mlserver");
    let files = make_model(&home);
    let repo = home.path().join("mlserver-repo");
    let folder = repo.join("test_model_pytorch");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::copy(files.join("model.onnx"), folder.join("model.onnx")).unwrap();
    std::fs::write(folder.join("runtime.py"), MLSERVER_RUNTIME).unwrap();
    std::fs::write(
        folder.join("model-settings.json"),
        json!({"name": "test_model_pytorch", "implementation": "runtime.OnnxModel",
               "parameters": {"uri": "./model.onnx", "version": "1"}})
        .to_string(),
    )
    .unwrap();
    let (http, grpc, metrics) = (free_port(), free_port(), free_port());
    std::fs::write(
        repo.join("settings.json"),
        json!({"host": "127.0.0.1", "http_port": http, "grpc_port": grpc,
               "metrics_port": metrics, "parallel_workers": 0})
        .to_string(),
    )
    .unwrap();
    let mlserver = std::path::Path::new(&python()).with_file_name("mlserver");
    let log = std::fs::File::create(home.path().join("mlserver.log")).unwrap();
    let _mlserver = Killed(
        std::process::Command::new(&mlserver)
            .arg("start")
            .arg(&repo)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", mlserver.display())),
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    wait_until("MLServer's model", || {
        agent
            .get(format!(
                "http://127.0.0.1:{http}/v2/models/test_model_pytorch/versions/1/ready"
            ))
            .call()
            .is_ok_and(|r| r.status() == 200)
    });

    let model = upload_mnist(&home, &files);
    home.ok(&[
        "config",
        "--triton-grpc-server",
        &format!("127.0.0.1:{grpc}"),
    ]);
    let preprocess = example("pytorch/preprocess.py");
    add(
        &home,
        "test_model_pytorch",
        &model,
        Some(&preprocess),
        CLEARML_IO,
    );
    let server = Server::start(&home);
    wait_until("the forwarded endpoint", || {
        endpoint_status(&home, "test_model_pytorch")["state"] == "loaded"
    });
    for digit in [1, 5, 8] {
        let image = std::fs::read(files.join(format!("{digit}.png"))).unwrap();
        assert_eq!(
            server.post_as("/serve/test_model_pytorch", "image/png", &image),
            (200, json!({"digit": digit})),
            "digit {digit}"
        );
    }
    let log = std::fs::read_to_string(home.path().join("mlserver.log")).unwrap();
    assert!(log.contains("ModelInfer"), "{log}");
}

/// The huggingface-style example: `{"text"}` → a tokenizer in preprocess → an ONNX model with three
/// int32 inputs (registered as `model.bin`) → `{"data": logits}`, with clearml's exact flags.
#[test]
fn the_huggingface_example_runs_natively_through_the_triton_engine() {
    let home = Home::new();
    home.service("huggingface");
    let out = home.path().join("huggingface");
    let output = std::process::Command::new(python())
        .arg(example("huggingface/make_model.py"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let model = home.upload(
        "transformer",
        out.join("model.bin").to_str().unwrap(),
        &["--framework", "tensorrt"],
    );
    let code = out.join("preprocess");
    add(
        &home,
        "transformer_model",
        &model,
        code.to_str(),
        &[
            "--input-size",
            "[-1, -1]",
            "[-1, -1]",
            "[-1, -1]",
            "--input-type",
            "int32",
            "int32",
            "int32",
            "--input-name",
            "input_ids",
            "token_type_ids",
            "attention_mask",
            "--output-size",
            "[-1, 2]",
            "--output-type",
            "float32",
            "--output-name",
            "output",
            "--aux-config",
            "platform=\"tensorrt_plan\"",
            "default_model_filename=\"model.bin\"",
        ],
    );
    let server = Server::start(&home);
    wait_until("transformer_model", || {
        endpoint_status(&home, "transformer_model")["state"] == "loaded"
    });
    let text =
        json!({"text": "This is a ClearML example to show how Triton binaries are deployed."});
    assert_eq!(
        server.post("/serve/transformer_model", &text.to_string()),
        (200, json!({"data": [[0.0, 0.0]]}))
    );
    assert_eq!(
        server.post(
            "/serve/transformer_model",
            r#"{"text": "I love this great movie"}"#
        ),
        (200, json!({"data": [[0.0, 4.0]]}))
    );
    assert_eq!(
        server.post(
            "/serve/transformer_model",
            r#"{"text": "a terrible and boring example"}"#
        ),
        (200, json!({"data": [[4.0, 0.0]]}))
    );
    assert_eq!(server.post("/serve/transformer_model", "{}").0, 422);
}

/// The wheels `scripts/setup-wheels.sh` downloaded (tensorflow-cpu and its dependencies).
fn wheels() -> String {
    let dir = std::env::var("SERVAL_WHEELS").unwrap_or_else(|_| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../.cache/wheels")
            .display()
            .to_string()
    });
    assert!(
        std::fs::read_dir(&dir).is_ok_and(|mut d| d.any(|e| e.is_ok_and(|e| e
            .file_name()
            .to_string_lossy()
            .starts_with("tensorflow_cpu")))),
        "no tensorflow-cpu wheel in {dir}: run scripts/setup-wheels.sh"
    );
    dir
}

/// The keras example through the Python worker: tensorflow-cpu installed by serval into the
/// service's environment (`config --extra-python-packages`, offline from local wheels), a `.keras`
/// model built with that environment, clearml's keras flags, image bytes → `{"digit": N}`.
#[test]
fn the_keras_example_runs_in_a_service_environment_with_tensorflow() {
    let home = Home::with_env(vec![
        ("PIP_NO_INDEX".into(), "1".into()),
        ("PIP_FIND_LINKS".into(), wheels()),
    ]);
    home.service("keras");
    home.ok(&[
        "config",
        "--extra-python-packages",
        "tensorflow-cpu==2.21.0",
    ]);
    // An endpoint that only says which interpreter runs it: the environment, once built.
    let probe = home.write(
        "probe/preprocess.py",
        "import sys\nclass Preprocess:\n    def process(self, data, state, collect_custom_statistics_fn=None):\n        return {'python': sys.executable}\n",
    );
    home.ok(&[
        "model",
        "add",
        "--engine",
        "custom",
        "--endpoint",
        "probe",
        "--preprocess",
        probe.to_str().unwrap(),
    ]);
    let server = Server::start(&home);
    // Installing TensorFlow from wheels takes a minute or two on two cores.
    let start = std::time::Instant::now();
    let env_python = loop {
        let (status, reply) = server.post("/serve/probe", "{}");
        if status == 200 {
            break reply["python"].as_str().unwrap().to_string();
        }
        assert!(
            start.elapsed() < std::time::Duration::from_secs(900),
            "the environment was not built: {:?}",
            endpoint_status(&home, "probe")
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert!(env_python.contains("/cache/pyenv/"), "{env_python}");
    // The model, made with the environment's Keras.
    let out = home.path().join("keras");
    let made = std::process::Command::new(&env_python)
        .arg(example("keras/make_model.py"))
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let model = home.upload(
        "keras",
        out.join("model.keras").to_str().unwrap(),
        &["--framework", "tensorflow"],
    );
    let preprocess = example("keras/preprocess.py");
    add(
        &home,
        "test_model_keras",
        &model,
        Some(&preprocess),
        &[
            "--input-size",
            "1",
            "784",
            "--input-name",
            "dense_input",
            "--input-type",
            "float32",
            "--output-size",
            "-1",
            "10",
            "--output-name",
            "activation_2",
            "--output-type",
            "float32",
        ],
    );
    let start = std::time::Instant::now();
    while endpoint_status(&home, "test_model_keras")["state"] != "loaded" {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(300),
            "{:?}",
            endpoint_status(&home, "test_model_keras")
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let status = endpoint_status(&home, "test_model_keras");
    assert!(
        status["path"].as_str().unwrap().contains("python worker"),
        "{status}"
    );
    let files = make_model(&home);
    for digit in [2, 5, 7] {
        let image = std::fs::read(files.join(format!("{digit}.png"))).unwrap();
        assert_eq!(
            server.post_as("/serve/test_model_keras", "image/png", &image),
            (200, json!({"digit": digit})),
            "digit {digit}"
        );
    }
}

/// Two `triton` endpoints on the same packed folder load in one pass on an empty cache: each
/// load unpacks into a staging folder of its own (they used to share one named after the process
/// and delete each other's files, and the endpoint that lost stayed failed). Ten fresh servers,
/// every time both load.
#[test]
fn two_endpoints_on_one_packed_folder_both_load_every_time() {
    for round in 0..10 {
        let home = Home::new();
        home.service("packed");
        let folder = home.path().join("digits_model");
        std::fs::create_dir_all(folder.join("variables")).unwrap();
        std::fs::copy(
            crate::fixture("sklearn_mlp_digits.onnx"),
            folder.join("model.onnx"),
        )
        .unwrap();
        for file in 0..50 {
            std::fs::write(folder.join(format!("variables/{file}.bin")), [round; 4096]).unwrap();
        }
        let model = home.upload_path("packed", &folder, &[]);
        add(&home, "digits_a", &model, None, &[]);
        add(&home, "digits_b", &model, None, &[]);
        let server = Server::start(&home);
        wait_until("both endpoints loaded", || {
            let (status, body) = server.get("/health/ready");
            status == 200 && body["endpoints"] == 2
        });
        let (_, body) = server.get("/health/ready");
        assert_eq!(body["failed"], json!([]), "round {round}: {body}");
    }
}
