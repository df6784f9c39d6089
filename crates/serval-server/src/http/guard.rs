//! The API key on the routes that are not inference (inference routes are keyed by the front
//! door itself): a layer on a route group, added only when keys are required, answering in the
//! group's dialect. Model routes are scoped by the `{model}` of their path.

use axum::Router;
use axum::extract::{RawPathParams, Request, State};
use axum::http::header;
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};

use crate::auth;
use crate::http::clearml::ClearmlError;
use crate::http::v2::V2Error;
use crate::pipeline::Error;
use crate::state::AppState;

/// How a route group answers errors.
#[derive(Debug, Clone, Copy)]
pub enum Dialect {
    /// The Open Inference Protocol's `{"error": ...}`.
    V2,
    /// clearml's `{"detail": ...}` (also the console's API and `/metrics`).
    Detail,
}

impl Dialect {
    /// The refusal of `request` (never read: `Connection: close` if it has a body).
    fn answer(self, error: Error, request: &Request) -> Response {
        let mut response = match self {
            Dialect::V2 => V2Error(error).into_response(),
            Dialect::Detail => ClearmlError(error).into_response(),
        };
        if crate::http::body::declares_body(request.headers()) {
            crate::http::body::close(&mut response);
        }
        response
    }
}

fn authorization(request: &Request) -> Option<&str> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
}

/// Every route of `router` needs a valid key.
pub fn keyed(router: Router<AppState>, state: &AppState, dialect: Dialect) -> Router<AppState> {
    router.route_layer(from_fn_with_state((state.clone(), dialect), any_key))
}

/// Every route of `router` needs a key that may call the `{model}` of its path (V2 dialect).
pub fn model_scoped(router: Router<AppState>, state: &AppState) -> Router<AppState> {
    router.route_layer(from_fn_with_state(state.clone(), model_key))
}

async fn any_key(
    State((state, dialect)): State<(AppState, Dialect)>,
    mut request: Request,
    next: Next,
) -> Response {
    match state.door.authenticate(authorization(&request)) {
        Ok(key) => {
            // Listings show a scoped key only its endpoints.
            request.extensions_mut().insert(auth::Caller(key));
            next.run(request).await
        }
        Err(error) => dialect.answer(error, &request),
    }
}

async fn model_key(
    State(state): State<AppState>,
    params: RawPathParams,
    request: Request,
    next: Next,
) -> Response {
    let model = params
        .iter()
        .find(|(name, _)| *name == "model")
        .map(|(_, value)| value);
    let allowed = state
        .door
        .authenticate(authorization(&request))
        .and_then(|key| match (key, model) {
            (Some(key), Some(model)) => auth::authorize(&key, model),
            _ => Ok(()),
        });
    match allowed {
        Ok(()) => next.run(request).await,
        Err(error) => Dialect::V2.answer(error, &request),
    }
}
