//! Owns the life of one connection: the cap on open connections, the process's file-descriptor
//! limit, TCP keep-alive, the deadline for the first bytes after the TLS handshake, the idle
//! timeout, the maximum age with a graceful close, and the grace given on shutdown. Must not
//! look at requests: it only counts how many are in flight on its connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// After the TLS handshake, a client that has not sent a byte in this long is disconnected: an
/// API server sends its request at once, an idle flood holds a connection slot for no more.
pub const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no request in flight for this long is closed (gracefully: HTTP/2 GOAWAY).
/// Go's HTTP client, which the API server uses, drops its own idle connections after 90 s.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// A connection older than this is closed gracefully (GOAWAY, `Connection: close`) once its
/// requests finish, so that clients reconnect and spread over replicas, and no connection lives
/// for good. The API server reconnects transparently.
pub const DEFAULT_MAX_CONNECTION_AGE: Duration = Duration::from_secs(10 * 60);
/// Open connections at most, by default. An idle TLS connection costs about 50 KiB (rustls and
/// hyper buffers): 4,096 of them are 200 MiB. The API server needs a handful (HTTP/2
/// multiplexes), so the rest is headroom for floods that the timeouts above clear.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// File descriptors kept for everything but client connections: the spool's segments, plugin
/// modules, watched files, outputs and the listener.
pub const FD_RESERVE: u64 = 256;
/// HTTP/2 PINGs are sent after this long without a frame from the client...
pub const H2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// ...and a client that does not answer one within this long is disconnected.
pub const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection whose client cancels more than this many requests, and more of them than it
/// lets be answered, is closed gracefully: HTTP/2 rapid reset (CVE-2023-44487) opens and resets
/// streams in a loop, and each one costs a decode and perhaps plugin calls before its reset is
/// seen. The API server cancels a request only when our answer is late.
pub const MAX_CANCELLED_REQUESTS: u64 = 100;
/// TCP keep-alive: probes start after this long without traffic...
pub const TCP_KEEPALIVE_TIME: Duration = Duration::from_secs(60);
/// ...are repeated this often...
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// ...and this many unanswered ones close the connection: a vanished peer (a node that lost
/// power) is noticed within about 90 s instead of the kernel's two hours.
pub const TCP_KEEPALIVE_RETRIES: u32 = 3;

/// Longer timeouts are taken as this (a year): an `Instant` cannot reach much further.
const FOREVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// How long connections may live.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Open connections at most; more are closed as soon as they are accepted.
    pub max_connections: usize,
    /// See [`DEFAULT_IDLE_TIMEOUT`].
    pub idle_timeout: Duration,
    /// See [`DEFAULT_MAX_CONNECTION_AGE`].
    pub max_age: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_age: DEFAULT_MAX_CONNECTION_AGE,
        }
    }
}

/// Raises the soft limit on open files to the hard limit (each connection is one), and returns
/// the limit now in force, if there is one.
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => return limit.maximum,
            Err(e) => tracing::warn!(
                soft = ?limit.current, hard = ?limit.maximum,
                "cannot raise the open-file limit to its hard limit: {e}"
            ),
        }
    }
    limit.current
}

/// The connection cap that fits under `fd_limit`: the configured one, lowered (with a warning)
/// when the process may not open that many files.
pub fn effective_max_connections(configured: usize, fd_limit: Option<u64>) -> usize {
    let Some(fds) = fd_limit else {
        return configured;
    };
    let fit = usize::try_from(fds.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX);
    if fit < configured {
        tracing::warn!(
            configured,
            open_file_limit = fds,
            "--max-connections lowered to {fit} to fit under the open-file limit"
        );
        return fit.max(1);
    }
    configured
}

/// Sets what every accepted socket gets: no Nagle delay, TCP keep-alive.
pub fn configure_socket(tcp: &TcpStream) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(TCP_KEEPALIVE_TIME)
        .with_interval(TCP_KEEPALIVE_INTERVAL)
        .with_retries(TCP_KEEPALIVE_RETRIES);
    socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive)
}

// === impl FirstBytes ===

/// The error a [`FirstBytes`] stream fails with at its deadline (inside an `io::Error` of kind
/// `TimedOut`), so that the server can tell this close from others.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("no request after the TLS handshake")]
pub struct NoFirstBytes;

/// A stream whose first read fails with `TimedOut` if no byte arrives by a deadline. hyper's
/// own HTTP/1.1 header timeout starts only once it knows the protocol, and the HTTP/2 preface
/// has none, so without this a client that completes the handshake and then says nothing holds
/// its connection for good.
pub struct FirstBytes<T> {
    inner: T,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<T> FirstBytes<T> {
    /// `inner`, which must send a byte within `timeout`.
    pub fn new(inner: T, timeout: Duration) -> Self {
        FirstBytes {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FirstBytes<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let expired = this
                    .deadline
                    .as_mut()
                    .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
                if expired {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, NoFirstBytes)));
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FirstBytes<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

// === impl Activity ===

/// Requests in flight on one connection and when the last one started or ended, for the idle
/// timeout. A request counts until its future is dropped: answered, or cancelled by a stream
/// reset or a closed connection.
#[derive(Debug)]
pub struct Activity {
    born: Instant,
    in_flight: AtomicUsize,
    last_ms: AtomicU64,
    answered: AtomicU64,
    cancelled: AtomicU64,
    /// Woken when cancellations pass [`MAX_CANCELLED_REQUESTS`].
    abuse: tokio::sync::Notify,
}

/// Held by a request while it is in flight; dropped without [`InFlight::answered`], the request
/// was cancelled (stream reset, connection closed).
pub struct InFlight {
    activity: Arc<Activity>,
    answered: bool,
    abandoned: Abandoned,
}

impl InFlight {
    /// The request was answered, unless its client abandoned it meanwhile (see [`Abandoned`]):
    /// then it counts as cancelled.
    pub fn answered(mut self) {
        self.answered = !self.abandoned.is_set();
    }

    /// The mark the body reader sets when the client abandons this request.
    pub fn abandoned(&self) -> Abandoned {
        self.abandoned.clone()
    }
}

/// Set when the client abandoned a request while its body was being read (an HTTP/2 stream
/// reset, a connection closed mid-body): the request then counts as cancelled even though the
/// server produced an answer for it. Whether a reset is seen as a dropped request or as a body
/// that cannot be read depends only on which the server polls first, so without the mark a
/// reset flood counts as cancelled on a quiet machine and as answered on a busy one.
#[derive(Debug, Clone, Default)]
pub struct Abandoned(Arc<AtomicBool>);

impl Abandoned {
    /// The client is gone.
    pub fn set(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn is_set(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

impl Activity {
    /// A new connection's.
    pub fn new() -> Arc<Self> {
        Arc::new(Activity {
            born: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            abuse: tokio::sync::Notify::new(),
        })
    }

    /// A request starts; it ends when the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight {
            activity: self.clone(),
            answered: false,
            abandoned: Abandoned::default(),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Release);
    }

    /// When the connection becomes idle for `timeout`, if nothing happens meanwhile; `None`
    /// while a request is in flight.
    fn idle_deadline(&self, timeout: Duration) -> Option<Instant> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        Some(
            self.born
                + Duration::from_millis(self.last_ms.load(Ordering::Acquire))
                + timeout.min(FOREVER),
        )
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.activity;
        activity.touch();
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
        if self.answered {
            activity.answered.fetch_add(1, Ordering::AcqRel);
        } else {
            let cancelled = activity.cancelled.fetch_add(1, Ordering::AcqRel) + 1;
            if cancelled > MAX_CANCELLED_REQUESTS
                && cancelled > activity.answered.load(Ordering::Acquire)
            {
                activity.abuse.notify_one();
            }
        }
    }
}

/// Why a connection was closed by us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// The client or the protocol ended it.
    Ended,
    /// No request for the idle timeout.
    Idle,
    /// Older than the maximum age.
    Aged,
    /// The server is shutting down.
    Shutdown,
    /// The client cancelled too many requests (see [`MAX_CANCELLED_REQUESTS`]).
    Cancelled,
}

/// Drives `conn` to its end: closes it gracefully (`begin_shutdown`: HTTP/2 GOAWAY, HTTP/1.1
/// `Connection: close`, requests in flight finish) when it has been idle for the idle timeout,
/// when it reaches its maximum age, or when `shutdown` fires, and drops it `grace` after that if
/// its requests have not finished.
pub async fn supervise<C: Future>(
    conn: C,
    begin_shutdown: impl Fn(Pin<&mut C>),
    activity: &Arc<Activity>,
    limits: &ConnLimits,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
    grace: Duration,
) -> (Closed, Option<C::Output>) {
    tokio::pin!(conn);
    let aged_at = activity.born + limits.max_age.min(FOREVER);
    let mut closing: Option<(Closed, Instant)> = None;
    loop {
        let idle_at = activity
            .idle_deadline(limits.idle_timeout)
            .unwrap_or_else(|| Instant::now() + limits.idle_timeout.min(FOREVER));
        let reason = tokio::select! {
            out = conn.as_mut() => {
                return (closing.map_or(Closed::Ended, |(why, _)| why), Some(out));
            }
            () = tokio::time::sleep_until(closing.map_or(aged_at, |(_, at)| at)) => match closing {
                Some((why, _)) => return (why, None),
                None => Closed::Aged,
            },
            () = tokio::time::sleep_until(idle_at), if closing.is_none() => {
                // Recomputed: a request may have started or ended since this sleep began.
                match activity.idle_deadline(limits.idle_timeout) {
                    Some(at) if at <= Instant::now() => Closed::Idle,
                    _ => continue,
                }
            }
            _ = shutdown.wait_for(|stop| *stop), if closing.is_none() => Closed::Shutdown,
            () = activity.abuse.notified(), if closing.is_none() => Closed::Cancelled,
        };
        begin_shutdown(conn.as_mut());
        closing = Some((reason, Instant::now() + grace));
    }
}

#[cfg(test)]
mod tests;
