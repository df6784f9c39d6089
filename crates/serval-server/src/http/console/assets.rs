//! The console's page: its files embedded in the binary at build time (no network, no build
//! step; uPlot vendored in `ui/vendor`), each served with a Content-Security-Policy that lets it
//! load and call nothing but this server.

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde_json::json;

use crate::state::AppState;

/// The page's files, embedded at build time (no network, no build step).
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("../../../ui/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../ui/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../../../ui/app.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../ui/vendor/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../../ui/vendor/uPlot.min.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../../../ui/favicon.svg"),
    ),
];

/// Everything the page may load or call: this server only.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Bytes the console's files take in the binary.
pub fn assets_size() -> usize {
    ASSETS.iter().map(|(_, _, bytes)| bytes.len()).sum()
}

/// The console's page and files (`serve --ui on`, the default): open, they hold no data.
pub fn page_routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(|| asset(Path("index.html".to_string()))))
        .route("/ui/{file}", get(asset))
}

async fn asset(Path(file): Path<String>) -> Response {
    let Some((_, content_type, bytes)) = ASSETS.iter().find(|(name, ..)| *name == file) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "detail": format!("no console file '{file}'") })),
        )
            .into_response();
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        *bytes,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_is_served_with_its_type_and_the_policy() {
        assert!(assets_size() > 50_000, "uPlot is embedded");
        for (name, content_type, bytes) in ASSETS {
            assert!(!bytes.is_empty(), "{name}");
            assert!(content_type.contains('/'), "{name}");
        }
        // The page loads only files this list serves.
        let index = std::str::from_utf8(ASSETS[0].2).unwrap();
        for reference in index.split(['"', '\'']).filter(|s| s.starts_with("/ui/")) {
            let file = reference.trim_start_matches("/ui/");
            assert!(
                ASSETS.iter().any(|(n, ..)| *n == file),
                "index.html loads {reference}, which is not embedded"
            );
        }
        assert!(!index.contains("http://") && !index.contains("https://"));
    }
}
