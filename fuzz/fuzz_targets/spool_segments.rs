//! The audit spool opened on corrupted segment files: the recovery scan (torn tails cut off,
//! corrupt records skipped), then a sink's reader walking every segment, then an append.
//!
//! The input's first byte says how to lay it out: bits 0-1 the number of segments less one (the
//! rest of the input is cut into that many equal parts); bit 2 writes each part raw instead of
//! after a valid segment header (the magic and a first sequence number taken from the part's
//! first 8 bytes); bit 3 fixes up the CRC of every record found in a part, so that the
//! fuzzer reaches the item table behind the checksum.
//!
//! What must hold: opening either fails with an error or succeeds; a reader from the first
//! segment's start to the committed end always moves forward and stops; a record it returns
//! has its items inside its payload; after recovery an append is refused with an error or is
//! the next thing read at the old end, and a second open keeps it.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wasmgate::audit::spool::record::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN, SEGMENT_MAGIC};
use wasmgate::audit::spool::{Position, Read, SpoolItem, key_of, segment_name};
use wasmgate::audit::{FsyncPolicy, Spool, SpoolConfig, default_dead_letter_max_bytes};

/// The record magic ("WGR1"), little-endian, as the spool writes it.
const RECORD_MAGIC: [u8; 4] = *b"WGR1";

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = ["/dev/shm", "/tmp"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        base.join(format!("wasmgate-fuzz-spool-{}", std::process::id()))
    })
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("tokio")
    })
}

/// Rewrites the CRC of every record header found walking `body` from its start.
fn fix_crcs(body: &mut [u8]) {
    let mut at = 0;
    while at + RECORD_HEADER_LEN <= body.len() && body[at..at + 4] == RECORD_MAGIC {
        let len = u32::from_le_bytes(body[at + 4..at + 8].try_into().unwrap()) as usize;
        let payload = at + RECORD_HEADER_LEN;
        let Some(end) = payload.checked_add(len).filter(|&end| end <= body.len()) else {
            return;
        };
        let crc = crc32fast::hash(&body[payload..end]);
        body[at + 8..at + 12].copy_from_slice(&crc.to_le_bytes());
        at = end;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&layout, rest)) = data.split_first() else {
        return;
    };
    let segments = usize::from(layout & 3) + 1;
    let raw = layout & 4 != 0;
    let fix = layout & 8 != 0;
    let dir = dir();
    let _ = std::fs::remove_dir_all(dir);
    let segments_dir = dir.join("segments");
    std::fs::create_dir_all(&segments_dir).expect("spool dir");
    let part_len = rest.len().div_ceil(segments).max(1);
    for (i, part) in rest
        .chunks(part_len)
        .chain(std::iter::repeat(&[][..]))
        .take(segments)
        .enumerate()
    {
        let mut file = Vec::with_capacity(part.len() + SEGMENT_HEADER_LEN as usize);
        let mut body = part.to_vec();
        if fix {
            // Records start after the segment header: written by the fuzzer when raw.
            let header = if raw { SEGMENT_HEADER_LEN as usize } else { 8 };
            let skip = header.min(body.len());
            fix_crcs(&mut body[skip..]);
        }
        if raw {
            file.extend_from_slice(&body);
        } else {
            let (seq, records) = body.split_at(8.min(body.len()));
            let mut first = [0u8; 8];
            first[..seq.len()].copy_from_slice(seq);
            file.extend_from_slice(SEGMENT_MAGIC);
            file.extend_from_slice(&first);
            file.extend_from_slice(records);
        }
        let id = i as u64 + 1;
        std::fs::write(segments_dir.join(segment_name(id)), file).expect("segment");
    }

    let config = SpoolConfig {
        dir: dir.clone(),
        max_bytes: 1 << 30,
        fsync: FsyncPolicy::Never,
        dead_letter_max_bytes: default_dead_letter_max_bytes(1 << 30),
    };
    let Ok((spool, _recovery)) = Spool::open(&config) else {
        return;
    };
    let end = *spool.committed().borrow();
    let mut reader = spool.reader();
    let mut at = Position {
        segment: 1,
        offset: SEGMENT_HEADER_LEN,
        event_seq: 0,
    };
    loop {
        let read = match reader.read(at, end) {
            Ok(Some(read)) => read,
            Ok(None) => break,
            Err(_) => break,
        };
        let next = match read {
            Read::Record { record, next, .. } => {
                for i in 0..record.len() {
                    let _ = (record.key(i), record.json(i));
                }
                next
            }
            Read::Corrupt { resume, .. } => resume,
        };
        assert!(
            (next.segment, next.offset) > (at.segment, at.offset),
            "the reader went from {at:?} back or nowhere to {next:?}"
        );
        at = next;
    }

    let event = Bytes::from_static(br#"{"auditID":"fuzz","stage":"ResponseComplete"}"#);
    let item = || SpoolItem {
        key: key_of(&event) ^ u128::from(end.event_seq),
        json: event.clone(),
    };
    let appended = match runtime().block_on(spool.append(vec![item()])) {
        Ok(appended) => appended,
        // Refused (a spool whose numbering is exhausted): nothing may have been written.
        Err(_) => {
            assert_eq!(
                *spool.committed().borrow(),
                end,
                "a refused append moved the end"
            );
            return;
        }
    };
    assert_eq!(appended.events, 1);
    let after = *spool.committed().borrow();
    let read_back = |spool: &Spool, from: Position| match spool.reader().read(from, after) {
        Ok(Some(Read::Record { record, .. })) => {
            assert_eq!(record.len(), 1);
            assert_eq!(record.json(0), &event[..]);
        }
        other => panic!("the append after recovery is not read back at {from:?}: {other:?}"),
    };
    read_back(&spool, end);
    drop(spool);
    let (spool, recovery) = Spool::open(&config).expect("a second open");
    assert_eq!(
        recovery.truncated_bytes, 0,
        "the append was cut off: {recovery:?}"
    );
    read_back(&spool, end);
});
