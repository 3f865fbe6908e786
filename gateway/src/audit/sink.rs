//! One sink's task: follow its cursor through the spool, route each record for the sink, run the
//! sink plugin (retried with exponential backoff and jitter; dead-lettered after `maxAttempts`
//! failures), write its lines to its outputs (retried until they are back), and only then move
//! the cursor. At-least-once: a crash between an output write and the cursor save delivers that
//! piece again. A failing sink only holds back its own cursor.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::Shared;
use super::outputs::{OutputError, Outputs};
use super::route::{self, Routed};
use super::spool::record::Record;
use super::spool::{Cursor, DeadLetterError, Position, Read, now_ms};
use crate::config::OutputSpec;
use crate::policy::audit::SinkPolicy;
use crate::runtime::{Emission, Plugin, PluginFailure};
use crate::wire::audit::Event;

/// The first retry waits about this long; each further one twice as long as the previous.
pub const BACKOFF_INITIAL: Duration = Duration::from_millis(250);
/// The longest wait between retries: an output that comes back is written to within this long.
pub const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The wait before retry number `attempt` (1-based): exponential, capped, with "equal jitter"
/// (half fixed, half random) so that sinks failing together do not retry in lockstep.
pub fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_INITIAL
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(BACKOFF_MAX);
    let half = exp / 2;
    half + half.mul_f64(random_fraction())
}

/// A number in [0, 1) that differs between calls; good enough for jitter, not for secrets.
fn random_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// One piece of the spool in the sink's pipeline, in spool order: its plugin call (routing,
/// plugin, dead letters) runs on its own task, concurrently with the others; its output writes
/// and the cursor save after it happen in spool order, one piece at a time.
struct Pending {
    /// The plugin call's task (`None` for a piece with nothing to deliver: a corrupt stretch
    /// skipped, or the end of the spool reached). Aborted if the sink stops first.
    work: Option<AbortOnDrop<Option<Prepared>>>,
    /// The policy the piece was prepared with (its outputs are the ones its lines go to).
    policy: Arc<SinkPolicy<Plugin>>,
    /// Where the piece's record is, for dead letters.
    at: Position,
    /// The cursor once this piece is delivered.
    after: Cursor,
}

/// A task that is aborted when dropped (a sink stopped mid-pipeline abandons its plugin calls;
/// their pieces are delivered again after the restart).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs the sink named `name` until it is removed from the configuration or the spool closes.
///
/// Reads ahead of its cursor and keeps up to `in_flight` pieces (a record's events, at most
/// [`route::MAX_EVENTS_PER_CALL`]) in its plugin at once, each in a fresh instance; the lines
/// of the oldest piece go to the outputs first, and the cursor moves past a piece only once it
/// and every piece before it are written. A crash re-delivers what was in flight, never skips.
pub(super) async fn run(name: Arc<str>, shared: Arc<Shared>) {
    let spool = shared.spool.clone();
    let mut cursor = load_cursor(&shared, &name).await;
    tracing::info!(sink = %name, segment = cursor.at.segment, offset = cursor.at.offset, item = cursor.item, "audit sink started");
    let mut reader = Some(spool.reader());
    let mut committed = spool.committed();
    let mut outputs: Option<(Vec<OutputSpec>, Outputs)> = None;
    let mut read_failures = 0;
    let mut config = shared.config.subscribe();
    // Where reading ahead has got to (at or after `cursor`), and the record being cut into
    // pieces there.
    let mut ahead = cursor;
    let mut current: Option<(Arc<Record>, Position)> = None;
    let mut pipeline: VecDeque<Pending> = VecDeque::new();
    // The oldest delivered piece: its lines being written and then its cursor saved. Not
    // aborted if the sink stops: a write that is under way finishes.
    let mut writing: Option<Writing> = None;
    loop {
        // The current configuration, once per piece: a reload applies from the next one.
        let Some(policy) = shared.sink(&name) else {
            tracing::info!(sink = %name, "audit sink removed from the configuration: idle");
            shared.metrics.audit.lag(&name, 0);
            // The piece being written is finished (its cursor saved); the rest is abandoned.
            let _ = settle(&mut writing).await;
            outputs = None;
            // What was in flight is abandoned: it is delivered again if the sink comes back.
            pipeline.clear();
            current = None;
            // Wait until it is configured again; then the spool may have moved on without it.
            loop {
                if config.changed().await.is_err() {
                    return;
                }
                if shared.sink(&name).is_some() {
                    break;
                }
            }
            cursor = load_cursor(&shared, &name).await;
            ahead = cursor;
            tracing::info!(sink = %name, segment = cursor.at.segment, offset = cursor.at.offset, "audit sink configured again");
            continue;
        };
        let end = *committed.borrow_and_update();
        let lag = end
            .event_seq
            .saturating_sub(cursor.at.event_seq + u64::from(cursor.item));
        shared.metrics.audit.lag(&name, lag);

        // Fill the pipeline: the next piece of the current record, or the next record.
        if pipeline.len() < policy.in_flight.max(1) {
            if let Some((record, next)) = current.take() {
                let start = ahead.item as usize;
                let piece = start..route::chunk_end(&record, start);
                let at = ahead.at;
                let after = if piece.end < record.len() {
                    current = Some((record.clone(), next));
                    Cursor {
                        at,
                        item: piece.end as u32,
                    }
                } else {
                    Cursor { at: next, item: 0 }
                };
                let work = tokio::spawn(prepare(
                    shared.clone(),
                    name.clone(),
                    policy.clone(),
                    record,
                    piece,
                    at,
                ));
                pipeline.push_back(Pending {
                    work: Some(AbortOnDrop(work)),
                    policy,
                    at,
                    after,
                });
                ahead = after;
                continue;
            }
            if (ahead.at.segment, ahead.at.offset) < (end.segment, end.offset) {
                let Some(mut r) = reader.take() else {
                    reader = Some(spool.reader());
                    continue;
                };
                let from = ahead.at;
                let read = tokio::task::spawn_blocking(move || {
                    let read = r.read(from, end);
                    (read, r)
                })
                .await;
                let read = match read {
                    Ok((read, r)) => {
                        reader = Some(r);
                        read
                    }
                    Err(e) => Err(std::io::Error::other(e.to_string())),
                };
                let skip_to = |after: Cursor| Pending {
                    work: None,
                    policy: policy.clone(),
                    at: from,
                    after,
                };
                match read {
                    Err(e) => {
                        read_failures += 1;
                        tracing::error!(sink = %name, segment = from.segment, offset = from.offset, "cannot read the audit spool: {e}");
                        if pipeline.is_empty() {
                            tokio::time::sleep(backoff(read_failures)).await;
                            continue;
                        }
                        // Deliver what is in flight meanwhile, then read again.
                    }
                    Ok(None) => {
                        read_failures = 0;
                        ahead = Cursor { at: end, item: 0 };
                        pipeline.push_back(skip_to(ahead));
                        continue;
                    }
                    Ok(Some(Read::Corrupt { at, error, resume })) => {
                        read_failures = 0;
                        shared.metrics.audit.spool_corrupt_records.inc();
                        tracing::error!(sink = %name, segment = at.segment, offset = at.offset, "skipping the unreadable rest of an audit spool segment: {error}");
                        ahead = Cursor {
                            at: resume,
                            item: 0,
                        };
                        pipeline.push_back(skip_to(ahead));
                        continue;
                    }
                    Ok(Some(Read::Record { at, record, next })) => {
                        read_failures = 0;
                        if (at.segment, at.offset) != (ahead.at.segment, ahead.at.offset) {
                            ahead = Cursor { at, item: 0 };
                        }
                        ahead.at.event_seq = at.event_seq;
                        if (ahead.item as usize) < record.len() {
                            current = Some((Arc::new(record), next));
                        } else {
                            ahead = Cursor { at: next, item: 0 };
                            pipeline.push_back(skip_to(ahead));
                        }
                        continue;
                    }
                }
            }
        }

        // Finish the oldest piece: wait for its plugin call (or for more of the spool, while
        // the pipeline has room), write its lines, then move the cursor past it.
        let room = pipeline_room(&policy, pipeline.len()) && current.is_none();
        let Some(front) = pipeline.front_mut() else {
            tokio::select! {
                changed = committed.changed() => if changed.is_err() { return },
                changed = config.changed() => if changed.is_err() { return },
            }
            continue;
        };
        let prepared = match &mut front.work {
            None => None,
            Some(AbortOnDrop(work)) => {
                let joined = tokio::select! {
                    joined = work => joined,
                    changed = committed.changed(), if room => {
                        if changed.is_err() {
                            return;
                        }
                        continue;
                    }
                };
                match joined {
                    Ok(prepared) => prepared,
                    Err(e) => {
                        // Only a panic gets here (a bug): deliver the piece again, in a fresh call.
                        tracing::error!(sink = %name, "an audit delivery task failed, delivering its batch again: {e}");
                        pipeline.clear();
                        current = None;
                        ahead = cursor;
                        tokio::time::sleep(backoff(1)).await;
                        continue;
                    }
                }
            }
        };
        let Some(done) = pipeline.pop_front() else {
            continue;
        };
        // The piece before this one is written and its cursor saved first (spool order); that
        // ran while this piece's call did.
        match settle(&mut writing).await {
            Ok(Some(opened)) => outputs = Some(opened),
            Ok(None) => {}
            Err(e) => {
                // Only a panic gets here (a bug): deliver again from the last saved cursor.
                tracing::error!(sink = %name, "an audit write task failed, delivering again from the last saved cursor: {e}");
                outputs = None;
                pipeline.clear();
                current = None;
                cursor = load_cursor(&shared, &name).await;
                ahead = cursor;
                tokio::time::sleep(backoff(1)).await;
                continue;
            }
        }
        // Outputs (open files, HTTP clients) are kept across reloads that do not change them.
        let mut opened = match outputs.take() {
            Some(opened) if opened.0 == done.policy.outputs => opened,
            _ => (
                done.policy.outputs.clone(),
                Outputs::new(&done.policy.outputs, spool.fsync()),
            ),
        };
        // Written and saved on a task of its own, so that the pipeline refills (the next calls
        // start) while this piece's lines go out.
        cursor = done.after;
        let (shared_, name_) = (shared.clone(), name.clone());
        writing = Some(tokio::spawn(async move {
            if let Some(prepared) = prepared {
                write(
                    &shared_,
                    &name_,
                    &done.policy,
                    &mut opened,
                    prepared,
                    done.at,
                )
                .await;
            }
            save(&shared_, &name_, done.after).await;
            opened
        }));
    }
}

/// Waits for the piece being written (if any) to be written and its cursor saved: its outputs
/// back, to write the next one with; `Err` if the task failed (a panic).
async fn settle(
    writing: &mut Option<Writing>,
) -> Result<Option<(Vec<OutputSpec>, Outputs)>, tokio::task::JoinError> {
    match writing.take() {
        Some(task) => task.await.map(Some),
        None => Ok(None),
    }
}

/// The task writing a piece and saving its cursor; it hands back the outputs it wrote with.
type Writing = tokio::task::JoinHandle<(Vec<OutputSpec>, Outputs)>;

/// Whether the pipeline has room for another piece.
fn pipeline_room(policy: &SinkPolicy<Plugin>, len: usize) -> bool {
    len < policy.in_flight.max(1)
}

/// The sink's saved cursor. One that cannot be read is never a reason to stop: the sink goes
/// back to the oldest retained record (its backlog is delivered again, at least once), and the
/// error is logged, counted and shown by `/readyz`.
async fn load_cursor(shared: &Arc<Shared>, name: &Arc<str>) -> Cursor {
    let (spool, n) = (shared.spool.clone(), name.clone());
    let cursor = match tokio::task::spawn_blocking(move || spool.load_cursor(&n)).await {
        Ok(Ok(cursor)) => cursor,
        Ok(Err(e)) => {
            let at = e.fallback.at;
            tracing::error!(sink = %name, segment = at.segment, offset = at.offset, "cannot read the audit cursor, delivering again from the oldest retained event: {e}");
            shared.metrics.audit.cursor_error(name);
            shared.sink_error(
                name,
                format!(
                    "cursor unreadable ({e}) at {}; delivering again from the oldest retained event",
                    now_ms()
                ),
            );
            e.fallback
        }
        Err(e) => {
            // Only a panic gets here (a bug): from the oldest retained event, as above.
            tracing::error!(sink = %name, "cannot load the audit cursor: {e}");
            shared.metrics.audit.cursor_error(name);
            Cursor {
                at: Position {
                    segment: 0,
                    offset: super::spool::record::SEGMENT_HEADER_LEN,
                    event_seq: 0,
                },
                item: 0,
            }
        }
    };
    shared.saved(name, cursor.at);
    cursor
}

/// Saves the cursor, then tells the spool (in that order, so that no crash leaves a cursor in
/// a reclaimed segment). A cursor that cannot be saved is retried: moving on without it would
/// only re-deliver, but a disk that refuses it is worth an error line.
async fn save(shared: &Arc<Shared>, name: &Arc<str>, cursor: Cursor) {
    // One attempt: the next record's save tries again, and a disk that refuses every write
    // (full) must not cost each record a backoff. Logged when it starts and when it ends.
    let (spool, n) = (shared.spool.clone(), name.clone());
    let saved = tokio::task::spawn_blocking(move || spool.save_cursor(&n, &cursor))
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    match saved {
        Ok(()) => {
            shared.saved(name, cursor.at);
            if shared.save_failing(name, false) {
                tracing::info!(sink = %name, "the audit cursor is saved again");
            }
        }
        Err(e) => {
            if !shared.save_failing(name, true) {
                tracing::error!(sink = %name, "cannot save the audit cursor (retried with every record; a restart meanwhile delivers some events again): {e}");
            }
        }
    }
    shared.spool.progress(name, cursor.at);
}

/// The lines of a piece, ready for the outputs.
struct Prepared {
    /// By output index, in the order of the grants.
    lines: Vec<(usize, Vec<String>)>,
    /// The events they came from.
    events: u64,
}

/// Routes items `piece` of `record` (at `at`) for one sink and runs its plugin on them (with
/// retries): their lines, or `None` when nothing is left to write (all filtered out, or
/// dead-lettered).
async fn prepare(
    shared: Arc<Shared>,
    name: Arc<str>,
    policy: Arc<SinkPolicy<Plugin>>,
    record: Arc<Record>,
    piece: Range<usize>,
    at: Position,
) -> Option<Prepared> {
    let (shared, name, policy, record) = (&shared, &name, &policy, &record);
    let metrics = &shared.metrics.audit;
    let routed = {
        let (policy, record, piece) = (policy.clone(), record.clone(), piece.clone());
        tokio::task::spawn_blocking(move || route::route(&policy.rules, &record, piece)).await
    };
    let Routed {
        events,
        filtered,
        undecodable,
    } = match routed {
        Ok(routed) => routed,
        Err(e) => {
            // Only a panic in routing gets here (a bug): keep the items rather than skip them.
            tracing::error!(sink = %name, "routing audit events failed: {e}");
            Routed {
                undecodable: piece
                    .clone()
                    .map(|i| (i, format!("routing failed: {e}")))
                    .collect(),
                ..Routed::default()
            }
        }
    };
    metrics.filtered(name, filtered as u64);
    for (i, error) in undecodable {
        tracing::error!(sink = %name, segment = at.segment, offset = at.offset, item = i, "a spooled audit event no longer decodes, dead-lettering it: {error}");
        let raw = String::from_utf8_lossy(record.json(i)).into_owned();
        if dead_letter(shared, name, DeadLetter::raw(name, at, &error, raw), 1).await {
            metrics.dead_lettered(name, 1);
        }
    }
    if events.is_empty() {
        return None;
    }
    let events = Arc::new(events);
    let count = events.len() as u64;

    // The plugin: a failure is retried, and after maxAttempts the events are dead-lettered.
    let mut attempt = 0;
    let lines = loop {
        attempt += 1;
        let started = Instant::now();
        let result = emit(policy, &events).await;
        shared.metrics.plugin_call(
            name,
            result.as_ref().map_or_else(PluginFailure::label, |_| "ok"),
            started.elapsed(),
        );
        match result {
            Ok(lines) => break lines,
            Err(failure) => {
                metrics.failure(name, failure.label());
                if attempt >= policy.max_attempts {
                    tracing::error!(sink = %name, attempt, events = count, "audit sink failed {attempt} times, dead-lettering the batch: {failure}");
                    let error = failure.to_string();
                    let letter = DeadLetter::events(name, at, attempt, &error, &events);
                    if dead_letter(shared, name, letter, count).await {
                        metrics.dead_lettered(name, count);
                    }
                    return None;
                }
                tracing::warn!(sink = %name, attempt, max_attempts = policy.max_attempts, events = count, "audit sink failed, retrying: {failure}");
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    };
    Some(Prepared {
        lines,
        events: count,
    })
}

/// Writes a piece's lines to the sink's outputs: returns once they are in them or in its
/// dead-letter file.
async fn write(
    shared: &Arc<Shared>,
    name: &Arc<str>,
    policy: &SinkPolicy<Plugin>,
    opened: &mut (Vec<OutputSpec>, Outputs),
    prepared: Prepared,
    at: Position,
) {
    let metrics = &shared.metrics.audit;
    let Prepared {
        lines,
        events: count,
    } = prepared;
    // The outputs: each one is retried until it takes its lines; only lines a destination
    // keeps refusing (HTTP 4xx) are dead-lettered after maxAttempts.
    let (mut all_written, mut dead_lettered) = (true, true);
    for (index, lines) in lines {
        let output = opened.1.name(index).to_owned();
        let lines = Arc::new(lines);
        let (mut done, mut attempt, mut refused) = (0, 0, 0);
        loop {
            match opened.1.write(index, &lines, &mut done).await {
                Ok(()) => {
                    metrics.output_lines(name, &output, lines.len() as u64);
                    break;
                }
                Err(OutputError { permanent, message }) => {
                    metrics.output_failure(name, &output);
                    metrics.failure(name, "output");
                    attempt += 1;
                    refused += u32::from(permanent);
                    if refused >= policy.max_attempts {
                        tracing::error!(sink = %name, output, lines = lines.len() - done, "output refused the lines {refused} times, dead-lettering them: {message}");
                        let letter =
                            DeadLetter::lines(name, &output, at, refused, &message, &lines[done..]);
                        dead_lettered &= dead_letter(shared, name, letter, count).await;
                        all_written = false;
                        break;
                    }
                    tracing::warn!(sink = %name, output, attempt, "audit output write failed, retrying: {message}");
                    tokio::time::sleep(backoff(attempt)).await;
                    reopen_if_reloaded(shared, name, opened);
                }
            }
        }
    }
    if all_written {
        metrics.delivered(name, count);
    } else if dead_lettered {
        metrics.dead_lettered(name, count);
    }
}

/// A reload that changed the settings of the sink's outputs (a CA file, credentials, a URL) but
/// not their names and order applies to the lines being retried: the outputs are opened again
/// from the new settings. (A reload that renames or regroups them applies from the next piece.)
fn reopen_if_reloaded(shared: &Shared, name: &str, opened: &mut (Vec<OutputSpec>, Outputs)) {
    let Some(now) = shared.sink(name) else {
        return;
    };
    let same_names = now.outputs.len() == opened.0.len()
        && now
            .outputs
            .iter()
            .zip(&opened.0)
            .all(|(a, b)| a.name == b.name);
    if now.outputs != opened.0 && same_names {
        tracing::info!(sink = %name, "audit outputs reconfigured: retrying with the new settings");
        *opened = (
            now.outputs.clone(),
            Outputs::new(&now.outputs, shared.spool.fsync()),
        );
    }
}

/// One call of a sink's plugin on routed `events`: its lines grouped by output (the index of
/// the output in the sink's grants, in that order), checked. The delivery path's own call,
/// without the outputs; `wasmgate test` runs a sink offline with it (see [`offline`]).
pub async fn emit(
    policy: &SinkPolicy<Plugin>,
    events: &[Event],
) -> Result<Vec<(usize, Vec<String>)>, PluginFailure> {
    let started = Instant::now();
    let batch: Arc<[_]> = events.iter().map(route::to_wit).collect();
    // Waiting for a pool slot (under busy admission traffic) may take up to another
    // timeout before the call's own budget starts.
    policy
        .plugin
        .deliver(&batch, started + policy.timeout * 2, policy.timeout)
        .await
        .and_then(|emissions| by_output(policy, emissions))
}

/// What a sink makes of a batch of audit events, offline.
#[derive(Debug, Default)]
pub struct Emitted {
    /// How many of the events its rules filtered out (the plugin never saw them).
    pub filtered: usize,
    /// The lines it wrote, per output it wrote to (in the order of its grants).
    pub lines: Vec<(String, Vec<String>)>,
}

/// Runs one sink on `events` (audit.k8s.io/v1 Event JSON) as delivery does, routed by its rules
/// and stripped to their level, and returns its lines instead of writing them: no spool,
/// outputs, retries or dead letters. An event that does not decode, or a failed plugin call,
/// is an error.
pub async fn offline(policy: &SinkPolicy<Plugin>, events: &[String]) -> Result<Emitted, String> {
    let mut routed = Vec::with_capacity(events.len());
    let mut filtered = 0;
    for (i, json) in events.iter().enumerate() {
        let event = Event::decode(json).map_err(|e| format!("event {}: {e}", i + 1))?;
        match route::route_event(&policy.rules, event) {
            Some(event) => routed.push(event),
            None => filtered += 1,
        }
    }
    let mut emitted = Emitted {
        filtered,
        lines: Vec::new(),
    };
    if routed.is_empty() {
        return Ok(emitted);
    }
    let lines = emit(policy, &routed)
        .await
        .map_err(|failure| format!("the sink failed: {failure}"))?;
    emitted.lines = lines
        .into_iter()
        .map(|(index, lines)| (policy.outputs[index].name.clone(), lines))
        .collect();
    Ok(emitted)
}

/// Groups a plugin's emissions by output (in the order of the grants), refusing any line to an
/// output the sink was not granted, or that is not one line.
fn by_output(
    policy: &SinkPolicy<Plugin>,
    emissions: Vec<Emission>,
) -> Result<Vec<(usize, Vec<String>)>, PluginFailure> {
    let mut grouped: Vec<(usize, Vec<String>)> = Vec::new();
    for emission in emissions {
        // `Outputs` are opened from the grants, in their order: an index here is one there.
        let index = match policy
            .outputs
            .iter()
            .position(|o| o.name == emission.output)
        {
            Some(index) => index,
            _ => {
                return Err(PluginFailure::InvalidOutput(format!(
                    "a line for output {:?}, which is not granted to this sink (granted: {})",
                    emission.output,
                    policy
                        .outputs
                        .iter()
                        .map(|o| o.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        };
        if memchr::memchr2(b'\n', b'\r', emission.line.as_bytes()).is_some() {
            return Err(PluginFailure::InvalidOutput(format!(
                "a line for output {:?} contains a line break",
                emission.output
            )));
        }
        match grouped.iter_mut().find(|(i, _)| *i == index) {
            Some((_, lines)) => lines.push(emission.line),
            None => grouped.push((index, vec![emission.line])),
        }
    }
    grouped.sort_by_key(|(index, _)| *index);
    Ok(grouped)
}

/// One line of a dead-letter file.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DeadLetter<'a> {
    sink: &'a str,
    /// Unix milliseconds.
    dead_lettered_at: u64,
    /// Where the batch is in the spool (segment and offset of its record).
    segment: u64,
    offset: u64,
    attempts: u32,
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<&'a str>,
    /// The events the plugin failed on, as the sink would have seen them.
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Vec<Box<RawValue>>>,
    /// The lines an output refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    lines: Option<&'a [String]>,
    /// An item that no longer decodes, as spooled.
    #[serde(skip_serializing_if = "Option::is_none")]
    raw: Option<String>,
}

impl<'a> DeadLetter<'a> {
    fn base(sink: &'a str, at: Position, attempts: u32, error: &'a str) -> Self {
        DeadLetter {
            sink,
            dead_lettered_at: now_ms(),
            segment: at.segment,
            offset: at.offset,
            attempts,
            error,
            output: None,
            events: None,
            lines: None,
            raw: None,
        }
    }

    fn events(
        sink: &'a str,
        at: Position,
        attempts: u32,
        error: &'a str,
        events: &[Event],
    ) -> Self {
        DeadLetter {
            events: Some(
                events
                    .iter()
                    .filter_map(|e| RawValue::from_string(e.to_json()).ok())
                    .collect(),
            ),
            ..Self::base(sink, at, attempts, error)
        }
    }

    fn lines(
        sink: &'a str,
        output: &'a str,
        at: Position,
        attempts: u32,
        error: &'a str,
        lines: &'a [String],
    ) -> Self {
        DeadLetter {
            output: Some(output),
            lines: Some(lines),
            ..Self::base(sink, at, attempts, error)
        }
    }

    fn raw(sink: &'a str, at: Position, error: &'a str, raw: String) -> Self {
        DeadLetter {
            raw: Some(raw),
            ..Self::base(sink, at, 0, error)
        }
    }
}

/// Appends `letter` to the sink's dead-letter file. It must land there before the cursor moves
/// on, so a failure to write it is retried until it works; only a full dead-letter budget
/// drops it, counted and logged with its events. Returns whether it was written.
async fn dead_letter(
    shared: &Arc<Shared>,
    name: &Arc<str>,
    letter: DeadLetter<'_>,
    events: u64,
) -> bool {
    // Strings, numbers and valid raw JSON: serializing cannot fail.
    let line = Arc::new(serde_json::to_string(&letter).unwrap_or_default());
    let mut attempt = 0;
    loop {
        let (spool, n, l) = (shared.spool.clone(), name.clone(), line.clone());
        match tokio::task::spawn_blocking(move || spool.dead_letter(&n, &l)).await {
            Ok(Ok(())) => return true,
            Ok(Err(DeadLetterError::Full { used, max_bytes })) => {
                tracing::error!(
                    sink = %name, events, segment = letter.segment, offset = letter.offset,
                    dead_letter_bytes = used, dead_letter_max_bytes = max_bytes,
                    "the dead-letter budget is full: dropping a dead letter (move the files under dead-letter/ away to make room): {}",
                    letter.error
                );
                shared.metrics.audit.dead_letter_dropped(name, events);
                return false;
            }
            Ok(Err(e)) => tracing::error!(sink = %name, "cannot write the dead-letter file: {e}"),
            Err(e) => tracing::error!(sink = %name, "cannot write the dead-letter file: {e}"),
        }
        attempt += 1;
        tokio::time::sleep(backoff(attempt)).await;
    }
}
