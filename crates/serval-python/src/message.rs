//! What a worker sends, read from its frames once into a typed message (`main.py` writes them):
//! the answer to `load`, the answers to a request, and `send_request` calls from user code.

use serde_json::{Map, Value};

use crate::frame::Frame;

/// A message from a worker.
#[derive(Debug, Clone, PartialEq)]
pub enum FromWorker {
    /// The endpoint's code and model are loaded.
    Loaded {
        /// `Preprocess.load` returned the model: the worker runs it.
        custom_model: bool,
        /// A model the server may run itself (a plain scikit-learn linear model's parameters).
        native_model: Option<Value>,
    },
    /// Loading failed (the reason, as the worker tells it).
    LoadError(String),
    /// A request's answer.
    Result {
        id: Option<u64>,
        value: Value,
        /// Seconds per stage the worker ran (`preprocess`, `process`, `postprocess`).
        timings: Map<String, Value>,
        stats: Option<Map<String, Value>>,
        /// `python`, `native` or `library`.
        path: String,
    },
    /// User code raised.
    Error {
        id: Option<u64>,
        class: String,
        message: String,
        /// A `ValueError` (clearml → 422).
        invalid: bool,
        /// How far the request got, as in `Result` (`library`: into the model's library).
        path: String,
    },
    /// `preprocess` returned array-like data for a model the server runs: run it, then `post`.
    Pre {
        id: Option<u64>,
        data: Value,
        blobs: Vec<Vec<u8>>,
    },
    /// `send_request` from user code, within the request `id`.
    Call {
        id: Option<u64>,
        /// The worker's handle of the call, sent back with the answer.
        call: Value,
        endpoint: String,
        version: Option<String>,
        data: Value,
    },
    /// Anything else: a protocol error.
    Unknown(String),
}

impl FromWorker {
    /// The message a frame holds.
    pub fn read(frame: Frame) -> FromWorker {
        let Frame { mut header, blobs } = frame;
        let id = header.get("id").and_then(Value::as_u64);
        let mut take = |key: &str| header.get_mut(key).map(Value::take).unwrap_or_default();
        let text = |value: Value| value.as_str().map(str::to_string);
        let op = text(take("op")).unwrap_or_default();
        match op.as_str() {
            "loaded" => FromWorker::Loaded {
                custom_model: take("custom_model").as_bool().unwrap_or(false),
                native_model: Some(take("native_model")).filter(|v| !v.is_null()),
            },
            "load_error" => FromWorker::LoadError(
                text(take("error")).unwrap_or_else(|| "loading failed".to_string()),
            ),
            "result" => FromWorker::Result {
                id,
                value: take("value"),
                timings: match take("timings") {
                    Value::Object(map) => map,
                    _ => Map::new(),
                },
                stats: match take("stats") {
                    Value::Object(map) => Some(map),
                    _ => None,
                },
                path: text(take("path")).unwrap_or_default(),
            },
            "error" => FromWorker::Error {
                id,
                class: text(take("class")).unwrap_or_default(),
                message: text(take("message")).unwrap_or_default(),
                invalid: take("invalid").as_bool().unwrap_or(false),
                path: text(take("path")).unwrap_or_default(),
            },
            "pre" => FromWorker::Pre {
                id,
                data: take("data"),
                blobs,
            },
            "call" => FromWorker::Call {
                id,
                call: take("call"),
                endpoint: text(take("endpoint")).unwrap_or_default(),
                version: text(take("version")),
                data: take("data"),
            },
            _ => FromWorker::Unknown(op),
        }
    }

    /// The request a message answers or belongs to.
    pub fn id(&self) -> Option<u64> {
        match self {
            FromWorker::Result { id, .. }
            | FromWorker::Error { id, .. }
            | FromWorker::Pre { id, .. }
            | FromWorker::Call { id, .. } => *id,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn frames_become_typed_messages() {
        let read = |header: Value| FromWorker::read(Frame::new(header));
        assert_eq!(
            read(json!({"op": "loaded", "custom_model": true})),
            FromWorker::Loaded {
                custom_model: true,
                native_model: None
            }
        );
        assert_eq!(
            read(
                json!({"op": "error", "id": 3, "class": "ValueError", "message": "x", "invalid": true})
            ),
            FromWorker::Error {
                id: Some(3),
                class: "ValueError".into(),
                message: "x".into(),
                invalid: true,
                path: String::new(),
            }
        );
        let result = read(json!({"op": "result", "id": 4, "value": [1], "path": "python"}));
        assert_eq!(result.id(), Some(4));
        assert!(matches!(result, FromWorker::Result { ref path, .. } if path == "python"));
        let call = read(json!({"op": "call", "id": 5, "call": 1, "endpoint": "e", "data": {}}));
        assert!(matches!(call, FromWorker::Call { version: None, .. }));
        assert_eq!(
            read(json!({"op": "nope"})),
            FromWorker::Unknown("nope".into())
        );
        assert_eq!(read(json!({})), FromWorker::Unknown(String::new()));
    }
}
