//! clearml's `triton` engine without a Triton server: what the model file is (an ONNX model runs
//! natively; TorchScript and TensorFlow/Keras models run in the endpoint's Python worker through
//! their library), and the io flags (`--input-name/-type/-size`, `--output-*`) checked against
//! the model's graph at load.

use std::path::{Path, PathBuf};

use serval_core::ModelFormat;
use serval_engine::ModelMetadata;
use serval_store::IoSpec;

use super::LoadError;
use crate::wire::Datatype;

/// What runs a `triton` endpoint's model.
#[derive(Debug, PartialEq)]
pub enum TritonModel {
    /// ONNX bytes, run in-process; `name` names the file in errors.
    Onnx { bytes: Vec<u8>, name: String },
    /// A model the endpoint's Python worker loads with its library.
    Python { path: PathBuf, runtime: Runtime },
}

/// The Python library that runs a model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Runtime {
    TorchScript,
    TensorFlow,
}

impl Runtime {
    /// What the worker names it by (the `load` message's `runtime`).
    pub fn name(self) -> &'static str {
        match self {
            Runtime::TorchScript => "torchscript",
            Runtime::TensorFlow => "tensorflow",
        }
    }
}

const HDF5_MAGIC: &[u8] = b"\x89HDF\r\n\x1a\n";

fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Tells what a `triton` model file holds. A packed folder (serval's `.tar.gz`) is unpacked once
/// into `unpack_dir` and searched: `model.onnx` (or its only `.onnx` file), a SavedModel
/// (`saved_model.pb`), a `.keras`/`.h5` file, or a TorchScript `model.pt`.
pub fn locate(path: &Path, unpack_dir: &Path) -> Result<TritonModel, LoadError> {
    let name = file_name(path);
    let bytes = read(path)?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        serval_artifacts::unpack_once(&bytes, unpack_dir).map_err(|e| LoadError::Unpack {
            name: name.clone(),
            reason: e.to_string(),
        })?;
        return in_folder(unpack_dir, &name);
    }
    classify(path, bytes, &name)
}

fn read(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A single file's kind, by content.
fn classify(path: &Path, bytes: Vec<u8>, name: &str) -> Result<TritonModel, LoadError> {
    let python = |runtime| {
        Ok(TritonModel::Python {
            path: path.to_path_buf(),
            runtime,
        })
    };
    if bytes.starts_with(b"PK\x03\x04") {
        // TorchScript archives hold `<name>/data.pkl` and `<name>/constants.pkl`; `.keras`
        // files are zips with the model's `config.json` and weights.
        if contains(&bytes, b"constants.pkl") && contains(&bytes, b"data.pkl") {
            return python(Runtime::TorchScript);
        }
        if contains(&bytes, b"config.json") && contains(&bytes, b".weights.h5") {
            return python(Runtime::TensorFlow);
        }
        return Err(LoadError::Triton(format!(
            "{name} is a zip archive that is neither a TorchScript model nor a .keras model; \
             for a folder holding model.onnx, register the folder itself (serval model upload --path DIR)"
        )));
    }
    if bytes.starts_with(HDF5_MAGIC) {
        return python(Runtime::TensorFlow);
    }
    match ModelFormat::detect(&bytes) {
        ModelFormat::Onnx => Ok(TritonModel::Onnx {
            bytes,
            name: name.to_string(),
        }),
        // ONNX files made without a producer name do not say "onnx" early: try them as ONNX.
        ModelFormat::Unknown if bytes.first() == Some(&0x08) => Ok(TritonModel::Onnx {
            bytes,
            name: name.to_string(),
        }),
        format => Err(LoadError::Triton(format!(
            "{name} is {format}; the triton engine runs ONNX models (natively), TorchScript and \
             TensorFlow/Keras models (SavedModel folder, .keras, .h5) in Python"
        ))),
    }
}

/// The model inside an unpacked folder.
fn in_folder(root: &Path, name: &str) -> Result<TritonModel, LoadError> {
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|source| LoadError::Read {
            path: dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    // Shallowest first, then by name: the choice does not depend on the listing order.
    files.sort_by_key(|p| (p.components().count(), p.clone()));
    let named = |file: &str| {
        files
            .iter()
            .find(|p| p.file_name().is_some_and(|n| n == file))
    };
    let with_extension = |ext: &str| -> Vec<&PathBuf> {
        files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect()
    };
    let onnx = named("model.onnx").or_else(|| match with_extension("onnx").as_slice() {
        [only] => Some(*only),
        _ => None,
    });
    if let Some(path) = onnx {
        let bytes = read(path)?;
        return classify(path, bytes, &format!("{name}/{}", file_name(path)));
    }
    if let Some(saved) = named("saved_model.pb") {
        return Ok(TritonModel::Python {
            path: saved.parent().unwrap_or(root).to_path_buf(),
            runtime: Runtime::TensorFlow,
        });
    }
    for ext in ["keras", "h5", "pt"] {
        if let [only] = with_extension(ext).as_slice() {
            let bytes = read(only)?;
            return classify(only, bytes, &format!("{name}/{}", file_name(only)));
        }
    }
    Err(LoadError::Triton(format!(
        "{name} holds no model the triton engine runs: model.onnx, a SavedModel (saved_model.pb), \
         a .keras/.h5 file or a TorchScript model.pt"
    )))
}

/// How a `triton` endpoint's io flags and its model's graph disagree (both sides named).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoMismatch(pub String);

impl std::fmt::Display for IoMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `-1`s and all: a dimension list as written.
fn shape_text(dims: &[i64]) -> String {
    format!(
        "[{}]",
        dims.iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Whether a declared `--input-size`/`--output-size` fits the graph's shape: the same rank, or one
/// less (the batch dimension left out, as in a Triton `config.pbtxt` with `max_batch_size`);
/// `-1` and dynamic dimensions match anything.
fn shape_fits(declared: &[i64], graph: &[Option<usize>]) -> bool {
    let graph = match graph.len().checked_sub(declared.len()) {
        Some(0) => graph,
        Some(1) => &graph[1..],
        _ => return false,
    };
    declared
        .iter()
        .zip(graph)
        .all(|(d, g)| *d < 0 || g.is_none_or(|g| g as i64 == *d))
}

fn graph_text(shape: &[Option<usize>]) -> String {
    shape_text(
        &shape
            .iter()
            .map(|d| d.map_or(-1, |d| d as i64))
            .collect::<Vec<_>>(),
    )
}

/// Checks the io flags against the model's graph: every named input and output exists with the
/// declared type and a fitting size, and every graph input is named (ONNX Runtime needs them all).
/// The error names both sides.
pub fn check_io(io: &IoSpec, meta: &ModelMetadata) -> Result<(), IoMismatch> {
    let sides = [
        (
            "input",
            &io.input_name,
            &io.input_type,
            &io.input_size,
            &meta.inputs,
        ),
        (
            "output",
            &io.output_name,
            &io.output_type,
            &io.output_size,
            &meta.outputs,
        ),
    ];
    for (side, names, types, sizes, graph) in sides {
        let graph_names = || {
            graph
                .iter()
                .map(|s| format!("'{}' ({} {})", s.name, s.dtype, graph_text(&s.shape)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (i, name) in names.iter().enumerate() {
            let Some(spec) = graph.iter().find(|s| &s.name == name) else {
                return Err(IoMismatch(format!(
                    "--{side}-name '{name}' is not an {side} of the model; its {side}s: {}",
                    graph_names()
                )));
            };
            if let Some(declared) = types.get(i) {
                let Some(datatype) = Datatype::from_numpy(declared) else {
                    return Err(IoMismatch(format!(
                        "--{side}-type '{declared}' is not a known type"
                    )));
                };
                if datatype != Datatype::of_engine(spec.dtype) {
                    return Err(IoMismatch(format!(
                        "{side} '{name}' is {declared} by --{side}-type but {} in the model",
                        spec.dtype
                    )));
                }
            }
            if let Some(declared) = sizes.get(i)
                && !shape_fits(declared, &spec.shape)
            {
                return Err(IoMismatch(format!(
                    "{side} '{name}' has size {} by --{side}-size but {} in the model",
                    shape_text(declared),
                    graph_text(&spec.shape)
                )));
            }
        }
        if side == "input" && !names.is_empty() {
            let unnamed: Vec<String> = graph
                .iter()
                .filter(|s| !names.contains(&s.name))
                .map(|s| format!("'{}'", s.name))
                .collect();
            if !unnamed.is_empty() {
                return Err(IoMismatch(format!(
                    "the model also takes {} which --input-name does not name (its inputs: {})",
                    unnamed.join(", "),
                    graph_names()
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serval_engine::{DataType, Task, TensorSpec};

    fn spec(name: &str, dtype: DataType, shape: &[Option<usize>]) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
        }
    }

    fn mnist() -> ModelMetadata {
        ModelMetadata {
            format: "onnx".into(),
            inputs: vec![spec(
                "INPUT__0",
                DataType::F32,
                &[Some(1), Some(28), Some(28)],
            )],
            outputs: vec![spec("OUTPUT__0", DataType::F32, &[None, Some(10)])],
            feature_names: None,
            task: Task::Other,
        }
    }

    fn io(input: (&str, &str, Vec<i64>), output: (&str, &str, Vec<i64>)) -> IoSpec {
        IoSpec {
            input_name: vec![input.0.into()],
            input_type: vec![input.1.into()],
            input_size: vec![input.2],
            output_name: vec![output.0.into()],
            output_type: vec![output.1.into()],
            output_size: vec![output.2],
        }
    }

    #[test]
    fn clearml_flags_fit_the_graph() {
        let ok = io(
            ("INPUT__0", "float32", vec![1, 28, 28]),
            ("OUTPUT__0", "float32", vec![-1, 10]),
        );
        assert_eq!(check_io(&ok, &mnist()), Ok(()));
        // The batch dimension may be left out, and names alone are enough.
        let batchless = io(
            ("INPUT__0", "float32", vec![28, 28]),
            ("OUTPUT__0", "float32", vec![10]),
        );
        assert_eq!(check_io(&batchless, &mnist()), Ok(()));
        assert_eq!(check_io(&IoSpec::default(), &mnist()), Ok(()));
    }

    #[test]
    fn mismatches_name_both_sides() {
        let cases = [
            (
                io(
                    ("INPUT_0", "float32", vec![1, 28, 28]),
                    ("OUTPUT__0", "float32", vec![-1, 10]),
                ),
                "--input-name 'INPUT_0' is not an input of the model; its inputs: 'INPUT__0' (float32 [1, 28, 28])",
            ),
            (
                io(
                    ("INPUT__0", "int64", vec![1, 28, 28]),
                    ("OUTPUT__0", "float32", vec![-1, 10]),
                ),
                "input 'INPUT__0' is int64 by --input-type but float32 in the model",
            ),
            (
                io(
                    ("INPUT__0", "float32", vec![1, 784]),
                    ("OUTPUT__0", "float32", vec![-1, 10]),
                ),
                "input 'INPUT__0' has size [1, 784] by --input-size but [1, 28, 28] in the model",
            ),
            (
                io(
                    ("INPUT__0", "float32", vec![1, 28, 28]),
                    ("probs", "float32", vec![-1, 10]),
                ),
                "--output-name 'probs' is not an output of the model; its outputs: 'OUTPUT__0' (float32 [-1, 10])",
            ),
            (
                io(
                    ("INPUT__0", "float32", vec![1, 28, 28]),
                    ("OUTPUT__0", "float32", vec![-1, 9]),
                ),
                "output 'OUTPUT__0' has size [-1, 9] by --output-size but [-1, 10] in the model",
            ),
        ];
        for (io, message) in cases {
            assert_eq!(
                check_io(&io, &mnist()),
                Err(IoMismatch(message.to_string()))
            );
        }
        let mut two = mnist();
        two.inputs.push(spec("mask", DataType::I64, &[None]));
        let named = io(
            ("INPUT__0", "float32", vec![1, 28, 28]),
            ("OUTPUT__0", "float32", vec![-1, 10]),
        );
        assert!(
            check_io(&named, &two)
                .unwrap_err()
                .0
                .starts_with("the model also takes 'mask' which --input-name does not name")
        );
    }

    #[test]
    fn model_files_are_told_apart_by_content() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        let onnx = write("m.bin", b"\x08\x07\x12\x0bonnx.helper");
        assert!(matches!(
            locate(&onnx, &dir.path().join("u1")),
            Ok(TritonModel::Onnx { .. })
        ));
        let torch = write("m.pt", b"PK\x03\x04 archive/data.pkl archive/constants.pkl");
        assert_eq!(
            locate(&torch, &dir.path().join("u2")).unwrap(),
            TritonModel::Python {
                path: torch.clone(),
                runtime: Runtime::TorchScript
            }
        );
        let h5 = write("m.h5", b"\x89HDF\r\n\x1a\n....");
        assert!(matches!(
            locate(&h5, &dir.path().join("u3")),
            Ok(TritonModel::Python {
                runtime: Runtime::TensorFlow,
                ..
            })
        ));
        let pickle = write("m.pkl", b"\x80\x04\x95");
        assert!(
            locate(&pickle, &dir.path().join("u4"))
                .unwrap_err()
                .to_string()
                .contains("pickle")
        );
        // A packed folder: the ONNX model inside it, and a SavedModel.
        let folder = dir.path().join("model");
        std::fs::create_dir_all(folder.join("1")).unwrap();
        std::fs::write(folder.join("1/model.onnx"), b"\x08\x07onnx").unwrap();
        std::fs::write(folder.join("config.pbtxt"), b"name: \"m\"").unwrap();
        let packed = write(
            "model.tar.gz",
            &serval_artifacts::pack_dir(&folder).unwrap(),
        );
        match locate(&packed, &dir.path().join("u5")).unwrap() {
            TritonModel::Onnx { bytes, name } => {
                assert_eq!(bytes, b"\x08\x07onnx");
                assert_eq!(name, "model.tar.gz/model.onnx");
            }
            other => panic!("{other:?}"),
        }
        let saved = dir.path().join("saved");
        std::fs::create_dir_all(saved.join("variables")).unwrap();
        std::fs::write(saved.join("saved_model.pb"), b"pb").unwrap();
        let packed = write("saved.tar.gz", &serval_artifacts::pack_dir(&saved).unwrap());
        let unpacked = dir.path().join("u6");
        assert_eq!(
            locate(&packed, &unpacked).unwrap(),
            TritonModel::Python {
                path: unpacked,
                runtime: Runtime::TensorFlow
            }
        );
    }
}
