//! API keys (`serve --require-auth`): one check for every protocol. A key arrives as
//! `Authorization: Bearer KEY` (HTTP) or `authorization` metadata (gRPC); its sha256 is compared
//! in constant time with every key of the served routing table (no early exit, so timing tells
//! nothing about which bytes matched). Keys come with the table: a new or revoked key takes effect
//! with the next reload, on every server. The front door calls [`authenticate`] for inference;
//! the other protected routes call it through their route group's layer.

use serval_store::ApiKey;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::Error;

/// The key in an `Authorization` value (`Bearer KEY`, scheme case-insensitive).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, key) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| key.trim())
        .filter(|k| !k.is_empty())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The current (unexpired) key among `keys` whose secret is `secret`.
fn find(keys: &[ApiKey], secret: &str) -> Option<ApiKey> {
    let digest = hex(&Sha256::digest(secret.as_bytes()));
    let mut found = None;
    for candidate in keys {
        let equal: bool = candidate.sha256.as_bytes().ct_eq(digest.as_bytes()).into();
        if equal {
            found = Some(candidate);
        }
    }
    found
        .filter(|k| !k.expired(serval_store::now_ms()))
        .cloned()
}

/// The key an `Authorization` value stands for, or why there is none.
pub fn authenticate(keys: &[ApiKey], authorization: Option<&str>) -> Result<ApiKey, Error> {
    let Some(secret) = authorization.and_then(bearer) else {
        return Err(Error::Unauthenticated(
            "an API key is required: send 'Authorization: Bearer <key>' (serval auth create-key)"
                .to_string(),
        ));
    };
    find(keys, secret).ok_or_else(|| {
        Error::Unauthenticated("the API key is not valid (unknown, revoked or expired)".to_string())
    })
}

/// A valid key used for an endpoint outside its scope.
pub fn out_of_scope(endpoint: &str) -> Error {
    Error::Forbidden(format!("the API key may not call endpoint '{endpoint}'"))
}

/// Who made a request on a keyed route (`None`: keys are not required), for listings that show
/// a scoped key only its endpoints.
#[derive(Debug, Clone)]
pub struct Caller(pub Option<ApiKey>);

/// Whether `key` may call `endpoint` (`Forbidden` if not).
pub fn authorize(key: &ApiKey, endpoint: &str) -> Result<(), Error> {
    if key.allows(endpoint) {
        Ok(())
    } else {
        Err(out_of_scope(endpoint))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_credentials() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("abc"), None);
    }

    #[test]
    fn keys_are_found_by_their_secret_and_refused_with_a_reason() {
        let key = ApiKey {
            name: "ci".into(),
            sha256: hex(&Sha256::digest(b"s3cret")),
            endpoints: None,
            created_ms: 0,
            expires_ms: None,
            role: serval_store::Role::Infer,
        };
        let keys = std::slice::from_ref(&key);
        assert_eq!(
            authenticate(keys, Some("Bearer s3cret")).unwrap().name,
            "ci"
        );
        let missing = authenticate(keys, None).unwrap_err();
        assert!(matches!(missing, Error::Unauthenticated(ref m) if m.contains("required")));
        let wrong = authenticate(keys, Some("Bearer nope")).unwrap_err();
        assert!(matches!(wrong, Error::Unauthenticated(ref m) if m.contains("not valid")));
    }
}
