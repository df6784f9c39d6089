//! Serving connections ourselves (hyper-util), for what `axum::serve` does not offer: a bound on
//! open connections, a clock on every connection ([`clock`]: silent, slow or idle clients cannot
//! hold one, and at the cap idle ones make room for new clients), and a drain in two steps so
//! keep-alive clients leave cleanly instead of finding their connection closed under a request:
//!
//! 1. [`Phase::Draining`]: stop accepting (connections already in the listen backlog are taken,
//!    not reset); existing connections keep being served, every HTTP/1
//!    request answered from now on is answered with `Connection: close` ([`CloseWhenDraining`]),
//!    so each client leaves after its next answer;
//! 2. [`Phase::Closing`]: what is left gets a graceful shutdown (HTTP/1: close when idle; HTTP/2
//!    and gRPC: GOAWAY, in-flight streams finish).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::{HeaderValue, Request, Version, header};
use axum::response::Response;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

mod clock;

use clock::{Activity, Expiry, InFlight, Registry, Sending};

/// Where the server is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    Draining,
    Closing,
}

/// Bounds on connections.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open connections per listener; more are closed at accept.
    pub max_connections: usize,
    /// How long a client may take from connecting to a complete first request head (TLS,
    /// protocol detection, HTTP/2 preface included), and an HTTP/1 connection may go without a
    /// request in progress (the keep-alive idle time, or sending the next request's headers).
    pub header_read_timeout: Duration,
    /// A connection with no request in progress for this long is closed (HTTP/2: GOAWAY).
    pub idle_timeout: Duration,
    /// Set when the server starts draining: HTTP/1 answers say `Connection: close` from then on.
    pub draining: Arc<AtomicBool>,
}

/// The app of one connection: counts its requests for its clock, and while draining answers an
/// HTTP/1 request with `Connection: close`. Decided when the request arrives, so that nothing is
/// shared or cloned per request but the connection's own `Activity` (a request already in flight
/// when draining starts is answered as before; the client's next request on that connection gets
/// the header). The router sits in a `RefCell`: a connection's requests are all dispatched from
/// its own task, one call at a time.
struct CloseWhenDraining<A> {
    app: std::cell::RefCell<A>,
    draining: Arc<AtomicBool>,
    activity: Arc<Activity>,
}

impl<A: App> hyper::service::Service<Request<hyper::body::Incoming>> for CloseWhenDraining<A> {
    type Response = Response;
    type Error = Infallible;
    type Future = Closing<A::Future>;

    fn call(&self, request: Request<hyper::body::Incoming>) -> Self::Future {
        let http1 = request.version() <= Version::HTTP_11;
        let close = http1 && self.draining.load(Ordering::Relaxed);
        let in_flight = if http1 {
            self.activity.begin_http1()
        } else {
            self.activity.begin()
        };
        Closing {
            inner: tower::Service::call(&mut *self.app.borrow_mut(), request),
            close,
            in_flight,
        }
    }
}

pin_project_lite::pin_project! {
    /// A response future that adds `Connection: close` when asked to; its request counts as in
    /// progress on its connection until the future is done or dropped; a streamed body counts
    /// as being sent until it is sent or dropped.
    struct Closing<F> {
        #[pin]
        inner: F,
        close: bool,
        in_flight: InFlight,
    }
}

pin_project_lite::pin_project! {
    /// A streamed response body, counted as being sent on its connection until it is.
    struct Holding {
        #[pin]
        body: axum::body::Body,
        _sending: Sending,
    }
}

impl http_body::Body for Holding {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl<F: Future<Output = Result<Response, Infallible>>> Future for Closing<F> {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = std::task::ready!(this.inner.poll(cx))?;
        // A body of unknown length (a streamed reply) may take long to send: meanwhile HTTP/1's
        // header timeout does not apply to its connection (the idle timeout and eviction do).
        if http_body::Body::size_hint(response.body())
            .exact()
            .is_none()
        {
            let sending = this.in_flight.activity().sending();
            response = response.map(|body| {
                axum::body::Body::new(Holding {
                    body,
                    _sending: sending,
                })
            });
        }
        if *this.close {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        Poll::Ready(Ok(response))
    }
}

/// What a connection serves: an axum router, or one with replies compressed when asked
/// ([`crate::http::App`]).
pub trait App:
    tower::Service<
        Request<hyper::body::Incoming>,
        Response = Response,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<A> App for A where
    A: tower::Service<
            Request<hyper::body::Incoming>,
            Response = Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// Accepts and serves connections until the phase leaves `Serving`, serves what is left in the
/// listen backlog, closes the listener (then reports it on `closed`), and waits for every
/// connection to end (see the module docs).
pub async fn serve(
    listener: TcpListener,
    app: impl App,
    limits: Limits,
    mut phase: watch::Receiver<Phase>,
    closed: tokio::sync::oneshot::Sender<()>,
    tls: Option<tokio_rustls::TlsAcceptor>,
) {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(max));
    let registry = Arc::new(Registry::default());
    let mut refusals = Refusals::default();
    let mut leaving = false;
    // While leaving, at most this many more connections are taken (a client connecting as fast
    // as they are taken cannot keep the listener open).
    let mut backlog = BACKLOG_MAX;
    loop {
        let accepted = if leaving {
            // Connections the kernel has completed already (the listen backlog) are served too,
            // answered with `Connection: close`: closing the listener would reset them, and their
            // clients may have sent a request already. Then the listener closes.
            if backlog == 0 {
                break;
            }
            backlog -= 1;
            match std::future::poll_fn(|cx| Poll::Ready(listener.poll_accept(cx))).await {
                Poll::Ready(accepted) => accepted,
                Poll::Pending => break,
            }
        } else {
            let leave = async {
                let _ = phase.wait_for(|p| *p != Phase::Serving).await.map(|_| ());
            };
            tokio::select! {
                accepted = listener.accept() => accepted,
                () = leave => {
                    leaving = true;
                    continue;
                }
            }
        };
        let (stream, _) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            // At the cap: a connection with nothing in progress makes room (it closes at once).
            Err(_) if registry.evict_idle() => {
                tokio::time::timeout(EVICTION_WAIT, slots.clone().acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
            Err(_) => None,
        };
        let Some(slot) = slot else {
            refusals.refused(max);
            drop(stream);
            continue;
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
        let registered = registry.add();
        let app = CloseWhenDraining {
            app: std::cell::RefCell::new(app.clone()),
            draining: limits.draining.clone(),
            activity: registered.activity.clone(),
        };
        let limits = limits.clone();
        let phase = phase.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let activity = &registered.activity;
            match tls {
                None => serve_io(stream, app, activity, &limits, phase).await,
                Some(acceptor) => {
                    // The handshake runs on the connection's clock.
                    let clock =
                        clock::expiry(activity, limits.header_read_timeout, limits.idle_timeout);
                    tokio::select! {
                        handshake = acceptor.accept(stream) => match handshake {
                            Ok(stream) => serve_io(stream, app, activity, &limits, phase).await,
                            Err(e) => tracing::debug!("TLS handshake failed: {e}"),
                        },
                        expiry = clock => tracing::debug!("TLS handshake unfinished: {expiry:?}"),
                    }
                }
            }
            drop(registered);
            drop(slot);
        });
    }
    drop(listener);
    let _ = closed.send(());
    // Every connection holds a slot until it ends.
    let _ = slots.acquire_many(max as u32).await;
}

/// The most connections taken from the listen backlog once draining starts (Linux's default
/// `somaxconn`: what can be waiting at that moment).
const BACKLOG_MAX: usize = 4096;

/// How long the accept loop waits for an evicted connection to give up its slot.
const EVICTION_WAIT: Duration = Duration::from_secs(1);

/// How long a connection closed by its clock may take to say goodbye (HTTP/2 GOAWAY) before it
/// is dropped.
const GOODBYE: Duration = Duration::from_secs(1);

/// Connections refused at the cap, logged at most every 10 s with how many.
#[derive(Default)]
struct Refusals {
    count: u64,
    logged: Option<std::time::Instant>,
}

impl Refusals {
    fn refused(&mut self, max: usize) {
        self.count += 1;
        let now = std::time::Instant::now();
        if self
            .logged
            .is_none_or(|at| now.duration_since(at) >= Duration::from_secs(10))
        {
            tracing::warn!(
                "{max} connections open, all busy: closed {} new connection(s) (serve --max-connections)",
                self.count
            );
            self.count = 0;
            self.logged = Some(now);
        }
    }
}

/// Why a connection is being stopped.
enum Stop {
    /// The server is closing (the phase is `Closing`).
    Closing,
    /// The connection's clock ran out.
    Expired(Expiry),
}

/// Serves one connection until it ends: shut down gracefully when the phase is `Closing`, closed
/// when its clock runs out. The clock and the phase are watched by a task of their own that
/// sends one message when the connection must stop: the connection's task is woken on every
/// request, and polling a clock and two notifications each time (each poll of a `Notify` takes
/// its lock) was a measurable part of a small request's cost.
async fn serve_io<I, A: App>(
    io: I,
    app: CloseWhenDraining<A>,
    activity: &Arc<Activity>,
    limits: &Limits,
    mut phase: watch::Receiver<Phase>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // HTTP/1's header timeout is the connection clock's (see `clock`), not hyper's timer.
    builder.http1().header_read_timeout(None);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection(TokioIo::new(io), app);
    tokio::pin!(connection);
    let (stop_tx, stop) = tokio::sync::oneshot::channel();
    let watcher = {
        let activity = activity.clone();
        let (first, idle) = (limits.header_read_timeout, limits.idle_timeout);
        tokio::spawn(async move {
            let closing = async {
                // `wait_for`'s guard is not Send: drop it inside this block.
                let _ = phase.wait_for(|p| *p == Phase::Closing).await.map(|_| ());
            };
            let why = tokio::select! {
                () = closing => Stop::Closing,
                expiry = clock::expiry(&activity, first, idle) => Stop::Expired(expiry),
            };
            let _ = stop_tx.send(why);
        })
    };
    tokio::select! {
        biased;
        _ = connection.as_mut() => {}
        why = stop => match why {
            Ok(Stop::Closing) => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
            Ok(Stop::Expired(expiry)) => {
                tracing::debug!("closing a connection: {expiry:?}");
                if expiry != Expiry::FirstRequest && activity.used() {
                    // Nothing is in progress: HTTP/1 closes at once, HTTP/2 sends GOAWAY.
                    connection.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(GOODBYE, connection).await;
                }
            }
            // The watcher ended without a word (the runtime is going away): serve on.
            Err(_) => {
                let _ = connection.await;
            }
        }
    }
    watcher.abort();
}

/// Accepts connections with `TCP_NODELAY`: a small write (a response, an HTTP/2 WINDOW_UPDATE or
/// trailer) goes out at once instead of waiting, behind Nagle's algorithm, for the peer's delayed
/// ACK — 40 ms per 1 MB gRPC request without it.
pub fn no_delay(listener: TcpListener) -> impl axum::serve::Listener<Addr = std::net::SocketAddr> {
    use axum::serve::ListenerExt;
    listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    })
}

/// A TLS acceptor (rustls) from PEM files: the certificate chain and its private key. ALPN
/// offers HTTP/2 (gRPC) and HTTP/1.1.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the TLS certificate {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{} holds no PEM certificate", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read the TLS private key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("the TLS certificate and key do not work together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Raises the soft limit of open files to the hard limit (many connections need many fds);
/// returns the limit now in force.
pub fn raise_fd_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some(hard);
    }
    Some(soft)
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A client whose connection the kernel completed, its request sent, before the server looks
    /// again is answered (`Connection: close`) when draining starts — not reset by the listener
    /// closing under it.
    #[tokio::test]
    async fn connections_in_the_backlog_when_draining_starts_are_answered() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        client
            .write_all(b"GET /x HTTP/1.1\r\nHost: serval\r\n\r\n")
            .await
            .unwrap();
        let (_phase_tx, phase) = watch::channel(Phase::Draining);
        let (closed_tx, closed) = tokio::sync::oneshot::channel();
        let app = axum::Router::new().route("/x", axum::routing::get(|| async { "answered" }));
        let limits = Limits {
            max_connections: 4,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            draining: Arc::new(AtomicBool::new(true)),
        };
        let server = tokio::spawn(serve(listener, app, limits, phase, closed_tx, None));
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.expect("no reset");
        let reply = String::from_utf8_lossy(&reply).to_lowercase();
        assert!(reply.starts_with("http/1.1 200"), "{reply}");
        assert!(
            reply.contains("connection: close") && reply.ends_with("answered"),
            "{reply}"
        );
        closed.await.unwrap();
        server.await.unwrap();
        // The listener is closed: a new client is refused.
        assert!(tokio::net::TcpStream::connect(address).await.is_err());
    }

    fn limits(header_read_timeout: Duration, idle_timeout: Duration) -> Limits {
        Limits {
            max_connections: 4,
            header_read_timeout,
            idle_timeout,
            draining: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Between two HTTP/1 requests, a client that starts the next request's headers and never
    /// finishes them is closed after the header timeout (here the idle timeout is an hour).
    #[tokio::test]
    async fn an_unfinished_head_on_a_used_connection_is_closed_after_the_header_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (_phase_tx, phase) = watch::channel(Phase::Serving);
        let (closed_tx, _closed) = tokio::sync::oneshot::channel();
        let app = axum::Router::new().route("/x", axum::routing::get(|| async { "answered" }));
        let limits = limits(Duration::from_millis(200), Duration::from_secs(3600));
        tokio::spawn(serve(listener, app, limits, phase, closed_tx, None));
        let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
        client
            .write_all(b"GET /x HTTP/1.1\r\nHost: serval\r\n\r\n")
            .await
            .unwrap();
        let mut reply = vec![0u8; 1024];
        let n = client.read(&mut reply).await.unwrap();
        assert!(String::from_utf8_lossy(&reply[..n]).ends_with("answered"));
        client
            .write_all(b"GET /x HTTP/1.1\r\nHost: ser")
            .await
            .unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(60), client.read_to_end(&mut rest));
        assert!(read.await.is_ok(), "the connection was not closed");
    }

    /// A request ends, as the connection's clock sees it, when its reply is ready; a streamed
    /// reply (no length known) is counted as being sent until it is (which lifts HTTP/1's header
    /// timeout), but leaves the connection idle: a client that never reads it cannot keep the
    /// connection from being evicted.
    #[tokio::test]
    async fn a_streamed_reply_is_counted_as_sending_but_leaves_its_connection_evictable() {
        use futures::StreamExt;
        let registry = Arc::new(Registry::default());
        let connection = registry.add();
        let reply = |streamed: bool| {
            let body = if streamed {
                let chunks = futures::stream::iter([Ok::<_, Infallible>("a")]).boxed();
                axum::body::Body::from_stream(chunks)
            } else {
                axum::body::Body::from("a")
            };
            Closing {
                inner: std::future::ready(Ok(Response::new(body))),
                close: false,
                in_flight: connection.activity.begin(),
            }
        };
        let response = reply(false).await.unwrap();
        assert!(connection.activity.idle() && !connection.activity.streaming());
        drop(response);
        let response = reply(true).await.unwrap();
        assert!(
            connection.activity.streaming(),
            "a streamed body is being sent"
        );
        assert!(connection.activity.idle());
        let sent = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap();
        assert_eq!(sent.to_bytes(), "a");
        assert!(!connection.activity.streaming());
        let unread = reply(true).await.unwrap();
        assert!(
            registry.evict_idle(),
            "an unread streamed reply does not hold its connection"
        );
        drop(unread);
    }
}
