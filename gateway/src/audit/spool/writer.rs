//! The spool's single writer: a thread that owns the active segment, the dedup set, the segment
//! table and every sink's last reported position. Appends arriving together are written
//! together and covered by one fsync (group commit), and each is answered only once it is
//! durable. Reclaims segments every sink has passed.
//!
//! A failed write, sync or roll refuses the appends it carried and leaves the writer able to
//! retry: bytes a failed write left behind are cut off before anything else is written (and
//! until they are, appends are refused rather than written after them), a half-created segment
//! is removed, and when the disk is full the writer rolls as soon as every sink has read the
//! active segment, deleting it first if even a new segment's header does not fit.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot, watch};

use super::dedup::Dedup;
use super::record::{self, SEGMENT_HEADER_LEN};
use super::{AppendError, Appended, FsyncPolicy, Position, SpoolItem, SpoolStats};

/// Appends answered by one fsync at most, in `batch` mode. The audit endpoint's concurrency cap
/// already bounds how many can be waiting; this keeps one group's latency bounded too.
const MAX_GROUP: usize = 64;

pub(super) enum Command {
    Append {
        items: Vec<SpoolItem>,
        reply: oneshot::Sender<Result<Appended, AppendError>>,
    },
    /// The sinks that read the spool, with where each is; replaces the previous set.
    SetSinks(Vec<(String, Position)>),
    /// A sink got past everything before `Position`.
    Progress(String, Position),
}

pub(super) struct Active {
    pub id: u64,
    pub file: File,
    /// Bytes committed: everything a reader may see.
    pub len: u64,
    /// A failed write may have left bytes after `len` that could not be cut off yet.
    pub dirty: bool,
    /// Its file was deleted to make room (disk full) and the next one could not be created
    /// yet: nothing may be written before a roll.
    pub gone: bool,
}

pub(super) struct Writer {
    pub segments_dir: PathBuf,
    pub fsync: FsyncPolicy,
    pub max_bytes: u64,
    pub segment_target: u64,
    pub active: Active,
    /// The last write failed for lack of space: roll as soon as the sinks allow, whatever the
    /// active segment's size, so that its space comes back.
    pub starved: bool,
    /// Every segment on disk with its length, the active one included.
    pub segments: BTreeMap<u64, u64>,
    pub end: Position,
    pub dedup: Dedup,
    pub sinks: HashMap<String, Position>,
    pub committed: watch::Sender<Position>,
    pub stats: Arc<SpoolStats>,
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let group_max = match self.fsync {
            FsyncPolicy::Always => 1,
            FsyncPolicy::Batch | FsyncPolicy::Never => MAX_GROUP,
        };
        let mut group = Vec::with_capacity(group_max);
        while let Some(command) = commands.blocking_recv() {
            self.handle(command, &mut group);
            while group.len() < group_max {
                match commands.try_recv() {
                    Ok(command) => self.handle(command, &mut group),
                    Err(_) => break,
                }
            }
            if !group.is_empty() {
                self.commit(std::mem::take(&mut group));
            }
        }
    }

    fn handle(&mut self, command: Command, group: &mut Vec<(Vec<SpoolItem>, Reply)>) {
        match command {
            Command::Append { items, reply } => group.push((items, reply)),
            Command::SetSinks(sinks) => {
                self.sinks = sinks.into_iter().collect();
                self.reclaim();
            }
            Command::Progress(sink, at) => {
                if let Some(known) = self.sinks.get_mut(&sink) {
                    let moved_segment = known.segment != at.segment;
                    *known = at;
                    if moved_segment || self.all_caught_up() {
                        self.reclaim();
                    }
                }
            }
        }
    }

    /// Cuts bytes a failed write left after the committed end, if any.
    fn clean_tail(&mut self) -> io::Result<()> {
        if self.active.dirty {
            self.active.file.set_len(self.active.len)?;
            self.active.dirty = false;
            tracing::info!(
                segment = self.active.id,
                "the audit spool segment is cut back to its committed end; appends resume"
            );
        }
        Ok(())
    }

    fn commit(&mut self, group: Vec<(Vec<SpoolItem>, Reply)>) {
        if let Err(e) = self.clean_tail() {
            tracing::error!(
                segment = self.active.id,
                "cannot cut the spool segment back after a failed write, refusing {} batches: {e}",
                group.len()
            );
            for (_, reply) in group {
                let _ = reply.send(Err(AppendError::Io(e.to_string())));
            }
            return;
        }
        if (self.active.gone || self.active.len >= self.segment_target)
            && let Err(e) = self.roll()
        {
            tracing::error!("cannot start a new spool segment: {e}");
            for (_, reply) in group {
                let _ = reply.send(Err(AppendError::Io(e.to_string())));
            }
            return;
        }
        let now_ms = super::now_ms();
        self.buf.clear();
        let mut pending: HashSet<u128> = HashSet::new();
        let mut next_seq = self.end.event_seq;
        let mut answers = Vec::with_capacity(group.len());
        for (items, reply) in group {
            let mut fresh = Vec::with_capacity(items.len());
            let mut duplicates = 0;
            for item in &items {
                if self.dedup.contains(item.key, now_ms) || !pending.insert(item.key) {
                    duplicates += 1;
                } else {
                    fresh.push(item);
                }
            }
            if fresh.is_empty() {
                answers.push((
                    reply,
                    Ok(Appended {
                        events: 0,
                        duplicates,
                        bytes: 0,
                    }),
                ));
                continue;
            }
            let len = record::encoded_len(fresh.iter().map(|i| i.json.len()));
            let refuse =
                if len > self.max_bytes || len > u64::from(super::reader::MAX_RECORD_PAYLOAD) {
                    Some(AppendError::TooLarge {
                        bytes: len,
                        max_bytes: self.max_bytes,
                    })
                } else if self.used() + self.buf.len() as u64 + len > self.max_bytes {
                    self.reclaim();
                    (self.used() + self.buf.len() as u64 + len > self.max_bytes).then_some(
                        AppendError::Full {
                            max_bytes: self.max_bytes,
                        },
                    )
                } else if next_seq + fresh.len() as u64 > record::MAX_EVENT_SEQ {
                    // Only a spool whose files were tampered with gets here.
                    Some(AppendError::Io(format!(
                        "event sequence numbers are exhausted at {next_seq}"
                    )))
                } else {
                    None
                };
            if let Some(refusal) = refuse {
                for item in &fresh {
                    pending.remove(&item.key);
                }
                answers.push((reply, Err(refusal)));
                continue;
            }
            record::encode(
                &mut self.buf,
                next_seq,
                now_ms,
                fresh.iter().map(|i| (i.key, &i.json[..])),
            );
            next_seq += fresh.len() as u64;
            answers.push((
                reply,
                Ok(Appended {
                    events: fresh.len(),
                    duplicates,
                    bytes: len,
                }),
            ));
        }
        if !self.buf.is_empty() {
            // Read here, not before the loop: a reclaim for a full spool may have rolled.
            let start_len = self.active.len;
            let written = self
                .active
                .file
                .write_all(&self.buf)
                .and_then(|()| match self.fsync {
                    FsyncPolicy::Never => Ok(()),
                    FsyncPolicy::Always | FsyncPolicy::Batch => self.active.file.sync_data(),
                });
            if let Err(e) = written {
                // Take the partial group back off the file so that no reader ever sees it; the
                // API server re-sends the batches we refuse. Readers never read past the
                // committed end, which has not moved.
                tracing::error!(
                    segment = self.active.id,
                    "cannot write to the spool, refusing {} batches: {e}",
                    answers.len()
                );
                self.active.dirty = true;
                if let Err(e) = self.clean_tail() {
                    tracing::error!(
                        segment = self.active.id,
                        "cannot truncate the spool segment back (retried before the next write): {e}"
                    );
                }
                debug_assert!(self.active.dirty || start_len == self.active.len);
                if e.raw_os_error() == Some(ENOSPC) {
                    self.starved = true;
                    self.reclaim();
                }
                for (reply, _) in answers {
                    let _ = reply.send(Err(AppendError::Io(e.to_string())));
                }
                return;
            }
            self.active.len += self.buf.len() as u64;
            self.segments.insert(self.active.id, self.active.len);
            for key in pending {
                self.dedup.insert(key, now_ms);
            }
            self.end = Position {
                segment: self.active.id,
                offset: self.active.len,
                event_seq: next_seq,
            };
            self.committed.send_replace(self.end);
            self.publish_stats();
        }
        for (reply, answer) in answers {
            let _ = reply.send(answer);
        }
    }

    fn bytes(&self) -> u64 {
        self.segments.values().sum()
    }

    /// What counts against `--spool-max-bytes`: segments and dead-letter files.
    fn used(&self) -> u64 {
        self.bytes() + self.stats.dead_letter_bytes.load(Ordering::Relaxed)
    }

    fn publish_stats(&self) {
        self.stats.bytes.store(self.bytes(), Ordering::Relaxed);
        self.stats
            .segments
            .store(self.segments.len() as u64, Ordering::Relaxed);
    }

    /// Closes the active segment and starts the next one. Never with bytes after the committed
    /// end: a finished segment is read to its end.
    fn roll(&mut self) -> io::Result<()> {
        self.clean_tail()?;
        let id = self.active.id + 1;
        let created = super::create_segment(&self.segments_dir, id, self.end.event_seq, self.fsync);
        let file = match created {
            Ok(file) => file,
            // The disk is full, and every sink has read the active segment: it may go first
            // to make room for the next one's header. (A crash in between leaves no segment:
            // the spool starts afresh at start-up, and cursors past its end move to the end.)
            Err(e)
                if e.raw_os_error() == Some(ENOSPC)
                    && !self.active.gone
                    && self.all_caught_up() =>
            {
                // Emptied first: open handles (ours, the readers') would keep its space.
                self.active.file.set_len(0)?;
                let old = self.segments_dir.join(super::segment_name(self.active.id));
                std::fs::remove_file(&old)?;
                self.segments.remove(&self.active.id);
                self.active.gone = true;
                tracing::warn!(
                    segment = self.active.id,
                    "disk full: the audit spool's read segment is deleted before the next one is created"
                );
                super::create_segment(&self.segments_dir, id, self.end.event_seq, self.fsync)?
            }
            Err(e) => return Err(e),
        };
        self.starved = false;
        self.segments.insert(id, SEGMENT_HEADER_LEN);
        self.active = Active {
            id,
            file,
            len: SEGMENT_HEADER_LEN,
            dirty: false,
            gone: false,
        };
        self.end = Position {
            segment: id,
            offset: SEGMENT_HEADER_LEN,
            event_seq: self.end.event_seq,
        };
        self.committed.send_replace(self.end);
        self.publish_stats();
        Ok(())
    }

    /// Where a sink really is: a position at the end of a finished segment is the start of the
    /// next one.
    fn normalized(&self, at: Position) -> (u64, u64) {
        let (mut segment, mut offset) = (at.segment, at.offset);
        while segment < self.active.id
            && self.segments.get(&segment).is_none_or(|&len| offset >= len)
        {
            segment += 1;
            offset = SEGMENT_HEADER_LEN;
        }
        (segment, offset)
    }

    fn all_caught_up(&self) -> bool {
        let end = (self.end.segment, self.end.offset);
        self.sinks.values().all(|at| self.normalized(*at) >= end)
    }

    /// Deletes the segments every sink has read to their end. When every sink has read
    /// everything and the active segment is worth it, it is rolled first so that it can go too
    /// (a spool that is never written to again must still drain).
    fn reclaim(&mut self) {
        if self.all_caught_up()
            && self.active.len > SEGMENT_HEADER_LEN
            && (self.starved
                || self.active.len >= self.segment_target / 4
                || self.bytes() > self.max_bytes / 2)
            && let Err(e) = self.roll()
        {
            tracing::warn!("cannot start a new spool segment: {e}");
        }
        let keep_from = self
            .sinks
            .values()
            .map(|at| self.normalized(*at).0)
            .min()
            .unwrap_or(self.active.id)
            .min(self.active.id);
        let done: Vec<u64> = self
            .segments
            .range(..keep_from)
            .map(|(id, _)| *id)
            .collect();
        for id in done {
            let path = self.segments_dir.join(super::segment_name(id));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(segment = id, "cannot delete a reclaimed spool segment: {e}");
                    continue;
                }
            }
            self.segments.remove(&id);
            tracing::debug!(segment = id, "spool segment reclaimed");
        }
        self.publish_stats();
    }
}

/// `ENOSPC`: no space left on the device (the same number on every Unix wasmgate runs on).
const ENOSPC: i32 = 28;

type Reply = oneshot::Sender<Result<Appended, AppendError>>;
