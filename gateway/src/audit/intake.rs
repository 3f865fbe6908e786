//! Taking an EventList in: decode each item on its own, count and log the malformed ones with
//! their position, key the rest for deduplication, and append them to the spool. Nothing here
//! waits on a sink.

use bytes::Bytes;
use tokio::time::Instant;

use super::spool::{AppendError, Spool, SpoolItem, key_of};
use crate::telemetry::AuditMetrics;
use crate::wire::audit::{ListError, decode_event_list};

/// Malformed items logged one by one per batch; the rest are summed up in one line, so that a
/// garbage batch of thousands of items costs the log a dozen lines.
pub const MAX_MALFORMED_LOGGED: usize = 10;

/// What became of a batch that was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct IntakeReport {
    /// Items in the list.
    pub received: usize,
    /// Events written to the spool.
    pub spooled: usize,
    /// Events already spooled (a re-sent batch).
    pub duplicates: usize,
    /// Items skipped because they do not decode.
    pub malformed: usize,
}

/// Why a batch was not taken. Nothing of it is kept; the API server re-sends it.
#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    /// The body is not an EventList.
    #[error(transparent)]
    NotAnEventList(#[from] ListError),
    /// The spool refused it.
    #[error(transparent)]
    Spool(#[from] AppendError),
    /// The spool did not answer before the API server's deadline.
    #[error("the audit spool did not take the batch before the deadline")]
    Deadline,
    /// Decoding failed in the host (a bug).
    #[error("decoding failed: {0}")]
    Host(String),
}

/// Decodes `body` and appends its events to `spool`, answering by `deadline`.
pub async fn take(
    spool: &Spool,
    metrics: &AuditMetrics,
    body: Bytes,
    deadline: Instant,
) -> Result<IntakeReport, IntakeError> {
    // Decoding tens of MiB takes milliseconds of CPU: not on an async worker.
    let decoded = tokio::task::spawn_blocking(move || split(body))
        .await
        .map_err(|e| IntakeError::Host(e.to_string()))??;
    let (items, received, malformed) = decoded;
    metrics.events_received.inc_by(received as u64);
    metrics.events_malformed.inc_by(malformed as u64);
    if items.is_empty() {
        return Ok(IntakeReport {
            received,
            spooled: 0,
            duplicates: 0,
            malformed,
        });
    }
    let appended = tokio::time::timeout_at(deadline, spool.append(items))
        .await
        .map_err(|_| IntakeError::Deadline)??;
    metrics.events_spooled.inc_by(appended.events as u64);
    metrics
        .events_deduplicated
        .inc_by(appended.duplicates as u64);
    Ok(IntakeReport {
        received,
        spooled: appended.events,
        duplicates: appended.duplicates,
        malformed,
    })
}

/// The spool items of a body, with the item count and the malformed count.
type Split = (Vec<SpoolItem>, usize, usize);

fn split(body: Bytes) -> Result<Split, ListError> {
    let items = decode_event_list(&body)?;
    let received = items.len();
    let mut malformed = 0;
    let mut spooled = Vec::with_capacity(received);
    for item in items {
        let json = item.raw.get().as_bytes();
        match item.event {
            Ok(_) => spooled.push(SpoolItem {
                key: key_of(json),
                json: body.slice_ref(json),
            }),
            Err(e) => {
                malformed += 1;
                if malformed <= MAX_MALFORMED_LOGGED {
                    tracing::warn!(
                        item = e.index,
                        items = received,
                        "malformed audit event skipped, the rest of the batch is kept: {}",
                        e.message
                    );
                }
            }
        }
    }
    if malformed > MAX_MALFORMED_LOGGED {
        tracing::warn!(
            items = received,
            "{} more malformed audit events skipped in the same batch",
            malformed - MAX_MALFORMED_LOGGED
        );
    }
    Ok((spooled, received, malformed))
}
