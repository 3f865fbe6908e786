//! Owns reading request bodies: the global budget of body bytes in flight (admission and audit
//! together), the per-request size limit, the minimum body rate and the request's deadline,
//! and marking a request whose client went away mid-body. Must not interpret the bytes.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::conn::Abandoned;

/// Body bytes all requests together may hold at once, by default: 16 admission reviews at
/// their largest, or 4 audit batches, while the process stays well under a 1 GiB limit.
pub const DEFAULT_BODY_BUDGET: usize = 256 << 20;
/// A body must arrive at least this fast once [`MIN_RATE_GRACE`] is spent: the API server sends
/// a whole body at once (megabytes in milliseconds), while a client trickling one byte every
/// second holds a request slot for nothing. 256 KiB/s is a 2 Mbit/s link.
pub const MIN_BODY_RATE: u64 = 256 << 10;
/// Waiting for the body is free this long (a slow start, a busy network); after that, the
/// body must have come at [`MIN_BODY_RATE`] on average.
pub const MIN_RATE_GRACE: Duration = Duration::from_secs(2);
/// The budget counts in units of this many bytes (a semaphore counts in `u32`).
const UNIT: usize = 1024;

/// Why a body could not be read; the answer's status and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BodyError {
    /// 408 (too slow, or past the deadline), 413 (too large), 400 (broken), 503 (no budget).
    pub status: StatusCode,
    /// What happened, for the client.
    pub message: String,
}

impl BodyError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        BodyError {
            status,
            message: message.into(),
        }
    }
}

/// The bytes all bodies in flight may hold together.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    units: Arc<Semaphore>,
    total: usize,
}

impl BodyBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        let total = bytes.div_ceil(UNIT).clamp(1, Semaphore::MAX_PERMITS);
        BodyBudget {
            units: Arc::new(Semaphore::new(total)),
            total,
        }
    }

    /// Bytes not reserved now.
    pub fn available(&self) -> usize {
        self.units.available_permits() * UNIT
    }

    /// Reserves `bytes` (at most the whole budget) by `deadline`, waiting behind earlier
    /// reservations.
    async fn reserve(
        &self,
        bytes: usize,
        deadline: Instant,
    ) -> Result<OwnedSemaphorePermit, BodyError> {
        let units = bytes.div_ceil(UNIT).clamp(1, self.total);
        let units = u32::try_from(units).unwrap_or(u32::MAX);
        match tokio::time::timeout_at(deadline, self.units.clone().acquire_many_owned(units)).await
        {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(BodyError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "too many request bytes in flight (budget {} bytes); retry later",
                    self.total * UNIT
                ),
            )),
        }
    }
}

/// Set when a request's body was cut off by a timeout (see [`BodyTimeout`]): the server
/// counts it once the request is answered.
#[derive(Debug, Clone, Default)]
pub struct TimedOutMark(Arc<std::sync::OnceLock<BodyTimeout>>);

impl TimedOutMark {
    /// Which timeout cut the body off, if one did.
    pub fn get(&self) -> Option<BodyTimeout> {
        self.0.get().copied()
    }
}

/// Which limit ended a body that came too slowly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyTimeout {
    /// Slower than [`MIN_BODY_RATE`] after [`MIN_RATE_GRACE`].
    MinRate,
    /// Not all there by the request's deadline.
    Deadline,
}

/// A request body being read: at most `limit` bytes, by the deadline, at the minimum rate,
/// holding its share of the budget until dropped.
pub struct Body {
    inner: Incoming,
    /// Set when the body cannot be read because the client went away.
    abandoned: Option<Abandoned>,
    /// Set when the body is cut off by a timeout.
    timed_out: Option<TimedOutMark>,
    limit: usize,
    received: usize,
    waited: Duration,
    deadline: Instant,
    done: bool,
    _reserved: OwnedSemaphorePermit,
}

impl Body {
    /// Reserves what `req`'s body may hold at once (its `Content-Length`, else `hold`, at most
    /// `hold`) and returns a reader for at most `limit` bytes. A declared length over `limit`
    /// is refused before anything is read.
    pub async fn open(
        req: http::Request<Incoming>,
        limit: usize,
        hold: usize,
        budget: &BodyBudget,
        deadline: Instant,
    ) -> Result<Body, BodyError> {
        let declared = req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|len| len > limit) {
            return Err(too_large(limit));
        }
        let reserved = budget
            .reserve(declared.unwrap_or(hold).min(hold), deadline)
            .await?;
        let abandoned = req.extensions().get::<Abandoned>().cloned();
        let timed_out = req.extensions().get::<TimedOutMark>().cloned();
        Ok(Body {
            inner: req.into_body(),
            abandoned,
            timed_out,
            limit,
            received: 0,
            waited: Duration::ZERO,
            deadline,
            done: false,
            _reserved: reserved,
        })
    }

    fn timed_out(&self, which: BodyTimeout) {
        if let Some(mark) = &self.timed_out {
            let _ = mark.0.set(which);
        }
    }

    /// Bytes received so far.
    pub fn received(&self) -> usize {
        self.received
    }

    /// The next chunk of data, or `None` at the end. Only the time spent here waiting for the
    /// client counts against the minimum rate (not the time the caller spends on what it read).
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        loop {
            if self.done {
                return Ok(None);
            }
            // By the rate, the client may have waited this long in all for what it sent.
            let allowed = MIN_RATE_GRACE
                + Duration::from_secs_f64(self.received as f64 / MIN_BODY_RATE as f64);
            let rate_at = Instant::now() + allowed.saturating_sub(self.waited);
            let until = rate_at.min(self.deadline);
            let started = Instant::now();
            let frame = tokio::time::timeout_at(until, self.inner.frame()).await;
            self.waited += started.elapsed();
            let frame = match frame {
                Ok(Some(Ok(frame))) => frame,
                Ok(None) => {
                    self.done = true;
                    return Ok(None);
                }
                Ok(Some(Err(e))) => {
                    // A stream reset, a connection closed or broken mid-body: whatever is
                    // answered cannot reach the client.
                    if let Some(abandoned) = &self.abandoned {
                        abandoned.set();
                    }
                    return Err(BodyError::new(
                        StatusCode::BAD_REQUEST,
                        format!("cannot read request body: {e}"),
                    ));
                }
                Err(_) if until == self.deadline => {
                    self.timed_out(BodyTimeout::Deadline);
                    return Err(BodyError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        "request body not received before the deadline",
                    ));
                }
                Err(_) => {
                    self.timed_out(BodyTimeout::MinRate);
                    return Err(BodyError::new(
                        StatusCode::REQUEST_TIMEOUT,
                        format!(
                            "request body arrived slower than {} KiB/s ({} bytes in {:.1} s)",
                            MIN_BODY_RATE >> 10,
                            self.received,
                            self.waited.as_secs_f64()
                        ),
                    ));
                }
            };
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            self.received += data.len();
            if self.received > self.limit {
                return Err(too_large(self.limit));
            }
            if !data.is_empty() {
                return Ok(Some(data));
            }
        }
    }

    /// The whole body.
    pub async fn collect(mut self) -> Result<Bytes, BodyError> {
        let mut buf = BytesMut::new();
        while let Some(chunk) = self.chunk().await? {
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }
}

fn too_large(limit: usize) -> BodyError {
    BodyError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("request body is larger than the limit of {limit} bytes"),
    )
}
