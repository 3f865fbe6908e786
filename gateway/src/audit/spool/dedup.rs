//! The set of events already spooled, for dropping the batches the API server re-sends. Bounded
//! in entries and in time; owned by the spool writer alone, so it needs no lock.
//!
//! The key is a digest of the event's JSON exactly as received, which contains its `auditID`
//! and `stage`. A re-sent batch is the same list encoded again, byte for byte, so its events
//! have the same keys. Keying on `(auditID, stage)` alone would let a client that sets the
//! `Audit-ID` header of a second request to the first one's have the second request's events
//! dropped as duplicates: an audit-evasion hole. Two different events never share a key.

use std::collections::{HashMap, VecDeque};

/// How long an event is remembered. The API server retries a batch at most 5 times, with waits
/// of about 10, 15, 22.5 and 33.75 s (plus up to 20 % jitter) and a 30 s timeout per attempt:
/// its last attempt starts at most about 220 s after the first. Five minutes covers that.
pub const DEDUP_WINDOW_MS: u64 = 5 * 60 * 1000;
/// How many events are remembered at most (about 64 bytes each, 64 MiB in all). An API server
/// sends at most 4,000 events/s with its default throttle (10 batches of 400 per second), so
/// this covers the whole window at that rate; above it, the window shrinks to what fits.
pub const DEDUP_CAPACITY: usize = 1 << 20;

/// The events seen in the last [`DEDUP_WINDOW_MS`], at most [`DEDUP_CAPACITY`] of them.
#[derive(Debug)]
pub struct Dedup {
    seen: HashMap<u128, u64>,
    order: VecDeque<(u128, u64)>,
    window_ms: u64,
    capacity: usize,
}

impl Default for Dedup {
    fn default() -> Self {
        Self::new(DEDUP_WINDOW_MS, DEDUP_CAPACITY)
    }
}

impl Dedup {
    /// An empty set with these bounds.
    pub fn new(window_ms: u64, capacity: usize) -> Self {
        Dedup {
            seen: HashMap::new(),
            order: VecDeque::new(),
            window_ms,
            capacity,
        }
    }

    /// Whether `key` was spooled within the window before `now_ms`.
    pub fn contains(&self, key: u128, now_ms: u64) -> bool {
        self.seen
            .get(&key)
            .is_some_and(|&at| now_ms.saturating_sub(at) < self.window_ms)
    }

    /// Remembers `key` as spooled at `at_ms`, forgetting what fell out of the bounds.
    pub fn insert(&mut self, key: u128, at_ms: u64) {
        self.seen.insert(key, at_ms);
        self.order.push_back((key, at_ms));
        while let Some(&(old, old_at)) = self.order.front() {
            if self.order.len() <= self.capacity && at_ms.saturating_sub(old_at) < self.window_ms {
                break;
            }
            self.order.pop_front();
            // A key seen again later has a later time in `seen`: keep that one.
            if self.seen.get(&old) == Some(&old_at) {
                self.seen.remove(&old);
            }
        }
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// The dedup key of an event's JSON text: the first 128 bits of its SHA-256.
pub fn key_of(json: &[u8]) -> u128 {
    let digest = <sha2::Sha256 as sha2::Digest>::digest(json);
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(first)
}
