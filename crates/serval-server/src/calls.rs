//! `send_request` from an endpoint's Python code: the fourth protocol adapter. A call is resolved
//! in the current routing table and served by the pipeline in-process, bounded by the calling
//! request's deadline.

use std::sync::Weak;

use arc_swap::ArcSwap;
use serde_json::Value;
use serval_python::{CallFuture, Calls, PoolId};
use tokio::time::Instant;

use crate::pipeline::{self, Context, Input, Output, Payload, Protocol};
use crate::table::RoutingTable;

pub struct ServerCalls {
    pub table: Weak<ArcSwap<RoutingTable>>,
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
        let table = self.table.upgrade();
        Box::pin(async move {
            let table = table.ok_or("the server is shutting down")?;
            // clearml builds `<base>/<endpoint>[/<version>]`: an endpoint may carry its version.
            let (name, version) = match (endpoint.split_once('/'), version) {
                (Some((name, v)), None) => (name.to_string(), Some(v.to_string())),
                (_, version) => (endpoint.clone(), version),
            };
            let error_text = |e: pipeline::Error| match e {
                pipeline::Error::NotFound { name, version } => format!(
                    "endpoint '{}' not found",
                    serval_store::names::endpoint_url(&name, version.as_deref())
                ),
                other => other.to_string(),
            };
            let target = table
                .load()
                .resolve(&name, version.as_deref(), fastrand::f64())
                .map_err(error_text)?;
            let ctx = Context {
                deadline,
                timeout: deadline.saturating_duration_since(Instant::now()),
                protocol: Protocol::SendRequest,
            };
            match pipeline::run(&target, Input::Body(Payload::Json(data)), ctx).await {
                Ok(Output::Body(value)) => Ok(value),
                Ok(Output::Tensors(_)) => Err("unexpected tensor reply".to_string()),
                Err(e) => Err(error_text(e)),
            }
        })
    }
}
