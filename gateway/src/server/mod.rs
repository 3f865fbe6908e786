//! Owns the network edge: TLS accept (rustls, ALPN h2 and http/1.1), HTTP serving (hyper),
//! routing, method and content-type checks, body limits, the audit endpoint's concurrency cap,
//! the `?timeout=` deadline, and draining on shutdown. Must not parse AdmissionReviews or
//! EventLists or call plugins: it hands bodies to a [`Handler`].

pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use self::tls::{Access, Peer, Route};
use crate::config::PluginKind;
use crate::wire::parse_go_duration;

/// Admission bodies larger than this are refused with 413. An AdmissionReview carries the object
/// and the old object, each up to the API server's 3 MiB write limit, plus envelope.
pub const DEFAULT_MAX_BODY: usize = 16 << 20;
/// Audit bodies larger than this are refused with 413. With truncation off (the API server's
/// default), a batch is up to 400 events with their full request and response objects: tens
/// of MiB.
pub const DEFAULT_AUDIT_MAX_BODY: usize = 64 << 20;
/// Audit batches read and spooled at once. The API server sends batches concurrently when we
/// are slow (one goroutine each, no bound), and each holds its body in memory: 8 in flight is
/// at most 512 MiB at the default body limit. More wait for a slot until their deadline, then
/// get 503 and are re-sent.
pub const MAX_AUDIT_IN_FLIGHT: usize = 8;
/// The budget of a review that arrives without `?timeout=` (curl, `wasmgate check`): the v1
/// default `timeoutSeconds`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Kept back from the API server's `?timeout=` so that our answer is on the wire before it
/// stops waiting: a tenth of the budget, at most this much.
pub const DEADLINE_MARGIN: Duration = Duration::from_millis(100);
/// A TLS handshake that has not finished in this long is dropped (slow or stuck clients).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to read request headers on HTTP/1.1 (slowloris).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// On shutdown, requests in flight get this long to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// An audit `EventList` body, to be answered by `deadline`.
    fn audit(&self, body: Bytes, deadline: Instant) -> impl Future<Output = Answer> + Send;
    /// The server refused a request on `endpoint` before the handler saw it (too large, too
    /// many in flight, ...), answering `answer`; for the handler's metrics.
    fn refused(&self, endpoint: &'static str, answer: &Answer, elapsed: Duration) {
        let _ = (endpoint, answer, elapsed);
    }
    /// `GET /readyz`.
    fn ready(&self) -> Answer;
    /// `GET /metrics`.
    fn metrics(&self) -> Answer;
}

/// Server limits.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest admission body accepted.
    pub max_body: usize,
    /// Largest audit body accepted.
    pub audit_max_body: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_body: DEFAULT_MAX_BODY,
            audit_max_body: DEFAULT_AUDIT_MAX_BODY,
        }
    }
}

/// The limits and the shared state of routing.
struct Limits {
    config: ServerConfig,
    audit_slots: Semaphore,
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
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let config = Arc::new(Limits {
        config,
        audit_slots: Semaphore::new(MAX_AUDIT_IN_FLIGHT),
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
        let _ = tcp.set_nodelay(true);
        let tls = tls.load_full();
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
        let handler = handler.clone();
        let config = config.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
            };
            // The client certificate is judged once per connection, for every route that needs
            // one; each request carries the verdict to `route`.
            let client = tls.clients.peer(stream.get_ref().1.peer_certificates());
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(client);
                route(handler.clone(), config.clone(), req)
            });
            let conn = builder
                .serve_connection(TokioIo::new(stream), service)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(%peer, "connection ended with an error: {e}");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: no new connections, draining requests in flight");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
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
    let config = &limits.config;
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
                admission(&*handler, config, kind, policy.as_deref(), req, started).await
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
    config: &ServerConfig,
    kind: PluginKind,
    policy: Option<&str>,
    req: Request<Incoming>,
    started: Instant,
) -> Answer {
    let deadline = match check_json(&req).and_then(|()| deadline(&req, started)) {
        Ok(deadline) => deadline,
        Err(answer) => return answer,
    };
    match read_body(req, config.max_body, deadline).await {
        Ok(body) => handler.admission(kind, policy, body, deadline).await,
        Err(answer) => answer,
    }
}

/// An audit batch: the same checks under the audit limits, and a slot among
/// [`MAX_AUDIT_IN_FLIGHT`] before the body is read.
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
    match read_body(req, limits.config.audit_max_body, deadline).await {
        Ok(body) => handler.audit(body, deadline).await,
        Err(answer) => refused(answer),
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

/// Reads the body under `max_body` bytes by `deadline`.
async fn read_body(
    req: Request<Incoming>,
    max_body: usize,
    deadline: Instant,
) -> Result<Bytes, Answer> {
    let too_large = || {
        Answer::status(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than the limit of {max_body} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > max_body) {
        return Err(too_large());
    }
    match tokio::time::timeout_at(deadline, Limited::new(req.into_body(), max_body).collect()).await
    {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(Answer::status(
            StatusCode::BAD_REQUEST,
            format!("cannot read request body: {e}"),
        )),
        Err(_) => Err(Answer::status(
            StatusCode::REQUEST_TIMEOUT,
            "request body not received before the deadline",
        )),
    }
}

/// The time budget from `?timeout=` (a Go duration, as client-go sends it).
fn timeout_param(query: Option<&str>) -> Result<Duration, String> {
    let Some(value) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("timeout="))
    else {
        return Ok(DEFAULT_TIMEOUT);
    };
    match parse_go_duration(value) {
        Ok(d) if !d.is_zero() => Ok(d),
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
    }
}
