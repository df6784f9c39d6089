//! API keys (`serve --require-auth`): one check for every protocol. A key arrives as
//! `Authorization: Bearer KEY` (HTTP) or `authorization` metadata (gRPC); its sha256 is compared
//! in constant time with every key of the served routing table (no early exit, so timing tells
//! nothing about which bytes matched). Keys come with the table: a new or revoked key takes effect
//! with the next reload, on every server.

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::AppState;

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer` credential.
    Missing,
    /// Not a current key (unknown, revoked or expired).
    Invalid,
    /// A valid key that may not call this endpoint.
    Scope(String),
}

impl Denied {
    pub fn message(&self) -> String {
        match self {
            Denied::Missing => {
                "an API key is required: send 'Authorization: Bearer <key>' (serval auth create-key)"
                    .to_string()
            }
            Denied::Invalid => "the API key is not valid (unknown, revoked or expired)".to_string(),
            Denied::Scope(endpoint) => {
                format!("the API key may not call endpoint '{endpoint}'")
            }
        }
    }
}

/// The key in an `Authorization` value (`Bearer KEY`, scheme case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, key) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim())
        .filter(|k| !k.is_empty())
}

/// Checks a credential for a call to `endpoint` (`None`: no particular endpoint).
pub fn check(
    state: &AppState,
    authorization: Option<&str>,
    endpoint: Option<&str>,
) -> Result<(), Denied> {
    if !state.config.require_auth {
        return Ok(());
    }
    let key = authorization.and_then(bearer).ok_or(Denied::Missing)?;
    let key = find(state, key).ok_or(Denied::Invalid)?;
    match endpoint {
        Some(name) if !key.allows(name) => Err(Denied::Scope(name.to_string())),
        _ => Ok(()),
    }
}

/// The current (unexpired) key of the service with this secret.
fn find(state: &AppState, key: &str) -> Option<serval_store::ApiKey> {
    let digest = hex(&Sha256::digest(key.as_bytes()));
    let table = state.table.load();
    let mut found = None;
    for candidate in &table.api_keys {
        let equal: bool = candidate.sha256.as_bytes().ct_eq(digest.as_bytes()).into();
        if equal {
            found = Some(candidate);
        }
    }
    found
        .filter(|k| !k.expired(serval_store::now_ms()))
        .cloned()
}

/// What a request's credential may see: `None` when keys are not required (everything), else
/// the key (a request without a valid one never gets this far).
pub fn key_of(state: &AppState, authorization: Option<&str>) -> Option<serval_store::ApiKey> {
    if !state.config.require_auth {
        return None;
    }
    find(state, authorization.and_then(bearer)?)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a path needs: `None` = open (health), `Some(endpoint)` = a key, for that endpoint if named.
fn protection(path: &str, metrics: bool) -> Option<Option<&str>> {
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("health"), ..) => None,
        // The console's page and scripts hold no data; its API (`/api`) needs a key.
        (Some("ui"), ..) => None,
        (Some("v2"), Some("health"), _) => None,
        (Some("metrics"), None, _) => metrics.then_some(None),
        (Some("serve"), Some(name), _) => Some(Some(name)),
        (Some("v2"), Some("models"), Some(name)) => Some(Some(name)),
        _ => Some(None),
    }
}

/// The HTTP middleware: 401 (`WWW-Authenticate: Bearer`) or 403 before any work is done.
pub async fn layer(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !state.config.require_auth {
        return next.run(request).await;
    }
    let path = request.uri().path().to_string();
    let Some(endpoint) = protection(&path, state.config.auth_metrics) else {
        return next.run(request).await;
    };
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match check(&state, authorization, endpoint) {
        Ok(()) => next.run(request).await,
        Err(denied) => {
            let status = match denied {
                Denied::Scope(_) => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            // Each REST dialect's error shape: V2 `{"error"}`, clearml `{"detail"}`.
            let field = if path.starts_with("/v2") {
                "error"
            } else {
                "detail"
            };
            let mut response = (
                status,
                axum::Json(serde_json::json!({ field: denied.message() })),
            )
                .into_response();
            if status == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"serval\""),
                );
            }
            response
        }
    }
}

/// The gRPC check: `UNAUTHENTICATED` or `PERMISSION_DENIED`.
pub fn check_grpc(
    state: &AppState,
    metadata: &tonic::metadata::MetadataMap,
    endpoint: Option<&str>,
) -> Result<(), tonic::Status> {
    let authorization = metadata.get("authorization").and_then(|v| v.to_str().ok());
    check(state, authorization, endpoint).map_err(|denied| match denied {
        Denied::Scope(_) => tonic::Status::permission_denied(denied.message()),
        _ => tonic::Status::unauthenticated(denied.message()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_what_they_need() {
        assert_eq!(protection("/health/live", true), None);
        assert_eq!(protection("/v2/health/ready", true), None);
        assert_eq!(protection("/metrics", false), None);
        assert_eq!(protection("/metrics", true), Some(None));
        assert_eq!(protection("/serve/iris/2", false), Some(Some("iris")));
        assert_eq!(
            protection("/v2/models/iris/versions/1/infer", false),
            Some(Some("iris"))
        );
        assert_eq!(protection("/v2/repository/index", false), Some(None));
        assert_eq!(protection("/v2", false), Some(None));
        assert_eq!(protection("/ui/app.js", false), None);
        assert_eq!(protection("/api/v1/overview", false), Some(None));
    }

    #[test]
    fn bearer_credentials() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }
}
