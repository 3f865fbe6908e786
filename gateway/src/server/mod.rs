//! Owns the network edge: TLS accept (rustls, ALPN h2 and http/1.1), HTTP serving (hyper),
//! routing, method and content-type checks, the audit endpoint's concurrency cap, the
//! `?timeout=` deadline, and draining on shutdown; connection lifetimes in [`conn`], body
//! reading in [`body`]. Must not parse AdmissionReviews or EventLists or call plugins: it hands
//! bodies to a [`Handler`].

pub mod body;
pub mod conn;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;

pub use body::{Body, BodyBudget, BodyError, BodyTimeout};
pub use conn::ConnLimits;

use self::tls::{Access, Peer, Route};
use crate::config::PluginKind;
use crate::wire::parse_go_duration;

/// Admission bodies larger than this are refused with 413. An AdmissionReview carries the object
/// and the old object, each up to the API server's 3 MiB write limit, plus envelope.
pub const DEFAULT_MAX_BODY: usize = 16 << 20;
/// The most of one audit batch held in memory at once: a larger batch is read and spooled in
/// parts of about this size, never refused. With truncation off (the API server's default), a
/// batch is up to 400 events with their full request and response objects: tens of MiB.
pub const DEFAULT_AUDIT_MAX_BODY: usize = 64 << 20;
/// Audit batches read and spooled at once. The API server sends batches concurrently when we
/// are slow (one goroutine each, no bound). More wait for a slot until their deadline, then
/// get 503 and are re-sent; a client trickling its body loses its slot at the minimum body rate.
pub const MAX_AUDIT_IN_FLIGHT: usize = 8;
/// `?timeout=` is clamped to this: the API server's own maximum for a webhook call
/// (`timeoutSeconds` is at most 30), so a larger value only holds a slot for longer.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);
/// The budget of a review that arrives without `?timeout=` (curl, `wasmgate check`): the v1
/// default `timeoutSeconds`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Kept back from the API server's `?timeout=` so that our answer is on the wire before it
/// stops waiting: a tenth of the budget, at most this much.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(100);
/// A TLS handshake that has not finished in this long is dropped (slow or stuck clients).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to read request headers on HTTP/1.1 (slowloris); also the longest an HTTP/1.1
/// connection waits idle between requests.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Request headers larger than this are refused (HTTP/1.1: 431; HTTP/2: the stream is reset).
/// The API server's webhook requests carry a few hundred bytes of headers.
pub const MAX_HEADER_BYTES: usize = 64 << 10;
/// On shutdown, and after a connection's graceful close starts, requests in flight get this
/// long to finish: the longest `?timeout=`.
pub const DRAIN_TIMEOUT: Duration = MAX_TIMEOUT;

/// A response the handler produced.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status.
    pub status: StatusCode,
    /// `application/json` or `text/plain; ...`.
    pub content_type: &'static str,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// A 200 JSON answer.
    pub fn json(body: Vec<u8>) -> Self {
        Answer {
            status: StatusCode::OK,
            content_type: "application/json",
            body: body.into(),
        }
    }

    /// A plain-text answer.
    pub fn text(status: StatusCode, body: impl Into<String>) -> Self {
        Answer {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Bytes::from(body.into()),
        }
    }

    /// An error as a Kubernetes `metav1.Status`, the shape the API server's client parses.
    pub fn status(status: StatusCode, message: impl std::fmt::Display) -> Self {
        let reason = match status {
            StatusCode::BAD_REQUEST => "BadRequest",
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::FORBIDDEN => "Forbidden",
            StatusCode::NOT_FOUND => "NotFound",
            StatusCode::METHOD_NOT_ALLOWED => "MethodNotAllowed",
            StatusCode::PAYLOAD_TOO_LARGE => "RequestEntityTooLarge",
            StatusCode::REQUEST_TIMEOUT => "Timeout",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "UnsupportedMediaType",
            StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
            _ => "InternalError",
        };
        let body = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message.to_string(), "reason": reason, "code": status.as_u16(),
        });
        Answer {
            status,
            content_type: "application/json",
            body: Bytes::from(body.to_string()),
        }
    }
}

/// What the endpoints mean; the server only carries bytes to and from it.
pub trait Handler: Send + Sync + 'static {
    /// An admission review for `kind`'s policies (or only `policy`), to be answered by
    /// `deadline`.
    fn admission(
        &self,
        kind: PluginKind,
        policy: Option<&str>,
        body: Bytes,
        deadline: Instant,
    ) -> impl Future<Output = Answer> + Send;
    /// An audit `EventList` body, read by the handler as it goes, to be answered by
    /// `deadline`.
    fn audit(&self, body: Body, deadline: Instant) -> impl Future<Output = Answer> + Send;
    /// The server refused a request on `endpoint` before the handler saw it (too large, too
    /// many in flight, ...), answering `answer`; for the handler's metrics.
    fn refused(&self, endpoint: &'static str, answer: &Answer, elapsed: Duration) {
        let _ = (endpoint, answer, elapsed);
    }
    /// Something happened to a connection (or a request body timed out); for the handler's
    /// metrics.
    fn connection(&self, event: ConnEvent) {
        let _ = event;
    }
    /// `GET /readyz`.
    fn ready(&self) -> Answer;
    /// `GET /metrics`.
    fn metrics(&self) -> Answer;
}

/// What happened to a connection, for metrics. Every [`ConnEvent::Opened`] is followed by one
/// [`ConnEvent::Closed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnEvent {
    /// Accepted under the connection cap (before the TLS handshake).
    Opened,
    /// Closed at accept: the connection cap was reached.
    Refused,
    /// Closed, and why.
    Closed(CloseReason),
    /// A request's body was cut off by a timeout (answered 408).
    BodyTimedOut(BodyTimeout),
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The TLS handshake did not finish within [`HANDSHAKE_TIMEOUT`].
    HandshakeTimeout,
    /// The TLS handshake failed (not TLS, a client certificate refused, ...).
    HandshakeFailed,
    /// No byte after the handshake within [`conn::FIRST_BYTES_TIMEOUT`].
    FirstBytesTimeout,
    /// HTTP/1.1 headers not complete within [`HEADER_READ_TIMEOUT`].
    HeaderTimeout,
    /// No request in flight for the idle timeout.
    IdleTimeout,
    /// The connection reached its maximum age.
    MaxAge,
    /// Its client cancelled too many requests (HTTP/2 rapid reset).
    CancelledRequests,
    /// The server is shutting down.
    Shutdown,
    /// The client closed it, or the protocol ended it normally.
    Client,
    /// Any other error (a protocol error, a reset, a keep-alive timeout).
    Error,
}

impl CloseReason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::HandshakeFailed => "handshake_failed",
            CloseReason::FirstBytesTimeout => "first_bytes_timeout",
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::MaxAge => "max_age",
            CloseReason::CancelledRequests => "cancelled_requests",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Client => "client",
            CloseReason::Error => "error",
        }
    }

    /// Why a connection that ended with `error` ended.
    fn of_error(error: &(dyn std::error::Error + 'static)) -> CloseReason {
        let mut cause = Some(error);
        let mut reason = CloseReason::Error;
        while let Some(e) = cause {
            if let Some(io) = e.downcast_ref::<std::io::Error>()
                && io
                    .get_ref()
                    .is_some_and(|inner| inner.is::<conn::NoFirstBytes>())
            {
                return CloseReason::FirstBytesTimeout;
            }
            if e.downcast_ref::<hyper::Error>()
                .is_some_and(hyper::Error::is_timeout)
            {
                reason = CloseReason::HeaderTimeout;
            }
            cause = e.source();
        }
        reason
    }
}

/// Reports [`ConnEvent::Closed`] when dropped, however the connection's task ends.
struct OpenConnection<H: Handler> {
    handler: Arc<H>,
    reason: CloseReason,
}

impl<H: Handler> OpenConnection<H> {
    fn ends(&mut self, reason: CloseReason) {
        self.reason = reason;
    }
}

impl<H: Handler> Drop for OpenConnection<H> {
    fn drop(&mut self) {
        self.handler.connection(ConnEvent::Closed(self.reason));
    }
}

/// Server limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest admission body accepted.
    pub max_body: usize,
    /// The most of one audit body held at once (see [`DEFAULT_AUDIT_MAX_BODY`]).
    pub audit_max_body: usize,
    /// Body bytes all requests may hold together (see [`body::DEFAULT_BODY_BUDGET`]).
    pub body_budget: usize,
    /// Connection lifetimes and the cap on open connections.
    pub conn: ConnLimits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body: DEFAULT_MAX_BODY,
            audit_max_body: DEFAULT_AUDIT_MAX_BODY,
            body_budget: body::DEFAULT_BODY_BUDGET,
            conn: ConnLimits::default(),
        }
    }
}

/// The limits and the shared state of routing.
struct Limits {
    config: ServerConfig,
    audit_slots: Semaphore,
    budget: BodyBudget,
}

/// The TLS configuration new connections use; swapped whole when certificates change, while
/// established connections keep the one they started with.
pub type TlsConfigHandle = Arc<ArcSwap<tls::TlsState>>;

/// Serves HTTPS on `listener` until `shutdown` resolves, then stops accepting and waits up to
/// [`DRAIN_TIMEOUT`] for requests in flight.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    tls: TlsConfigHandle,
    handler: Arc<H>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX))
        .keep_alive_interval(conn::H2_KEEPALIVE_INTERVAL)
        .keep_alive_timeout(conn::H2_KEEPALIVE_TIMEOUT);
    let max_connections = config.conn.max_connections.max(1);
    let connections = Arc::new(Semaphore::new(max_connections));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let limits = Arc::new(Limits {
        audit_slots: Semaphore::new(MAX_AUDIT_IN_FLIGHT),
        budget: BodyBudget::new(config.body_budget),
        config,
    });
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Over the cap, the connection is closed at once: its descriptor is back at once, and
        // the client sees a reset instead of a handshake that never ends.
        let Ok(slot) = connections.clone().try_acquire_owned() else {
            handler.connection(ConnEvent::Refused);
            tracing::debug!(%peer, max_connections, "connection refused: too many open connections");
            continue;
        };
        handler.connection(ConnEvent::Opened);
        let mut open = OpenConnection {
            handler: handler.clone(),
            reason: CloseReason::Client,
        };
        if let Err(e) = conn::configure_socket(&tcp) {
            tracing::debug!(%peer, "cannot set socket options: {e}");
        }
        let tls = tls.load_full();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
        let handler = handler.clone();
        let limits = limits.clone();
        let builder = builder.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    open.ends(CloseReason::HandshakeFailed);
                    return tracing::debug!(%peer, "TLS handshake failed: {e}");
                }
                Err(_) => {
                    open.ends(CloseReason::HandshakeTimeout);
                    return tracing::debug!(%peer, "TLS handshake timed out");
                }
            };
            // The client certificate is judged once per connection, for every route that needs
            // one; each request carries the verdict to `route`.
            let client = tls.clients.peer(stream.get_ref().1.peer_certificates());
            let activity = conn::Activity::new();
            let requests = activity.clone();
            let route_limits = limits.clone();
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(client);
                // Counted until the request's future is dropped: answered, or cancelled by a
                // stream reset or a closed connection (which drops its plugin calls with it, or
                // cuts its body short: the body reader marks it abandoned).
                let in_flight = requests.begin();
                req.extensions_mut().insert(in_flight.abandoned());
                let timed_out = body::TimedOutMark::default();
                req.extensions_mut().insert(timed_out.clone());
                let handler = handler.clone();
                let response = route(handler.clone(), route_limits.clone(), req);
                async move {
                    let response = response.await;
                    in_flight.answered();
                    if let Some(which) = timed_out.get() {
                        handler.connection(ConnEvent::BodyTimedOut(which));
                    }
                    response
                }
            });
            let io = conn::FirstBytes::new(stream, conn::FIRST_BYTES_TIMEOUT);
            let served = builder
                .serve_connection(TokioIo::new(io), service)
                .into_owned();
            let (closed, out) = conn::supervise(
                served,
                |c| c.graceful_shutdown(),
                &activity,
                &limits.config.conn,
                stop,
                DRAIN_TIMEOUT,
            )
            .await;
            open.ends(match closed {
                conn::Closed::Idle => CloseReason::IdleTimeout,
                conn::Closed::Aged => CloseReason::MaxAge,
                conn::Closed::Shutdown => CloseReason::Shutdown,
                conn::Closed::Cancelled => CloseReason::CancelledRequests,
                conn::Closed::Ended => match &out {
                    Some(Err(e)) => CloseReason::of_error(&**e),
                    _ => CloseReason::Client,
                },
            });
            match out {
                Some(Err(e)) => {
                    tracing::debug!(%peer, ?closed, "connection ended with an error: {e}")
                }
                Some(Ok(())) if closed == conn::Closed::Cancelled => tracing::warn!(
                    %peer, "connection closed: its client cancelled more than {} requests (HTTP/2 rapid reset?)",
                    conn::MAX_CANCELLED_REQUESTS
                ),
                Some(Ok(())) => tracing::trace!(%peer, ?closed, "connection closed"),
                None => {
                    tracing::debug!(%peer, ?closed, "connection dropped: requests did not finish within {DRAIN_TIMEOUT:?} of its graceful close")
                }
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections, draining requests in flight");
    let _ = stop_tx.send(true);
    // Every connection holds a slot until it is gone; each drops itself DRAIN_TIMEOUT after
    // its graceful close at the latest, so this waits a little longer than that.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(
        DRAIN_TIMEOUT + Duration::from_secs(1),
        connections.acquire_many(all),
    )
    .await
    .is_err()
    {
        tracing::warn!("drain timed out after {DRAIN_TIMEOUT:?}; closing remaining connections");
    }
}

/// Binds `addr`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

async fn route<H: Handler>(
    handler: Arc<H>,
    limits: Arc<Limits>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let started = Instant::now();
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let answer = match segments.as_slice() {
        ["validate"] | ["validate", _] | ["mutate"] | ["mutate", _] => {
            let kind = if segments[0] == "validate" {
                PluginKind::Validator
            } else {
                PluginKind::Initializer
            };
            let policy = segments.get(1).map(|s| s.to_string());
            if let Some(refused) = authorize(&req, Route::Admission) {
                let endpoint = match kind {
                    PluginKind::Validator => "validate",
                    PluginKind::Initializer => "mutate",
                };
                handler.refused(endpoint, &refused, started.elapsed());
                refused
            } else if req.method() != Method::POST {
                method_not_allowed("POST")
            } else {
                admission(&*handler, &limits, kind, policy.as_deref(), req, started).await
            }
        }
        ["audit"] => {
            if let Some(refused) = authorize(&req, Route::Audit) {
                handler.refused("audit", &refused, started.elapsed());
                refused
            } else if req.method() != Method::POST {
                method_not_allowed("POST")
            } else {
                audit(&*handler, &limits, req, started).await
            }
        }
        ["healthz"] | ["livez"] => get_only(&req, || Answer::text(StatusCode::OK, "ok")),
        ["readyz"] => get_only(&req, || handler.ready()),
        ["metrics"] => get_only(&req, || handler.metrics()),
        _ => Answer::status(StatusCode::NOT_FOUND, format!("no such endpoint: {path}")),
    };
    let mut response = Response::new(Full::new(answer.body));
    *response.status_mut() = answer.status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(answer.content_type),
    );
    if answer.status == StatusCode::METHOD_NOT_ALLOWED {
        let allow =
            if path.starts_with("/validate") || path.starts_with("/mutate") || path == "/audit" {
                "POST"
            } else {
                "GET, HEAD"
            };
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(allow));
    }
    Ok(response)
}

/// The refusal for a request on `route` whose connection lacks the client certificate the route
/// needs: 401 without one, 403 with one its CA does not verify. Probes and metrics never ask.
fn authorize(req: &Request<Incoming>, route: Route) -> Option<Answer> {
    let peer = req
        .extensions()
        .get::<Peer>()
        .copied()
        .unwrap_or(Peer::OPEN);
    let what = match route {
        Route::Audit => "/audit",
        Route::Admission => "admission webhooks",
    };
    match peer.access(route) {
        Access::Open | Access::Verified => None,
        Access::NoCertificate => Some(Answer::status(
            StatusCode::UNAUTHORIZED,
            format!("{what} require a client certificate; none was presented"),
        )),
        Access::Untrusted => Some(Answer::status(
            StatusCode::FORBIDDEN,
            format!(
                "{what} require a client certificate signed by their client CA; this one is not"
            ),
        )),
    }
}

fn get_only(req: &Request<Incoming>, answer: impl FnOnce() -> Answer) -> Answer {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        answer()
    } else {
        method_not_allowed("GET")
    }
}

fn method_not_allowed(allowed: &str) -> Answer {
    Answer::status(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; use {allowed}"),
    )
}

/// Checks the request's shape, reads its body under the size limit, and sets its deadline.
async fn admission<H: Handler>(
    handler: &H,
    limits: &Limits,
    kind: PluginKind,
    policy: Option<&str>,
    req: Request<Incoming>,
    started: Instant,
) -> Answer {
    let deadline = match check_json(&req).and_then(|()| deadline(&req, started)) {
        Ok(deadline) => deadline,
        Err(answer) => return answer,
    };
    let max = limits.config.max_body;
    let body = match Body::open(req, max, max, &limits.budget, deadline).await {
        Ok(body) => body.collect().await,
        Err(e) => Err(e),
    };
    match body {
        Ok(body) => handler.admission(kind, policy, body, deadline).await,
        Err(e) => Answer::status(e.status, e),
    }
}

/// An audit batch: the same checks, a slot among [`MAX_AUDIT_IN_FLIGHT`] before the body is
/// read, and a share of the body budget as large as the part of a batch held at once. The
/// handler reads the body as it decodes it: no size limit applies to the whole batch.
async fn audit<H: Handler>(
    handler: &H,
    limits: &Limits,
    req: Request<Incoming>,
    started: Instant,
) -> Answer {
    let refused = |answer: Answer| {
        handler.refused("audit", &answer, started.elapsed());
        answer
    };
    let deadline = match check_json(&req).and_then(|()| deadline(&req, started)) {
        Ok(deadline) => deadline,
        Err(answer) => return refused(answer),
    };
    let _slot = match tokio::time::timeout_at(deadline, limits.audit_slots.acquire()).await {
        Ok(Ok(slot)) => slot,
        _ => {
            return refused(Answer::status(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{MAX_AUDIT_IN_FLIGHT} audit batches are already in flight; retry later"),
            ));
        }
    };
    let hold = limits.config.audit_max_body;
    match Body::open(req, usize::MAX, hold, &limits.budget, deadline).await {
        Ok(body) => handler.audit(body, deadline).await,
        Err(e) => refused(Answer::status(e.status, e)),
    }
}

/// The deadline from `?timeout=`, less a margin so that our answer is on the wire in time.
fn deadline(req: &Request<Incoming>, started: Instant) -> Result<Instant, Answer> {
    let budget = timeout_param(req.uri().query())
        .map_err(|message| Answer::status(StatusCode::BAD_REQUEST, message))?;
    Ok(started + budget.saturating_sub(DEADLINE_MARGIN.min(budget / 10)))
}

/// Webhook bodies are JSON.
fn check_json(req: &Request<Incoming>) -> Result<(), Answer> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(Answer::status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be application/json, got {content_type:?}"),
        ));
    }
    Ok(())
}

/// The time budget from `?timeout=` (a Go duration, as client-go sends it), at most
/// [`MAX_TIMEOUT`].
fn timeout_param(query: Option<&str>) -> Result<Duration, String> {
    let Some(value) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("timeout="))
    else {
        return Ok(DEFAULT_TIMEOUT);
    };
    match parse_go_duration(value) {
        Ok(d) if !d.is_zero() => Ok(d.min(MAX_TIMEOUT)),
        Ok(_) => Err("timeout must be positive".to_owned()),
        Err(e) => Err(format!("bad timeout query parameter: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeout_query() {
        assert_eq!(timeout_param(None), Ok(DEFAULT_TIMEOUT));
        assert_eq!(
            timeout_param(Some("timeout=3s")),
            Ok(Duration::from_secs(3))
        );
        assert_eq!(
            timeout_param(Some("a=b&timeout=250ms")),
            Ok(Duration::from_millis(250))
        );
        assert!(
            timeout_param(Some("timeout=soon"))
                .unwrap_err()
                .contains("bad timeout")
        );
        assert!(timeout_param(Some("timeout=0s")).is_err());
        // Longer than the API server ever waits only holds a slot for longer.
        assert_eq!(timeout_param(Some("timeout=1000h")), Ok(MAX_TIMEOUT));
        assert_eq!(timeout_param(Some("timeout=31s")), Ok(MAX_TIMEOUT));
    }
}
