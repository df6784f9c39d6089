//! serval's model pipeline, shared by `serval predict` and the server: detecting a model file's
//! format from its content, loading it into the right engine, and the default mapping between
//! clearml-style JSON bodies and tensors, used when an endpoint has no preprocess code.

pub mod formats;
pub mod linear;
pub mod mapping;
pub mod reply;
pub mod rows;

pub use formats::{Loaded, ModelFormat, load_engine, load_model};
pub use mapping::{nested, request_to_inputs, shape_and_leaves};
pub use reply::{
    ReplyText, explained_reply_json, outputs_by_name, reply_from_outputs, reply_json, tensor_json,
};
