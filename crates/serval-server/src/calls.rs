//! `send_request` from an endpoint's Python code: the fourth protocol adapter. A call goes through
//! the front door as an internal caller (no key, no server-wide bound: the request that made the
//! call holds its place already), bounded by the calling request's deadline.

use std::sync::Arc;

use std::sync::Weak;

use serde_json::Value;
use serval_python::{CallFuture, Calls, PoolId};
use tokio::time::Instant;

use crate::pipeline::Protocol;
use crate::pipeline::shadow::{Replay, Replayed, cut};
use crate::pipeline::{
    Budget, Credential, Decode, Decoded, Door, Endpoint, Error, Input, Payload, Reservation,
};

pub struct ServerCalls {
    pub door: Weak<Door>,
}

/// A call's body: JSON the calling code built, already in memory (it came from a worker's frame,
/// so it is not charged again).
struct CallBody(Value);

impl Decode for CallBody {
    type Extra = ();

    /// A body field (calls have no headers or query).
    async fn sticky_key(
        &mut self,
        source: &serval_store::Sticky,
        _budget: &Budget,
        memory: Reservation,
    ) -> Result<(Option<Vec<u8>>, Reservation), Error> {
        let key = match source {
            serval_store::Sticky::Field(field) => crate::wire::json::tree_field_key(&self.0, field),
            _ => None,
        };
        Ok((key, memory))
    }

    async fn replay(
        &mut self,
        _budget: &Budget,
        memory: Reservation,
    ) -> Result<(Option<Arc<dyn Replay>>, Reservation), Error> {
        Ok((Some(Arc::new(KeptCall(self.0.clone()))), memory))
    }

    async fn decode(
        self,
        _: &Arc<Endpoint>,
        _: &Budget,
        memory: Reservation,
    ) -> Result<Decoded<()>, Error> {
        Ok(Decoded {
            input: Input::Body(Payload::Json(self.0)),
            extra: (),
            memory,
        })
    }
}

/// A call's body kept for a shadow's copy.
struct KeptCall(Value);

impl Replay for KeptCall {
    fn decode<'a>(
        &'a self,
        _: &'a Arc<Endpoint>,
        _: &'a Budget,
        memory: Reservation,
    ) -> Replayed<'a> {
        Box::pin(std::future::ready(Ok((
            Input::Body(Payload::Json(self.0.clone())),
            memory,
        ))))
    }

    fn size(&self) -> usize {
        crate::wire::json::tree_size(&self.0)
    }

    fn text(&self, limit: usize) -> String {
        cut(self.0.to_string(), limit)
    }
}

/// The text a calling `send_request` raises with.
fn error_text(error: Error) -> String {
    match error {
        Error::NotFound { name, version } => format!(
            "endpoint '{}' not found",
            serval_store::names::endpoint_url(&name, version.as_deref())
        ),
        other => other.to_string(),
    }
}

impl Calls for ServerCalls {
    fn call(
        &self,
        _caller: PoolId,
        endpoint: String,
        version: Option<String>,
        data: Value,
        deadline: Instant,
    ) -> CallFuture {
        let door = self.door.upgrade();
        Box::pin(async move {
            let door = door.ok_or("the server is shutting down")?;
            // clearml builds `<base>/<endpoint>[/<version>]`: an endpoint may carry its version.
            let (name, version) = match (endpoint.split_once('/'), version) {
                (Some((name, v)), None) => (name.to_string(), Some(v.to_string())),
                (_, version) => (endpoint.clone(), version),
            };
            let timeout = deadline.saturating_duration_since(Instant::now());
            let admitted = door
                .admit(Protocol::SendRequest, Credential::Internal)
                .map_err(error_text)?;
            let memory = admitted.reservation();
            let served = admitted
                .serve(&name, version.as_deref(), timeout, memory, CallBody(data))
                .await
                .map_err(error_text)?;
            served
                .output
                .into_body()
                .ok_or_else(|| "unexpected tensor reply".to_string())
        })
    }
}
