//! The on-disk framing of the spool. A segment file is [`SEGMENT_MAGIC`] and the sequence number
//! of its first event (so that numbering survives a restart with every record reclaimed),
//! followed by records;
//! a record is a 12-byte header (magic, payload length, CRC-32 of the payload) and its payload:
//! the sequence number of its first event, when it was accepted, and its items (dedup key,
//! length, the event's JSON exactly as received). Little-endian throughout.

use std::ops::Range;

/// The first bytes of every segment file (format version 1).
pub const SEGMENT_MAGIC: &[u8; 8] = b"WGSPOOL1";
/// Where the first record of a segment starts: after the magic and the first sequence number.
pub const SEGMENT_HEADER_LEN: u64 = SEGMENT_MAGIC.len() as u64 + 8;

/// A segment's header.
pub fn segment_header(first_seq: u64) -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut header = [0u8; SEGMENT_HEADER_LEN as usize];
    header[..8].copy_from_slice(SEGMENT_MAGIC);
    header[8..].copy_from_slice(&first_seq.to_le_bytes());
    header
}
/// The highest event sequence number the spool uses (2^62: 146,000 years at a million events a
/// second). A record or segment header numbering past it is corrupt, and the writer refuses an
/// append that would pass it; the bound keeps every sum of sequence numbers and counts from
/// overflowing.
pub const MAX_EVENT_SEQ: u64 = 1 << 62;
/// The first bytes of every record ("WGR1"): lets a reader tell a record from garbage.
pub const RECORD_MAGIC: u32 = 0x3152_4757;
/// Magic, payload length, CRC-32.
pub const RECORD_HEADER_LEN: usize = 12;
/// First event sequence number, acceptance time (Unix ms), item count.
const PAYLOAD_FIXED_LEN: usize = 8 + 8 + 4;
/// Dedup key and length, per item.
const ITEM_FIXED_LEN: usize = 16 + 4;

/// A record that cannot be trusted: a torn write at the tail, or corruption.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("corrupt spool record: {0}")]
pub struct Corrupt(pub String);

/// A record's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes of payload that follow the header.
    pub payload_len: u32,
    /// CRC-32 (IEEE) of the payload.
    pub crc: u32,
}

/// The bytes a record with these item lengths takes, header included.
pub fn encoded_len(item_lens: impl Iterator<Item = usize>) -> u64 {
    let items: usize = item_lens.map(|len| ITEM_FIXED_LEN + len).sum();
    (RECORD_HEADER_LEN + PAYLOAD_FIXED_LEN + items) as u64
}

/// Appends one record to `out`. The caller checks the size against its bounds first (a payload
/// must fit in a `u32`; the spool's record limit is far below).
pub fn encode<'a>(
    out: &mut Vec<u8>,
    first_seq: u64,
    accepted_ms: u64,
    items: impl ExactSizeIterator<Item = (u128, &'a [u8])> + Clone,
) {
    let start = out.len();
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(&[0; 8]); // length and CRC, filled in below
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(&accepted_ms.to_le_bytes());
    out.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for (key, json) in items {
        out.extend_from_slice(&key.to_le_bytes());
        out.extend_from_slice(&(json.len() as u32).to_le_bytes());
        out.extend_from_slice(json);
    }
    let payload = start + RECORD_HEADER_LEN;
    let len = (out.len() - payload) as u32;
    let crc = crc32fast::hash(&out[payload..]);
    out[start + 4..start + 8].copy_from_slice(&len.to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
}

/// Reads a record header.
pub fn parse_header(bytes: &[u8; RECORD_HEADER_LEN]) -> Result<Header, Corrupt> {
    let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    if word(0) != RECORD_MAGIC {
        return Err(Corrupt(format!("bad record magic {:#010x}", word(0))));
    }
    Ok(Header {
        payload_len: word(4),
        crc: word(8),
    })
}

/// A decoded record.
#[derive(Debug, Clone)]
pub struct Record {
    /// The sequence number of its first event; the others follow without gaps.
    pub first_seq: u64,
    /// When it was accepted, Unix milliseconds.
    pub accepted_ms: u64,
    payload: Vec<u8>,
    items: Vec<(u128, Range<usize>)>,
}

impl Record {
    /// Checks the CRC and splits the payload into items.
    pub fn decode(header: Header, payload: Vec<u8>) -> Result<Record, Corrupt> {
        if payload.len() != header.payload_len as usize {
            return Err(Corrupt("truncated payload".into()));
        }
        let crc = crc32fast::hash(&payload);
        if crc != header.crc {
            return Err(Corrupt(format!(
                "CRC mismatch (stored {:#010x}, computed {crc:#010x})",
                header.crc
            )));
        }
        let short = || Corrupt("payload shorter than its item table".into());
        let take = |at: &mut usize, n: usize| -> Result<Range<usize>, Corrupt> {
            let range = *at..at.checked_add(n).ok_or_else(short)?;
            if range.end > payload.len() {
                return Err(short());
            }
            *at = range.end;
            Ok(range)
        };
        let mut at = 0;
        let u64_at = |r: Range<usize>| u64::from_le_bytes(payload[r].try_into().unwrap_or([0; 8]));
        let first_seq = u64_at(take(&mut at, 8)?);
        let accepted_ms = u64_at(take(&mut at, 8)?);
        let count_range = take(&mut at, 4)?;
        let count = u32::from_le_bytes(payload[count_range].try_into().unwrap_or([0; 4]));
        if first_seq > MAX_EVENT_SEQ - u64::from(count) {
            return Err(Corrupt(format!(
                "event sequence numbers {first_seq} + {count} past {MAX_EVENT_SEQ}"
            )));
        }
        let mut items = Vec::with_capacity((count as usize).min(payload.len() / ITEM_FIXED_LEN));
        for _ in 0..count {
            let key_range = take(&mut at, 16)?;
            let key = u128::from_le_bytes(payload[key_range].try_into().unwrap_or([0; 16]));
            let len_range = take(&mut at, 4)?;
            let len = u32::from_le_bytes(payload[len_range].try_into().unwrap_or([0; 4]));
            items.push((key, take(&mut at, len as usize)?));
        }
        if at != payload.len() {
            return Err(Corrupt("trailing bytes after the last item".into()));
        }
        Ok(Record {
            first_seq,
            accepted_ms,
            payload,
            items,
        })
    }

    /// How many events it holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether it holds none (never written so, but a reader should not assume).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The dedup key of item `i`.
    pub fn key(&self, i: usize) -> u128 {
        self.items[i].0
    }

    /// The JSON of item `i`.
    pub fn json(&self, i: usize) -> &[u8] {
        &self.payload[self.items[i].1.clone()]
    }

    /// Every item's dedup key.
    pub fn keys(&self) -> impl Iterator<Item = u128> + '_ {
        self.items.iter().map(|(key, _)| *key)
    }
}
