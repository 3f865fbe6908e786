//! The durable spool: accepted audit batches in append-only segment files of checksummed
//! records, each sink's cursor, and the dead-letter files. An append is answered only once it
//! is written (and, unless `--fsync never`, synced); a segment is deleted only once every sink
//! has read past it. Layout under the spool directory:
//!
//! ```text
//! LOCK                          held while a gateway uses the directory
//! segments/00000000000000000001.seg ...
//! cursors/<sink>.json           {"segment":..,"offset":..,"eventSeq":..,"item":..}
//! dead-letter/<sink>.jsonl      batches a sink failed on maxAttempts times
//! ```
//!
//! Faults: a write, sync, roll or truncate that fails (disk full, out of file descriptors, I/O
//! error) refuses the appends it carried and leaves the spool usable; a cursor that cannot be
//! read sends its sink back to the oldest retained record; a zero-filled or torn tail (a crash,
//! or a power loss under `--fsync never`) is cut off at start-up.
//!
//! Blocking file I/O throughout: the writer has its own thread; readers, cursors and the
//! dead-letter files are used from the blocking pool.

mod dedup;
mod reader;
pub mod record;
mod writer;

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

pub use dedup::{DEDUP_CAPACITY, DEDUP_WINDOW_MS, Dedup, key_of};
pub use reader::{MAX_RECORD_PAYLOAD, Read, SpoolReader};
use record::{RECORD_HEADER_LEN, Record, SEGMENT_HEADER_LEN, SEGMENT_MAGIC, segment_header};
use writer::{Active, Command, Writer};

/// The largest a segment grows before the next one starts (it may exceed this by one group of
/// appends). Segments are the unit of reclamation: smaller ones free space sooner, larger ones
/// mean fewer files. A spool smaller than 8 of these uses an eighth of its size instead.
pub const MAX_SEGMENT_BYTES: u64 = 64 << 20;
/// The smallest segment target, so that a tiny spool does not roll on every batch.
const MIN_SEGMENT_BYTES: u64 = 4 << 10;

/// When the spool syncs what it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// Every batch is synced on its own before it is answered.
    Always,
    /// Batches that arrive together are written together and synced once, before any of them
    /// is answered: as durable as `always`, with fewer syncs under load.
    #[default]
    Batch,
    /// Never synced: an acknowledged batch survives the gateway crashing, not the machine.
    Never,
}

impl FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "batch" => Ok(FsyncPolicy::Batch),
            "never" => Ok(FsyncPolicy::Never),
            _ => Err(format!("{s:?} is not one of always, batch, never")),
        }
    }
}

impl FsyncPolicy {
    /// Parses a command-line value (for clap's `value_parser`).
    pub fn from_str_arg(s: &str) -> Result<Self, String> {
        s.parse()
    }

    /// Whether writes are synced at all.
    pub fn syncs(self) -> bool {
        self != FsyncPolicy::Never
    }
}

/// How the spool is set up.
#[derive(Debug, Clone)]
pub struct SpoolConfig {
    /// Its directory.
    pub dir: PathBuf,
    /// The most bytes its segments may take; beyond, appends are refused.
    pub max_bytes: u64,
    /// When to sync.
    pub fsync: FsyncPolicy,
    /// The most bytes the dead-letter files may take (they count towards `max_bytes` too);
    /// beyond, further dead letters are dropped, counted and logged.
    pub dead_letter_max_bytes: u64,
}

/// The dead-letter budget when none is given: a quarter of the spool's, so that a sink that
/// fails everything leaves three quarters to the spool's segments.
pub fn default_dead_letter_max_bytes(max_bytes: u64) -> u64 {
    max_bytes / 4
}

/// A place in the spool: a record boundary, and the sequence number of the event there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Position {
    /// The segment.
    pub segment: u64,
    /// The byte offset in the segment.
    pub offset: u64,
    /// The sequence number of the next event (events are numbered from 0 without gaps).
    pub event_seq: u64,
}

/// A sink's place in the spool: a record, and how many of its events are done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cursor {
    /// The record being delivered.
    #[serde(flatten)]
    pub at: Position,
    /// Events of that record already delivered.
    pub item: u32,
}

/// One event to spool: its dedup key and its JSON exactly as received.
#[derive(Debug, Clone)]
pub struct SpoolItem {
    /// See [`key_of`].
    pub key: u128,
    /// The event's JSON text.
    pub json: Bytes,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Events written.
    pub events: usize,
    /// Events dropped as already spooled.
    pub duplicates: usize,
    /// Bytes written.
    pub bytes: u64,
}

/// Why an append was refused. Nothing of a refused append is kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The spool holds as much as it may until sinks catch up.
    #[error("the audit spool is full ({max_bytes} bytes) until sinks catch up")]
    Full {
        /// The configured limit.
        max_bytes: u64,
    },
    /// The batch alone is larger than the spool may ever hold.
    #[error("the batch needs {bytes} bytes, more than the audit spool may hold ({max_bytes})")]
    TooLarge {
        /// What it needs.
        bytes: u64,
        /// The configured limit.
        max_bytes: u64,
    },
    /// Writing or syncing failed.
    #[error("cannot write to the audit spool: {0}")]
    Io(String),
    /// The writer is gone (shutdown).
    #[error("the audit spool is shut down")]
    Closed,
}

/// Why the spool cannot be opened.
#[derive(Debug, thiserror::Error)]
#[error("audit spool {}: {message}", dir.display())]
pub struct SpoolError {
    /// The spool directory.
    pub dir: PathBuf,
    /// What is wrong.
    pub message: String,
}

/// Figures the metrics read.
#[derive(Debug, Default)]
pub struct SpoolStats {
    /// Bytes in segment files.
    pub bytes: AtomicU64,
    /// Segment files.
    pub segments: AtomicU64,
    /// Bytes in dead-letter files (re-read from the directory now and then, so that removing
    /// them frees the budget).
    pub dead_letter_bytes: AtomicU64,
}

/// What opening found.
#[derive(Debug, Clone, Default)]
pub struct Recovery {
    /// Records found intact.
    pub records: u64,
    /// Events in them.
    pub events: u64,
    /// Bytes of a torn record or a zero-filled tail cut off the end of a segment.
    pub truncated_bytes: u64,
    /// Records found corrupt before the end (their segment's rest is skipped by readers).
    pub corrupt: u64,
    /// Event keys the dedup set was rebuilt with.
    pub dedup_keys: usize,
}

/// An open spool. Appends go to its writer thread; dropping the last handle stops it once
/// the appends already sent are done.
pub struct Spool {
    dir: PathBuf,
    fsync: FsyncPolicy,
    dead_letter_max_bytes: u64,
    commands: mpsc::UnboundedSender<Command>,
    committed: watch::Receiver<Position>,
    stats: Arc<SpoolStats>,
    _lock: File,
}

impl Spool {
    /// Opens (creating if needed) the spool in `config.dir`, checks every record, cuts a torn
    /// record off the end, rebuilds the dedup set, and starts the writer. Blocking.
    pub fn open(config: &SpoolConfig) -> Result<(Spool, Recovery), SpoolError> {
        let fail = |message: String| SpoolError {
            dir: config.dir.clone(),
            message,
        };
        let segments_dir = config.dir.join("segments");
        for dir in [
            &segments_dir,
            &config.dir.join("cursors"),
            &config.dir.join("dead-letter"),
        ] {
            std::fs::create_dir_all(dir)
                .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        }
        let lock = File::create(config.dir.join("LOCK"))
            .map_err(|e| fail(format!("cannot create the lock file: {e}")))?;
        lock.try_lock()
            .map_err(|_| fail("in use by another wasmgate process".into()))?;

        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&segments_dir).map_err(|e| fail(e.to_string()))? {
            let name = entry.map_err(|e| fail(e.to_string()))?.file_name();
            let name = name.to_string_lossy();
            if let Some(id) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u64>().ok())
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        if ids.is_empty() {
            create_segment(&segments_dir, 1, 0, config.fsync)
                .map_err(|e| fail(format!("cannot create the first segment: {e}")))?;
            ids.push(1);
        }
        let now = now_ms();
        let mut recovery = Recovery::default();
        let mut dedup = Dedup::default();
        let mut segments = BTreeMap::new();
        let mut next_seq = 0;
        let last = ids.len() - 1;
        for (i, &id) in ids.iter().enumerate() {
            let path = segments_dir.join(segment_name(id));
            let scan = scan_segment(&path, &mut next_seq, |record| {
                recovery.records += 1;
                recovery.events += record.len() as u64;
                if now.saturating_sub(record.accepted_ms) < DEDUP_WINDOW_MS {
                    for key in record.keys() {
                        dedup.insert(key, record.accepted_ms);
                    }
                }
            })
            .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
            let mut len = scan.file_len;
            if let Some(problem) = scan.problem {
                if i == last {
                    // A record cut short by a crash (or never synced before a power loss): it
                    // was never acknowledged, so it is dropped.
                    tracing::warn!(
                        segment = id,
                        offset = scan.valid_len,
                        "audit spool: discarding {} bytes of an incomplete record at the end: {problem}",
                        scan.file_len - scan.valid_len
                    );
                    recovery.truncated_bytes += scan.file_len - scan.valid_len;
                    repair_tail(&path, scan.valid_len, next_seq)
                        .map_err(|e| fail(format!("cannot repair {}: {e}", path.display())))?;
                    len = scan.valid_len.max(SEGMENT_HEADER_LEN);
                } else if scan.zero_tail {
                    // Zeros where records should be: space the file system allocated but whose
                    // data never reached the disk (a power loss under `--fsync never`). Cut off
                    // like a torn tail, so that readers go on with the next segment.
                    tracing::warn!(
                        segment = id,
                        offset = scan.valid_len,
                        "audit spool: discarding {} zero bytes at the end of a segment (a power loss before they were synced)",
                        scan.file_len - scan.valid_len
                    );
                    recovery.truncated_bytes += scan.file_len - scan.valid_len;
                    repair_tail(&path, scan.valid_len, next_seq)
                        .map_err(|e| fail(format!("cannot repair {}: {e}", path.display())))?;
                    len = scan.valid_len.max(SEGMENT_HEADER_LEN);
                } else {
                    tracing::error!(
                        segment = id,
                        offset = scan.valid_len,
                        "audit spool: corrupt record, the rest of this segment cannot be read: {problem}"
                    );
                    recovery.corrupt += 1;
                }
            }
            segments.insert(id, len);
        }
        recovery.dedup_keys = dedup.len();
        let active_id = ids[last];
        let active_len = segments
            .get(&active_id)
            .copied()
            .unwrap_or(SEGMENT_HEADER_LEN);
        let file = OpenOptions::new()
            .append(true)
            .open(segments_dir.join(segment_name(active_id)))
            .map_err(|e| fail(format!("cannot open the active segment: {e}")))?;
        let end = Position {
            segment: active_id,
            offset: active_len,
            event_seq: next_seq,
        };
        let (committed_tx, committed) = watch::channel(end);
        let stats = Arc::new(SpoolStats::default());
        stats.dead_letter_bytes.store(
            dead_letter_bytes(&config.dir.join("dead-letter")),
            Ordering::Relaxed,
        );
        let segment_target = (config.max_bytes / 8).clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES);
        let writer = Writer {
            segments_dir,
            fsync: config.fsync,
            max_bytes: config.max_bytes,
            segment_target,
            active: Active {
                id: active_id,
                file,
                len: active_len,
                dirty: false,
                gone: false,
            },
            starved: false,
            segments,
            end,
            dedup,
            sinks: HashMap::new(),
            committed: committed_tx,
            stats: stats.clone(),
            buf: Vec::new(),
        };
        stats
            .bytes
            .store(writer.segments.values().sum(), Ordering::Relaxed);
        stats
            .segments
            .store(writer.segments.len() as u64, Ordering::Relaxed);
        // Unbounded, yet bounded in practice: appends by the server's cap on audit requests in
        // flight, progress reports by one per delivered record per sink (and the writer drains
        // them in microseconds). A bounded channel would make a sink block the writer.
        let (commands, receiver) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("wasmgate-spool".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| fail(format!("cannot start the spool writer: {e}")))?;
        Ok((
            Spool {
                dir: config.dir.clone(),
                fsync: config.fsync,
                dead_letter_max_bytes: config.dead_letter_max_bytes,
                commands,
                committed,
                stats,
                _lock: lock,
            },
            recovery,
        ))
    }

    /// Writes `items` as one record (less the ones already spooled) and answers once it is
    /// durable under the fsync policy.
    pub async fn append(&self, items: Vec<SpoolItem>) -> Result<Appended, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Append { items, reply })
            .map_err(|_| AppendError::Closed)?;
        answer.await.unwrap_or(Err(AppendError::Closed))
    }

    /// The committed end: everything before it may be read.
    pub fn committed(&self) -> watch::Receiver<Position> {
        self.committed.clone()
    }

    /// A reader for one sink.
    pub fn reader(&self) -> SpoolReader {
        SpoolReader::new(self.dir.join("segments"))
    }

    /// The spool directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The fsync policy.
    pub fn fsync(&self) -> FsyncPolicy {
        self.fsync
    }

    /// Bytes and segments on disk.
    pub fn stats(&self) -> &SpoolStats {
        &self.stats
    }

    /// Tells the writer which sinks read the spool and where they are, replacing the previous
    /// set. Until a sink is in the set, the segments it needs may be reclaimed.
    pub fn set_sinks(&self, sinks: Vec<(String, Position)>) {
        let _ = self.commands.send(Command::SetSinks(sinks));
    }

    /// Tells the writer that `sink` is done with everything before `at`. Call it only after
    /// the cursor is saved, so that a crash never leaves a cursor in a reclaimed segment.
    pub fn progress(&self, sink: &str, at: Position) {
        let _ = self.commands.send(Command::Progress(sink.to_owned(), at));
    }

    /// `sink`'s saved cursor. A sink without one starts at the committed end: it sees what is
    /// accepted from now on. A cursor older than the oldest segment moves to its start (the
    /// sink was removed while its events were reclaimed). A cursor that exists but cannot be
    /// read is an error that carries where the sink must go instead: the oldest retained record
    /// (its backlog is delivered again rather than skipped). Blocking.
    pub fn load_cursor(&self, sink: &str) -> Result<Cursor, CursorError> {
        let end = *self.committed.borrow();
        let path = self.cursor_path(sink);
        let lost = |message: String| CursorError {
            message: format!("{}: {message}", path.display()),
            fallback: Cursor {
                at: self.oldest(end),
                item: 0,
            },
        };
        let cursor = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Cursor>(&bytes)
                .map_err(|e| lost(format!("not a cursor: {e}")))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let cursor = Cursor { at: end, item: 0 };
                if let Err(e) = self.save_cursor(sink, &cursor) {
                    tracing::warn!(sink, "cannot save a new audit cursor: {e}");
                }
                return Ok(cursor);
            }
            Err(e) => return Err(lost(e.to_string())),
        };
        if (cursor.at.segment, cursor.at.offset) > (end.segment, end.offset) {
            tracing::warn!(
                sink,
                "audit cursor is past the end of the spool; moved to the end"
            );
            return Ok(Cursor { at: end, item: 0 });
        }
        let oldest = self.oldest(end);
        if cursor.at.segment < oldest.segment {
            tracing::warn!(
                sink,
                segment = cursor.at.segment,
                oldest = oldest.segment,
                "audit cursor is older than the spool; moved to its oldest segment"
            );
            return Ok(Cursor {
                at: oldest,
                item: 0,
            });
        }
        Ok(cursor)
    }

    /// The first record of the oldest segment (its first event number from its header), or
    /// segment 0 if the directory cannot be listed: readers and the writer skip segments that
    /// are gone, so that still means "from the oldest retained record".
    fn oldest(&self, end: Position) -> Position {
        let segments = self.dir.join("segments");
        let oldest = std::fs::read_dir(&segments).ok().and_then(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_string_lossy()
                        .strip_suffix(".seg")
                        .and_then(|n| n.parse::<u64>().ok())
                })
                .min()
        });
        let Some(segment) = oldest else {
            return Position {
                segment: 0,
                offset: SEGMENT_HEADER_LEN,
                event_seq: 0,
            };
        };
        let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
        let first_seq = File::open(segments.join(segment_name(segment)))
            .and_then(|f| f.read_exact_at(&mut header, 0))
            .ok()
            .filter(|()| &header[..SEGMENT_MAGIC.len()] == SEGMENT_MAGIC)
            .map_or(0, |()| {
                let mut first = [0u8; 8];
                first.copy_from_slice(&header[SEGMENT_MAGIC.len()..]);
                u64::from_le_bytes(first)
            });
        Position {
            segment: segment.min(end.segment),
            offset: SEGMENT_HEADER_LEN,
            event_seq: first_seq.min(end.event_seq),
        }
    }

    /// Saves `sink`'s cursor atomically: written to a temporary file and synced, renamed over
    /// the old one, and the directory synced (unless `--fsync never`), so that a crash or a
    /// power loss leaves the old or the new one, never a torn one. Blocking.
    pub fn save_cursor(&self, sink: &str, cursor: &Cursor) -> io::Result<()> {
        let path = self.cursor_path(sink);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec(cursor).map_err(io::Error::other)?;
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&text)?;
        if self.fsync.syncs() {
            file.sync_all()?;
        }
        drop(file);
        std::fs::rename(&tmp, &path)?;
        if self.fsync.syncs() {
            File::open(self.dir.join("cursors"))?.sync_all()?;
        }
        Ok(())
    }

    fn cursor_path(&self, sink: &str) -> PathBuf {
        self.dir.join("cursors").join(format!("{sink}.json"))
    }

    /// The dead-letter file of `sink`.
    pub fn dead_letter_path(&self, sink: &str) -> PathBuf {
        self.dir.join("dead-letter").join(format!("{sink}.jsonl"))
    }

    /// Appends one line to `sink`'s dead-letter file, synced unless `--fsync never`: the cursor
    /// moves past the batch right after. Refused with [`DeadLetterError::Full`] when the
    /// dead-letter files would grow past their budget. Blocking.
    pub fn dead_letter(&self, sink: &str, line: &str) -> Result<(), DeadLetterError> {
        let len = line.len() as u64 + 1;
        let used = self.stats.dead_letter_bytes.load(Ordering::Relaxed);
        if used + len > self.dead_letter_max_bytes {
            return Err(DeadLetterError::Full {
                used,
                max_bytes: self.dead_letter_max_bytes,
            });
        }
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.dead_letter_path(sink))?;
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        let start = file.metadata()?.len();
        if let Err(e) = file.write_all(&buf).and_then(|()| {
            if self.fsync.syncs() {
                file.sync_data()
            } else {
                Ok(())
            }
        }) {
            // No half line for the next one to be glued to.
            let _ = file.set_len(start);
            return Err(e.into());
        }
        self.stats
            .dead_letter_bytes
            .fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// Re-reads how much the dead-letter files take (an operator may have moved them away).
    /// Blocking.
    pub fn rescan_dead_letters(&self) {
        self.stats.dead_letter_bytes.store(
            dead_letter_bytes(&self.dir.join("dead-letter")),
            Ordering::Relaxed,
        );
    }
}

/// Why a dead letter was not written.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The dead-letter files hold their budget.
    #[error("the dead-letter files hold {used} bytes, their budget is {max_bytes}")]
    Full {
        /// Bytes in dead-letter files.
        used: u64,
        /// The budget.
        max_bytes: u64,
    },
    /// Writing failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A cursor file that exists but cannot be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct CursorError {
    /// What is wrong with it.
    pub message: String,
    /// Where its sink goes instead: the oldest retained record.
    pub fallback: Cursor,
}

/// The bytes of the files in `dir` (0 if it cannot be listed).
fn dead_letter_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    })
}

/// The file name of segment `id`: zero-padded so that names sort like ids.
pub fn segment_name(id: u64) -> String {
    format!("{id:020}.seg")
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Creates segment `id`, whose first event will be `first_seq`, with its header, synced (file
/// and directory entry) unless the policy says never. A file left there by an earlier attempt
/// that failed half-way (disk full) is overwritten, and one that fails now is removed, so that
/// the next attempt starts clean.
pub(super) fn create_segment(
    dir: &Path,
    id: u64,
    first_seq: u64,
    fsync: FsyncPolicy,
) -> io::Result<File> {
    let path = dir.join(segment_name(id));
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)?;
    let written = file.write_all(&segment_header(first_seq)).and_then(|()| {
        if fsync.syncs() {
            file.sync_all()?;
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    });
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    // Appends go to the end of the file.
    drop(file);
    OpenOptions::new().append(true).open(&path)
}

struct Scan {
    file_len: u64,
    valid_len: u64,
    problem: Option<String>,
    /// Everything from `valid_len` to the end is zero bytes.
    zero_tail: bool,
}

/// Reads every record of a segment in order, calling `each` on the intact ones, and reports
/// where the intact part ends and why. `next_seq` follows the event numbering: the segment's
/// first sequence number, then past each record.
fn scan_segment(
    path: &Path,
    next_seq: &mut u64,
    mut each: impl FnMut(&Record),
) -> io::Result<Scan> {
    let file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    if file_len < SEGMENT_HEADER_LEN || file.read_exact_at(&mut header, 0).is_err() {
        return Ok(Scan {
            file_len,
            valid_len: 0,
            problem: Some("segment header missing".into()),
            zero_tail: zeros_from(&file, 0, file_len)?,
        });
    }
    if header.iter().all(|&b| b == 0) {
        // Created, then a power loss before its header reached the disk.
        return Ok(Scan {
            file_len,
            valid_len: 0,
            problem: Some("segment header is zero-filled".into()),
            zero_tail: zeros_from(&file, 0, file_len)?,
        });
    }
    if &header[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not a wasmgate spool segment (bad magic)",
        ));
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&header[SEGMENT_MAGIC.len()..]);
    let first = u64::from_le_bytes(first);
    if first > record::MAX_EVENT_SEQ {
        return Ok(Scan {
            file_len,
            valid_len: 0,
            problem: Some(format!("segment header numbers its first event {first}")),
            zero_tail: false,
        });
    }
    *next_seq = (*next_seq).max(first);
    let mut at = SEGMENT_HEADER_LEN;
    loop {
        if at == file_len {
            return Ok(Scan {
                file_len,
                valid_len: at,
                problem: None,
                zero_tail: false,
            });
        }
        // Only on the way out: reading the rest of the file is for a problem found.
        let problem = |why: String| -> io::Result<Scan> {
            Ok(Scan {
                file_len,
                valid_len: at,
                problem: Some(why),
                zero_tail: zeros_from(&file, at, file_len)?,
            })
        };
        let mut header = [0u8; RECORD_HEADER_LEN];
        if file_len - at < RECORD_HEADER_LEN as u64 {
            return problem("record header cut short".into());
        }
        file.read_exact_at(&mut header, at)?;
        let header = match record::parse_header(&header) {
            Ok(h) if h.payload_len <= MAX_RECORD_PAYLOAD => h,
            Ok(h) => return problem(format!("record length {} over the limit", h.payload_len)),
            Err(e) => return problem(e.to_string()),
        };
        let payload_at = at + RECORD_HEADER_LEN as u64;
        if file_len - payload_at < u64::from(header.payload_len) {
            return problem("record cut short".into());
        }
        let mut payload = vec![0u8; header.payload_len as usize];
        file.read_exact_at(&mut payload, payload_at)?;
        match Record::decode(header, payload) {
            Ok(record) => {
                *next_seq = record.first_seq + record.len() as u64;
                each(&record);
            }
            Err(e) => return problem(e.to_string()),
        }
        at = payload_at + u64::from(header.payload_len);
    }
}

/// Whether bytes `from..len` of `file` are all zero (read in blocks).
fn zeros_from(file: &File, from: u64, len: u64) -> io::Result<bool> {
    let mut buf = vec![0u8; 64 << 10];
    let mut at = from;
    while at < len {
        let n = ((len - at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], at)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// Cuts a segment back to its intact part (rewriting the header, starting at `next_seq`, if even
/// that was torn).
fn repair_tail(path: &Path, valid_len: u64, next_seq: u64) -> io::Result<()> {
    let file = OpenOptions::new().write(true).open(path)?;
    if valid_len < SEGMENT_HEADER_LEN {
        file.set_len(0)?;
        file.write_all_at(&segment_header(next_seq), 0)?;
    } else {
        file.set_len(valid_len)?;
    }
    file.sync_all()
}

#[cfg(test)]
mod tests;
