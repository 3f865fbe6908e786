//! Reading records back, for one sink. Blocking file I/O: call it off the async workers. A reader
//! never reads past the committed end it is given, so it never sees a record being written.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use super::Position;
use super::record::{self, Corrupt, RECORD_HEADER_LEN, Record, SEGMENT_HEADER_LEN};

/// The largest record payload a reader accepts: the spool never writes one larger than the
/// largest audit body plus its item table, so anything above is a corrupt length field.
pub const MAX_RECORD_PAYLOAD: u32 = 1 << 30;

/// What the next read found.
#[derive(Debug)]
pub enum Read {
    /// A record at `at`; the next one starts at `next`.
    Record {
        /// Where it starts (its segment may be later than the position asked for).
        at: Position,
        /// The record.
        record: Record,
        /// Where the next record starts.
        next: Position,
    },
    /// The record at `at` is corrupt: nothing after it in its segment can be found, so reading
    /// resumes at `resume`.
    Corrupt {
        /// Where the corrupt record starts.
        at: Position,
        /// Why it is unusable.
        error: Corrupt,
        /// Where reading continues.
        resume: Position,
    },
}

/// Reads one sink's way through the segments.
pub struct SpoolReader {
    segments: PathBuf,
    open: Option<(u64, File)>,
}

impl SpoolReader {
    pub(super) fn new(segments: PathBuf) -> Self {
        SpoolReader {
            segments,
            open: None,
        }
    }

    fn file(&mut self, segment: u64) -> io::Result<&File> {
        if self.open.as_ref().is_none_or(|(id, _)| *id != segment) {
            let file = File::open(self.segments.join(super::segment_name(segment)))?;
            self.open = Some((segment, file));
        }
        match &self.open {
            Some((_, file)) => Ok(file),
            None => Err(io::Error::other("segment not open")),
        }
    }

    /// The record at `at`, or the first one after it, as long as it lies before `end` (the
    /// committed end). `None` when there is none yet.
    pub fn read(&mut self, at: Position, end: Position) -> io::Result<Option<Read>> {
        let mut at = at;
        loop {
            if (at.segment, at.offset) >= (end.segment, end.offset) {
                return Ok(None);
            }
            let next_segment = Position {
                segment: at.segment + 1,
                offset: SEGMENT_HEADER_LEN,
                event_seq: at.event_seq,
            };
            let file = match self.file(at.segment) {
                Ok(file) => file,
                // A segment before the committed end that is gone was reclaimed once every
                // sink had read it to its end: go on with the next one.
                Err(e) if e.kind() == io::ErrorKind::NotFound && at.segment < end.segment => {
                    at = next_segment;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut header = [0u8; RECORD_HEADER_LEN];
            match file.read_exact_at(&mut header, at.offset) {
                Ok(()) => {}
                // The end of a finished segment: the next one holds what follows.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && at.segment < end.segment => {
                    at = next_segment;
                    continue;
                }
                Err(e) => return Err(e),
            }
            let resume = if at.segment < end.segment {
                next_segment
            } else {
                end
            };
            let corrupt = |error| Ok(Some(Read::Corrupt { at, error, resume }));
            let header = match record::parse_header(&header) {
                Ok(header) if header.payload_len <= MAX_RECORD_PAYLOAD => header,
                Ok(header) => {
                    return corrupt(Corrupt(format!(
                        "record length {} is over the limit",
                        header.payload_len
                    )));
                }
                Err(error) => return corrupt(error),
            };
            let payload_at = at.offset + RECORD_HEADER_LEN as u64;
            // The claimed length is checked against what is there before anything is
            // allocated for it: a corrupt length field must not cost a gigabyte.
            let there = if at.segment < end.segment {
                file.metadata()?.len()
            } else {
                end.offset
            };
            if there.saturating_sub(payload_at) < u64::from(header.payload_len) {
                return corrupt(Corrupt(format!(
                    "record length {} is past the end of its segment ({} bytes after it)",
                    header.payload_len,
                    there.saturating_sub(payload_at)
                )));
            }
            let mut payload = vec![0u8; header.payload_len as usize];
            if let Err(e) = file.read_exact_at(&mut payload, payload_at) {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    return corrupt(Corrupt("record cut short".into()));
                }
                return Err(e);
            }
            let record = match Record::decode(header, payload) {
                Ok(record) => record,
                Err(error) => return corrupt(error),
            };
            let at = Position {
                event_seq: record.first_seq,
                ..at
            };
            let next = Position {
                segment: at.segment,
                offset: payload_at + u64::from(header.payload_len),
                event_seq: record.first_seq + record.len() as u64,
            };
            return Ok(Some(Read::Record { at, record, next }));
        }
    }
}
