//! Replies compressed for the clients that ask (`Accept-Encoding`), and nothing else done for
//! those that do not.
//!
//! tower-http's compression layer, as a router's layer, wraps every route (axum boxes it once
//! more), every response and its body, whether or not the request accepts an encoding; one
//! request through the whole router (`benches/metrics.rs`, criterion) cost 8 % more with it than
//! without it, for clients like wrk or curl that send no `Accept-Encoding`. Here the router is
//! wrapped from outside: a request without the header goes straight to it, one with it through
//! tower-http's compression, unchanged. The one difference: a reply to a request that did
//! not ask has no `Vary: accept-encoding` (tower-http adds it to every reply it could have
//! compressed), which no cache needs to serve it right — an uncompressed reply suits every
//! client.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::Request;
use axum::http::header::ACCEPT_ENCODING;
use axum::response::Response;
use tower::Service;
use tower_http::compression::{Compression, DefaultPredicate, ResponseFuture};

/// A service (the router) whose replies are compressed for the requests that accept an encoding.
#[derive(Clone)]
pub struct WhenAsked<S> {
    plain: S,
    compressed: Compression<S>,
}

impl<S: Clone> WhenAsked<S> {
    pub fn new(inner: S) -> WhenAsked<S> {
        WhenAsked {
            compressed: Compression::new(inner.clone()),
            plain: inner,
        }
    }
}

impl<S, B> Service<Request<B>> for WhenAsked<S>
where
    S: Service<Request<B>, Response = Response, Error = Infallible> + Clone,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Reply<S::Future>;

    /// Both services wrap the same router (always ready): readiness is the plain one's.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.plain.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        if request.headers().contains_key(ACCEPT_ENCODING) {
            Reply::Compressed {
                inner: self.compressed.call(request),
            }
        } else {
            Reply::Plain {
                inner: self.plain.call(request),
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The route's reply, through tower-http's compression when the request asked.
    #[project = ReplyProjection]
    pub enum Reply<F> {
        Plain { #[pin] inner: F },
        Compressed { #[pin] inner: ResponseFuture<F, DefaultPredicate> },
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for Reply<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            ReplyProjection::Plain { inner } => inner.poll(cx),
            ReplyProjection::Compressed { inner } => {
                inner.poll(cx).map_ok(|reply| reply.map(Body::new))
            }
        }
    }
}
