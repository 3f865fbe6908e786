//! Taking an EventList in as it arrives: decode each item on its own (streamed, never the whole
//! list at once), count and log the malformed ones with their position, truncate events over
//! the per-event limit as the API server's truncate backend does, key the rest for
//! deduplication, and append them to the spool in parts of bounded size. Nothing here waits on
//! a sink.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::spool::{AppendError, Spool, SpoolItem, key_of};
use crate::telemetry::AuditMetrics;
use crate::wire::audit::{
    Event, ItemSink, ListError, StreamError, decode_event_list_slice, decode_event_list_streaming,
    truncate_event,
};

/// Malformed items logged one by one per batch; the rest are summed up in one line, so that a
/// garbage batch of thousands of items costs the log a dozen lines.
pub const MAX_MALFORMED_LOGGED: usize = 10;
/// Items in one batch at most. The API server sends at most `--audit-webhook-batch-max-size`
/// (400 by default); a list of a million items is not an API server's, and refusing it bounds
/// the CPU a batch of tiny garbage items costs.
pub const MAX_BATCH_ITEMS: usize = 1_000_000;
/// Events per spool record at most: a batch with more is spooled as several records (each
/// record's events are read back together by the sinks).
pub const MAX_RECORD_EVENTS: usize = 4096;
/// Events larger than this are truncated by default (see [`IntakeLimits::max_event`]). A write
/// carries at most two objects of the API server's 3 MiB request limit, so only events of huge
/// list responses are cut.
pub const DEFAULT_MAX_EVENT: usize = 8 << 20;
/// Body chunks buffered between the network and the decoder.
const CHUNKS_IN_FLIGHT: usize = 2;

/// The bounds of one batch.
#[derive(Debug, Clone, Copy)]
pub struct IntakeLimits {
    /// Spool a part of the batch once this many bytes of events are decoded (the most of a
    /// batch held at once); also the largest single item that can be read.
    pub part_bytes: usize,
    /// Events over this many bytes are truncated (objects dropped); if still over, dropped.
    pub max_event: usize,
}

/// What became of a batch that was taken.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct IntakeReport {
    /// Items in the list.
    pub received: usize,
    /// Events written to the spool.
    pub spooled: usize,
    /// Events already spooled (a re-sent batch).
    pub duplicates: usize,
    /// Items skipped because they do not decode.
    pub malformed: usize,
    /// Events over the per-event limit spooled without their objects.
    #[serde(skip_serializing_if = "is_zero")]
    pub truncated: usize,
    /// Events over the per-event limit even without their objects, dropped (logged).
    #[serde(skip_serializing_if = "is_zero")]
    pub oversized: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Why a batch was not taken (or only a part of it). The API server re-sends a batch answered
/// with an error; the part already spooled is then dropped as duplicates.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The body is not an EventList.
    #[error(transparent)]
    NotAnEventList(#[from] ListError),
    /// An EventList, but not one to take (too many items).
    #[error("{0}")]
    Refused(String),
    /// One item is larger than the most of a batch held at once.
    #[error(
        "an item of the EventList is larger than {0} bytes, the most held at once (--audit-max-body-bytes)"
    )]
    ItemTooLarge(usize),
    /// The body could not be read (too slow, broken).
    #[error("{0}")]
    Body(String),
    /// The spool refused it.
    #[error(transparent)]
    Spool(#[from] AppendError),
    /// The spool refused an earlier batch as full and nothing was freed since: refused before
    /// its body is read.
    #[error("the audit spool is full until sinks catch up")]
    StillFull,
    /// The spool did not answer before the API server's deadline.
    #[error("the audit spool did not take the batch before the deadline")]
    Deadline,
    /// Decoding failed in the host (a bug).
    #[error("decoding failed: {0}")]
    Host(String),
}

/// Where the body's bytes come from: the next chunk, `None` at the end.
pub trait BodySource: Send {
    /// The next chunk of the body.
    fn next_chunk(&mut self) -> impl Future<Output = Result<Option<Bytes>, String>> + Send;
}

/// Reads an EventList from `body` and appends its events to `spool` as they are decoded,
/// answering by `deadline`. A spool found full by an earlier batch, with nothing freed since
/// (`full_at`, its size then; `spool_max` its limit), is answered at once, before reading.
pub async fn take(
    spool: &Spool,
    (full_at, spool_max): (&AtomicU64, u64),
    metrics: &AuditMetrics,
    limits: IntakeLimits,
    mut body: impl BodySource,
    deadline: Instant,
) -> Result<IntakeReport, IntakeError> {
    let used = || spool.stats().bytes.load(Ordering::Relaxed);
    let was_full = full_at.load(Ordering::Relaxed);
    if used() >= was_full {
        return Err(IntakeError::StillFull);
    }
    let (chunk_tx, chunk_rx) = mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
    let (part_tx, mut part_rx) = mpsc::channel::<Vec<SpoolItem>>(1);
    // A body of at most `part_bytes` (the most of a batch held at once; every batch the API
    // server sends under the default limits) is read whole, then decoded from memory: serde_json
    // reads an `io::Read` one call per byte. A larger body is decoded as it arrives, starting
    // with the chunks already read, so that what is held stays bounded whatever its size.
    let mut head = Vec::new();
    let mut held = 0;
    let whole = loop {
        match body.next_chunk().await {
            Ok(Some(chunk)) => {
                held += chunk.len();
                head.push(chunk);
                if held > limits.part_bytes {
                    break false;
                }
            }
            Ok(None) => break true,
            Err(e) => return Err(IntakeError::Body(e)),
        }
    };
    let (whole_body, streamed_head) = if whole {
        (head, Vec::new())
    } else {
        (Vec::new(), head)
    };
    // Decoding is CPU work (milliseconds per MiB): not on an async worker.
    let decoder = tokio::task::spawn_blocking(move || {
        let since_item = Rc::new(Cell::new(0));
        let mut sink = Parts::new(limits, part_tx, since_item.clone());
        let decoded = if whole {
            let body = match whole_body.as_slice() {
                [one] => std::borrow::Cow::Borrowed(&one[..]),
                chunks => std::borrow::Cow::Owned(chunks.concat()),
            };
            decode_event_list_slice(&body, &mut sink)
        } else {
            let reader = ChunkReader {
                chunks: chunk_rx,
                current: Bytes::new(),
                since_item,
                max_item: limits.part_bytes,
            };
            // Buffered: one `read` call per byte was a fifth of the gateway's CPU under load.
            // The buffer reads ahead at most READ_AHEAD bytes, so an item is caught at most
            // that far past `part_bytes`.
            let reader = std::io::BufReader::with_capacity(READ_AHEAD, reader);
            decode_event_list_streaming(reader, &mut sink)
        };
        let decoded = decoded.and_then(|n| sink.flush().map(|()| n).map_err(StreamError::Stopped));
        (decoded, sink.report)
    });
    let pump = async move {
        for chunk in streamed_head {
            if chunk_tx.send(chunk).await.is_err() {
                return Ok(()); // the decoder stopped early; its error says why
            }
        }
        if whole {
            return Ok(());
        }
        loop {
            match body.next_chunk().await {
                Ok(Some(chunk)) => {
                    if chunk_tx.send(chunk).await.is_err() {
                        return Ok(()); // the decoder stopped early; its error says why
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    };
    let append = async move {
        let mut spooled = (0, 0);
        while let Some(part) = part_rx.recv().await {
            let appended = match tokio::time::timeout_at(deadline, spool.append(part)).await {
                Ok(Ok(appended)) => appended,
                Ok(Err(e)) => {
                    // Full at half its size or more: a real backlog, not one huge batch; the
                    // spool rolls and reclaims segments as sinks pass them from that size on.
                    if matches!(e, AppendError::Full { .. }) && used() >= spool_max / 2 {
                        full_at.store(used(), Ordering::Relaxed);
                    }
                    return Err(e.into());
                }
                Err(_) => return Err(IntakeError::Deadline),
            };
            full_at.store(u64::MAX, Ordering::Relaxed);
            metrics.events_spooled.inc_by(appended.events as u64);
            metrics
                .events_deduplicated
                .inc_by(appended.duplicates as u64);
            spooled.0 += appended.events;
            spooled.1 += appended.duplicates;
        }
        Ok::<_, IntakeError>(spooled)
    };
    let (pumped, appended, decoded) = tokio::join!(pump, append, decoder);
    let (decoded, mut report) = decoded.map_err(|e| IntakeError::Host(e.to_string()))?;
    metrics.events_received.inc_by(report.received as u64);
    metrics.events_malformed.inc_by(report.malformed as u64);
    // The first cause wins: a body that stopped arriving makes the decoder see a cut list, a
    // spool that refused a part makes it stop.
    pumped.map_err(IntakeError::Body)?;
    let (spooled, duplicates) = appended?;
    match decoded {
        Ok(_) => {}
        Err(StreamError::List(ListError::Json(e)))
            if e.io_error_kind() == Some(std::io::ErrorKind::FileTooLarge) =>
        {
            return Err(IntakeError::ItemTooLarge(limits.part_bytes));
        }
        Err(StreamError::List(e)) => return Err(e.into()),
        Err(StreamError::Stopped(message)) => return Err(IntakeError::Refused(message)),
    }
    report.spooled = spooled;
    report.duplicates = duplicates;
    Ok(report)
}

/// Bytes the decoder's buffer reads ahead of it.
const READ_AHEAD: usize = 8 << 10;

/// A blocking reader over the body's chunks (the decoder runs on a blocking thread).
struct ChunkReader {
    chunks: mpsc::Receiver<Bytes>,
    current: Bytes,
    /// Bytes read since the decoder's last item: one item is held whole, so it is bounded.
    since_item: Rc<Cell<usize>>,
    max_item: usize,
}

impl std::io::Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.chunks.blocking_recv() {
                Some(chunk) => self.current = chunk,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        bytes::Buf::advance(&mut self.current, n);
        self.since_item.set(self.since_item.get() + n);
        if self.since_item.get() > self.max_item {
            return Err(std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!("an item over {} bytes", self.max_item),
            ));
        }
        Ok(n)
    }
}

/// Collects decoded events into parts and hands each full part to the appender.
struct Parts {
    limits: IntakeLimits,
    out: mpsc::Sender<Vec<SpoolItem>>,
    part: Vec<SpoolItem>,
    part_bytes: usize,
    verified: bool,
    report: IntakeReport,
    since_item: Rc<Cell<usize>>,
}

impl Parts {
    fn new(
        limits: IntakeLimits,
        out: mpsc::Sender<Vec<SpoolItem>>,
        since_item: Rc<Cell<usize>>,
    ) -> Self {
        Parts {
            since_item,
            limits,
            out,
            part: Vec::new(),
            part_bytes: 0,
            verified: false,
            report: IntakeReport::default(),
        }
    }

    /// Hands the part to the appender, once the list is known to be an EventList.
    fn flush(&mut self) -> Result<(), String> {
        if !self.verified {
            return Ok(());
        }
        self.send()
    }

    /// Hands the part to the appender.
    fn send(&mut self) -> Result<(), String> {
        if self.part.is_empty() {
            return Ok(());
        }
        self.part_bytes = 0;
        self.out
            .blocking_send(std::mem::take(&mut self.part))
            .map_err(|_| "the audit spool stopped taking this batch".to_owned())
    }

    fn malformed(&mut self, index: usize, message: &str) {
        self.report.malformed += 1;
        if self.report.malformed <= MAX_MALFORMED_LOGGED {
            tracing::warn!(
                item = index,
                "malformed audit event skipped, the rest of the batch is kept: {message}"
            );
        } else if self.report.malformed == MAX_MALFORMED_LOGGED + 1 {
            tracing::warn!("more malformed audit events in the same batch are skipped unlogged");
        }
    }
}

impl ItemSink for Parts {
    fn verified(&mut self) -> Result<(), String> {
        self.verified = true;
        self.flush()
    }

    fn item(&mut self, index: usize, raw: Box<RawValue>) -> Result<(), String> {
        self.since_item.set(0);
        self.report.received += 1;
        if index >= MAX_BATCH_ITEMS {
            return Err(format!(
                "an EventList may have at most {MAX_BATCH_ITEMS} items (the API server sends at most --audit-webhook-batch-max-size, 400 by default)"
            ));
        }
        let text: Box<str> = raw.into();
        if !text.starts_with('{') {
            // Cheap: a list of a million numbers costs no decoder error each.
            self.malformed(index, "not a JSON object");
            return Ok(());
        }
        if let Err(message) = Event::decode(&text) {
            self.malformed(index, &message);
            return Ok(());
        }
        let mut json = String::from(text);
        if json.len() > self.limits.max_event {
            let size = json.len();
            json = truncate_event(&json)?;
            if json.len() > self.limits.max_event {
                self.report.oversized += 1;
                tracing::warn!(
                    item = index,
                    bytes = json.len(),
                    limit = self.limits.max_event,
                    "audit event over the per-event limit even without its objects: dropped, as the API server's truncate backend does"
                );
                return Ok(());
            }
            self.report.truncated += 1;
            tracing::info!(
                item = index,
                bytes = size,
                limit = self.limits.max_event,
                "audit event over the per-event limit: its request and response objects are dropped"
            );
        }
        let json = Bytes::from(json);
        self.part_bytes += json.len();
        self.part.push(SpoolItem {
            key: key_of(&json),
            json,
        });
        if self.part_bytes >= self.limits.part_bytes || self.part.len() >= MAX_RECORD_EVENTS {
            // Type fields after the items (serializers that sort keys put `items` before
            // `kind`): memory stays bounded, so the parts go to the spool before the list's
            // type is checked. Each of them is a valid audit event on its own.
            self.send()?;
        }
        Ok(())
    }
}
