//! `triton` endpoints forwarded to a V2 gRPC server — an existing Triton — as clearml-serving
//! forwards them: `ModelInfer` on model `<url with / → _>` version `"1"`, the endpoint's
//! `--output-name`s requested, gzip when `config --triton-grpc-compression` is on, bounded by the
//! request's deadline. An upstream error is a 502 naming its gRPC status; past the deadline, 504.

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use tokio::time::Instant;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;

use super::{Endpoint, Input, Output, Payload};
use crate::error::Error;
use crate::wire::proto::ModelInferRequest;
use crate::wire::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use crate::wire::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use crate::wire::proto::model_infer_response::InferOutputTensor;
use crate::wire::{Datatype, Elements, InferTensor};

/// Where a forwarded endpoint's requests go.
pub struct Upstream {
    /// `host:port`, for errors and the status.
    pub address: String,
    /// The model name sent in `ModelInfer`.
    pub model: String,
    client: GrpcInferenceServiceClient<Channel>,
}

/// The Triton model name of an endpoint url: `name` or `name_version`.
pub fn model_name(url: &str) -> String {
    url.replace('/', "_")
}

impl Upstream {
    /// A client for `address` (connected on first use; must be called within a tokio runtime).
    pub fn new(
        address: &str,
        url: &str,
        compression: bool,
    ) -> Result<Upstream, tonic::transport::Error> {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))?
            .connect_timeout(Duration::from_secs(5));
        let mut client = GrpcInferenceServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        if compression {
            client = client
                .send_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Gzip);
        }
        Ok(Upstream {
            address: address.to_string(),
            model: model_name(url),
            client,
        })
    }

    /// Runs `inputs` on the upstream model, asking for `outputs` (all when empty).
    pub async fn infer(
        &self,
        inputs: Vec<InferTensor>,
        outputs: &[String],
        deadline: Instant,
    ) -> Result<Vec<InferTensor>, Error> {
        // Encoded as the server encodes its outputs: metadata plus raw little-endian contents.
        let (metas, raw) = crate::wire::grpc::outputs(inputs);
        let tensors = metas
            .into_iter()
            .map(|m| InferInputTensor {
                name: m.name,
                datatype: m.datatype,
                shape: m.shape,
                parameters: m.parameters,
                contents: None,
            })
            .collect();
        let request = ModelInferRequest {
            model_name: self.model.clone(),
            model_version: "1".to_string(),
            id: String::new(),
            parameters: Default::default(),
            inputs: tensors,
            outputs: outputs
                .iter()
                .map(|name| InferRequestedOutputTensor {
                    name: name.clone(),
                    parameters: Default::default(),
                })
                .collect(),
            raw_input_contents: raw,
        };
        let mut request = tonic::Request::new(request);
        let left = deadline.saturating_duration_since(Instant::now());
        request.set_timeout(left);
        let response = match self.client.clone().model_infer(request).await {
            Ok(response) => response.into_inner(),
            Err(status) if status.code() == tonic::Code::DeadlineExceeded => {
                return Err(Error::Timeout(left));
            }
            Err(status) => {
                return Err(Error::Upstream(format!(
                    "the V2 gRPC server at {} answered {:?} for model '{}': {}",
                    self.address,
                    status.code(),
                    self.model,
                    status.message()
                )));
            }
        };
        let raw = response.raw_output_contents;
        response
            .outputs
            .into_iter()
            .enumerate()
            .map(|(i, output)| self.output(output, raw.get(i)))
            .collect()
    }

    fn output(&self, output: InferOutputTensor, raw: Option<&Bytes>) -> Result<InferTensor, Error> {
        let bad = |what: String| {
            Error::Upstream(format!(
                "the V2 gRPC server at {} sent output '{}' {what}",
                self.address, output.name
            ))
        };
        let datatype = Datatype::parse(&output.datatype)
            .ok_or_else(|| bad(format!("of unknown datatype '{}'", output.datatype)))?;
        let shape = output
            .shape
            .iter()
            .map(|d| usize::try_from(*d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| bad("with a negative dimension".into()))?;
        let data = match (raw, &output.contents) {
            (Some(bytes), _) => Elements::from_le_bytes(datatype, bytes, &output.name)
                .map_err(|e| bad(e.to_string()))?,
            (None, Some(contents)) => {
                crate::wire::grpc::contents_elements(&output.name, datatype, contents.clone())
                    .map_err(|e| bad(e.to_string()))?
            }
            (None, None) => return Err(bad("without data".into())),
        };
        InferTensor::new(output.name.clone(), shape, data).map_err(|e| bad(e.to_string()))
    }
}

/// Inputs for the upstream from a clearml body without preprocess code: `{"<input name>": nested
/// list, ...}`, typed by the endpoint's `--input-type`s.
fn body_inputs(endpoint: &Endpoint, body: &Value) -> Result<Vec<InferTensor>, Error> {
    let Value::Object(map) = body else {
        return Err(Error::InvalidInput(format!(
            "endpoint '{}' forwards to a V2 server: send {{\"<input name>\": nested list, ...}}",
            endpoint.url
        )));
    };
    let declared = &endpoint.signature.inputs;
    if declared.is_empty() {
        return Ok(map
            .iter()
            .map(|(name, value)| InferTensor::from_json(name.clone(), value, None))
            .collect());
    }
    declared
        .iter()
        .map(|meta| {
            let value = map
                .get(&meta.name)
                .ok_or_else(|| Error::InvalidInput(format!("missing input '{}'", meta.name)))?;
            Ok(InferTensor::from_json(
                meta.name.clone(),
                value,
                Some(meta.datatype),
            ))
        })
        .collect()
}

/// Serves a request on a forwarded endpoint without Python code.
pub async fn run(
    endpoint: &Endpoint,
    upstream: &Upstream,
    input: Input,
    deadline: Instant,
) -> Result<Output, Error> {
    match input {
        Input::Tensors {
            inputs, outputs, ..
        } => {
            let wanted = outputs.unwrap_or_else(|| endpoint.output_names.clone());
            Ok(Output::Tensors(
                upstream.infer(inputs, &wanted, deadline).await?,
            ))
        }
        Input::Body(Payload::Json(body)) => {
            let inputs = body_inputs(endpoint, &body)?;
            let outputs = upstream
                .infer(inputs, &endpoint.output_names, deadline)
                .await?;
            Ok(Output::Body(Value::Object(
                outputs
                    .into_iter()
                    .map(|t| (t.name.clone(), t.to_json()))
                    .collect(),
            )))
        }
        Input::Body(_) => Err(Error::InvalidInput(format!(
            "endpoint '{}' forwards to a V2 server and takes a JSON body",
            endpoint.url
        ))),
    }
}
