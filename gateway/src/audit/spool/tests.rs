use std::io::Write as _;

use super::*;

fn config(dir: &Path, max_bytes: u64) -> SpoolConfig {
    SpoolConfig {
        dir: dir.to_owned(),
        max_bytes,
        fsync: FsyncPolicy::Batch,
        dead_letter_max_bytes: default_dead_letter_max_bytes(max_bytes),
    }
}

fn items(texts: &[&str]) -> Vec<SpoolItem> {
    texts
        .iter()
        .map(|t| SpoolItem {
            key: key_of(t.as_bytes()),
            json: Bytes::copy_from_slice(t.as_bytes()),
        })
        .collect()
}

fn event(id: usize) -> String {
    format!(
        r#"{{"level":"Metadata","auditID":"{id}","stage":"ResponseComplete","pad":"{}"}}"#,
        "x".repeat(200)
    )
}

/// Every event from `from` to the committed end, as text.
fn read_all(spool: &Spool, from: Position) -> Vec<String> {
    let end = *spool.committed().borrow();
    let mut reader = spool.reader();
    let mut at = from;
    let mut out = Vec::new();
    while let Some(read) = reader.read(at, end).unwrap() {
        match read {
            Read::Record { record, next, .. } => {
                for i in 0..record.len() {
                    out.push(String::from_utf8(record.json(i).to_vec()).unwrap());
                }
                at = next;
            }
            Read::Corrupt { resume, error, .. } => {
                out.push(format!("CORRUPT {error}"));
                at = resume;
            }
        }
    }
    out
}

fn start() -> Position {
    Position {
        segment: 1,
        offset: SEGMENT_HEADER_LEN,
        event_seq: 0,
    }
}

#[tokio::test]
async fn appended_batches_read_back_byte_for_byte_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, recovery) = Spool::open(&config(dir.path(), 1 << 30)).unwrap();
    assert_eq!(recovery.records, 0);
    let a = spool
        .append(items(&["{\"a\" : 1}", "{\"b\":2}"]))
        .await
        .unwrap();
    assert_eq!(a.events, 2);
    spool.append(items(&["{\"c\":3}"])).await.unwrap();
    assert_eq!(
        read_all(&spool, start()),
        vec!["{\"a\" : 1}", "{\"b\":2}", "{\"c\":3}"]
    );
    let end = *spool.committed().borrow();
    assert_eq!(end.event_seq, 3);
}

#[tokio::test]
async fn a_resent_batch_is_dropped_and_the_set_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let batch = ["{\"id\":1}", "{\"id\":2}"];
    {
        let (spool, _) = Spool::open(&config(dir.path(), 1 << 30)).unwrap();
        spool.append(items(&batch)).await.unwrap();
        let again = spool.append(items(&batch)).await.unwrap();
        assert_eq!((again.events, again.duplicates), (0, 2));
        let within = spool
            .append(items(&["{\"id\":3}", "{\"id\":3}"]))
            .await
            .unwrap();
        assert_eq!((within.events, within.duplicates), (1, 1));
    }
    let (spool, recovery) = Spool::open(&config(dir.path(), 1 << 30)).unwrap();
    assert_eq!(
        (recovery.records, recovery.events, recovery.dedup_keys),
        (2, 3, 3)
    );
    let after = spool
        .append(items(&["{\"id\":2}", "{\"id\":4}"]))
        .await
        .unwrap();
    assert_eq!((after.events, after.duplicates), (1, 1));
    assert_eq!(
        spool.committed().borrow().event_seq,
        4,
        "numbering continues"
    );
}

#[tokio::test]
async fn concurrent_appends_share_a_group_and_each_is_answered() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(&config(dir.path(), 1 << 30)).unwrap();
    let spool = Arc::new(spool);
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let spool = spool.clone();
            tokio::spawn(async move { spool.append(items(&[&event(i)])).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().events, 1);
    }
    let all = read_all(&spool, start());
    assert_eq!(all.len(), 20);
}

#[tokio::test]
async fn a_torn_record_at_the_end_is_cut_off_on_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (spool, _) = Spool::open(&config(dir.path(), 1 << 30)).unwrap();
        spool.append(items(&["{\"ok\":1}"])).await.unwrap();
    }
    let segment = dir.path().join("segments").join(segment_name(1));
    let good_len = std::fs::metadata(&segment).unwrap().len();
    let mut torn = Vec::new();
    record::encode(
        &mut torn,
        1,
        now_ms(),
        [(7u128, &b"{\"torn\":1}"[..])].into_iter(),
    );
    OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap()
        .write_all(&torn[..torn.len() - 3])
        .unwrap();

    let (spool, recovery) = Spool::open(&config(dir.path(), 1 << 30)).unwrap();
    assert_eq!(recovery.truncated_bytes, torn.len() as u64 - 3);
    assert_eq!(std::fs::metadata(&segment).unwrap().len(), good_len);
    spool.append(items(&["{\"next\":2}"])).await.unwrap();
    assert_eq!(
        read_all(&spool, start()),
        vec!["{\"ok\":1}", "{\"next\":2}"]
    );
}

/// Found writing the `spool_segments` fuzz target (its CRC fix-up mode reaches it): a record
/// with a valid CRC numbering its events past u64::MAX overflowed the recovery scan (a panic
/// with overflow checks, wrapped numbering without); so did a segment header's first sequence
/// number, on the next append.
#[tokio::test]
async fn sequence_numbers_past_the_bound_are_corrupt_not_an_overflow() {
    let mut payload = Vec::new();
    record::encode(
        &mut payload,
        u64::MAX,
        now_ms(),
        [(7u128, &b"{}"[..])].into_iter(),
    );
    let header = record::parse_header(payload[..RECORD_HEADER_LEN].try_into().unwrap()).unwrap();
    let error = Record::decode(header, payload[RECORD_HEADER_LEN..].to_vec()).unwrap_err();
    assert!(error.0.contains("past"), "{error}");

    let dir = tempfile::tempdir().unwrap();
    let segments = dir.path().join("segments");
    std::fs::create_dir_all(&segments).unwrap();
    let mut bytes = segment_header(0).to_vec();
    bytes.extend_from_slice(&payload);
    std::fs::write(segments.join(segment_name(1)), &bytes).unwrap();
    let (spool, recovery) = Spool::open(&config(dir.path(), 1 << 30)).unwrap();
    assert_eq!(recovery.truncated_bytes, payload.len() as u64);
    assert_eq!(spool.committed().borrow().event_seq, 0);
    drop(spool);

    let dir = tempfile::tempdir().unwrap();
    let segments = dir.path().join("segments");
    std::fs::create_dir_all(&segments).unwrap();
    std::fs::write(segments.join(segment_name(1)), segment_header(u64::MAX)).unwrap();
    let (spool, _) = Spool::open(&config(dir.path(), 1 << 30)).unwrap();
    assert_eq!(spool.committed().borrow().event_seq, 0);
    spool.append(items(&["{\"next\":1}"])).await.unwrap();
    assert_eq!(spool.committed().borrow().event_seq, 1);
    assert_eq!(read_all(&spool, start()), vec!["{\"next\":1}"]);
    drop(spool);

    // At the bound itself an append is refused, not written where readers would refuse it, and
    // what is there survives a restart (the fuzz target's catch: an append after a header at
    // the bound was acknowledged, then unreadable).
    let dir = tempfile::tempdir().unwrap();
    let segments = dir.path().join("segments");
    std::fs::create_dir_all(&segments).unwrap();
    let at = record::MAX_EVENT_SEQ - 1;
    std::fs::write(segments.join(segment_name(1)), segment_header(at)).unwrap();
    let (spool, _) = Spool::open(&config(dir.path(), 1 << 30)).unwrap();
    spool.append(items(&["{\"a\":1}"])).await.unwrap();
    let refused = spool.append(items(&["{\"b\":2}"])).await.unwrap_err();
    assert!(matches!(refused, AppendError::Io(_)), "{refused:?}");
    assert_eq!(read_all(&spool, start()), vec!["{\"a\":1}"]);
    drop(spool);
    let (spool, recovery) = Spool::open(&config(dir.path(), 1 << 30)).unwrap();
    assert_eq!(recovery.truncated_bytes, 0);
    assert_eq!(read_all(&spool, start()), vec!["{\"a\":1}"]);
}

#[tokio::test]
async fn a_corrupt_record_skips_the_rest_of_its_segment_only() {
    let dir = tempfile::tempdir().unwrap();
    // A small spool, so that segments are small (an eighth of it, at least 4 KiB).
    let (spool, _) = Spool::open(&config(dir.path(), 64 << 10)).unwrap();
    for i in 0..40 {
        spool.append(items(&[&event(i)])).await.unwrap();
    }
    drop(spool);
    let segments = dir.path().join("segments");
    let first = segments.join(segment_name(1));
    assert!(segments.join(segment_name(2)).exists(), "several segments");
    // Flip a byte inside the first record's payload.
    let mut bytes = std::fs::read(&first).unwrap();
    let at = SEGMENT_HEADER_LEN as usize + RECORD_HEADER_LEN + 40;
    bytes[at] ^= 0xff;
    std::fs::write(&first, &bytes).unwrap();

    let (spool, recovery) = Spool::open(&config(dir.path(), 64 << 10)).unwrap();
    assert_eq!(recovery.corrupt, 1);
    let all = read_all(&spool, start());
    assert!(
        all[0].starts_with("CORRUPT corrupt spool record: CRC mismatch"),
        "{}",
        all[0]
    );
    assert!(
        all.len() > 10 && all.len() < 40,
        "only the first segment is lost: {}",
        all.len()
    );
    assert_eq!(all.last().unwrap(), &event(39));
}

/// A length field corrupted after recovery (a bit flip on disk, a tampered file) claiming the
/// largest payload a record may have: the reader refuses it against the bytes actually there,
/// before allocating anything for it, in a finished segment and in the one being written.
#[tokio::test]
async fn a_corrupt_record_length_is_checked_against_the_segment_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(&config(dir.path(), 64 << 10)).unwrap();
    for i in 0..90 {
        spool.append(items(&[&event(i)])).await.unwrap();
    }
    let end = *spool.committed().borrow();
    assert!(end.segment >= 3, "several segments: {end:?}");
    let lie = MAX_RECORD_PAYLOAD.to_le_bytes();
    let segments = dir.path().join("segments");
    for segment in [1, end.segment] {
        let path = segments.join(segment_name(segment));
        let mut bytes = std::fs::read(&path).unwrap();
        let at = SEGMENT_HEADER_LEN as usize + 4;
        bytes[at..at + 4].copy_from_slice(&lie);
        std::fs::write(&path, &bytes).unwrap();
    }
    let all = read_all(&spool, start());
    let corrupt: Vec<_> = all.iter().filter(|l| l.starts_with("CORRUPT")).collect();
    assert_eq!(corrupt.len(), 2, "{corrupt:?}");
    for c in corrupt {
        assert!(
            c.contains(&format!(
                "record length {MAX_RECORD_PAYLOAD} is past the end of its segment"
            )),
            "{c}"
        );
    }
    // Only the two damaged segments' records are lost; the ones between are read.
    assert!(all.len() > 10 && all.len() < 90, "{}", all.len());
}

#[tokio::test]
async fn a_full_spool_refuses_until_every_sink_has_passed_its_segments() {
    let dir = tempfile::tempdir().unwrap();
    let max = 64 << 10;
    let (spool, _) = Spool::open(&config(dir.path(), max)).unwrap();
    spool.set_sinks(vec![("slow".into(), start()), ("fast".into(), start())]);
    let mut accepted = 0;
    let full = loop {
        match spool.append(items(&[&event(accepted)])).await {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 1000, "never full");
    };
    assert_eq!(full, AppendError::Full { max_bytes: max });
    assert!(spool.stats().bytes.load(Ordering::Relaxed) <= max);
    let end = *spool.committed().borrow();
    // One sink catching up is not enough.
    spool.progress("fast", end);
    assert!(spool.append(items(&[&event(5000)])).await.is_err());
    // Both: everything is reclaimed (the active segment is rolled), and appends work again.
    spool.progress("slow", end);
    spool.append(items(&[&event(5001)])).await.unwrap();
    assert!(spool.stats().bytes.load(Ordering::Relaxed) < max / 4);
    let names: Vec<_> = std::fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .collect();
    assert!(names.len() <= 2, "{names:?}");
    // A reader that was at the old end goes on into the new segment.
    assert_eq!(read_all(&spool, end), vec![event(5001)]);
}

#[tokio::test]
async fn a_batch_larger_than_the_spool_is_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(&config(dir.path(), 64 << 10)).unwrap();
    let big = "x".repeat(70 << 10);
    assert!(matches!(
        spool.append(items(&[&big])).await,
        Err(AppendError::TooLarge { .. })
    ));
}

#[tokio::test]
async fn cursors_start_at_the_end_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(&config(dir.path(), 1 << 30)).unwrap();
    spool.append(items(&["{\"x\":1}"])).await.unwrap();
    let end = *spool.committed().borrow();
    let fresh = spool.load_cursor("new").unwrap();
    assert_eq!(fresh, Cursor { at: end, item: 0 });
    let cursor = Cursor {
        at: start(),
        item: 3,
    };
    spool.save_cursor("new", &cursor).unwrap();
    assert_eq!(spool.load_cursor("new").unwrap(), cursor);
    let text = std::fs::read_to_string(dir.path().join("cursors/new.json")).unwrap();
    assert!(
        text.contains("\"eventSeq\":0") && text.contains("\"item\":3"),
        "{text}"
    );
}

#[tokio::test]
async fn a_directory_is_used_by_one_gateway_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let (_spool, _) = Spool::open(&config(dir.path(), 1 << 30)).unwrap();
    let err = Spool::open(&config(dir.path(), 1 << 30)).err().unwrap();
    assert!(
        err.to_string()
            .ends_with("in use by another wasmgate process"),
        "{err}"
    );
}

#[test]
fn dedup_forgets_by_age_and_by_count() {
    let mut dedup = Dedup::new(1000, 3);
    dedup.insert(1, 0);
    dedup.insert(2, 10);
    assert!(dedup.contains(1, 999));
    assert!(!dedup.contains(1, 1000), "too old");
    dedup.insert(3, 20);
    dedup.insert(4, 30);
    assert!(!dedup.contains(1, 30), "over capacity");
    assert!(dedup.contains(2, 30));
    dedup.insert(5, 2000);
    assert_eq!(dedup.len(), 1, "the others expired");
}

/// A tmpfs of `bytes` mounted on a fresh directory, unmounted when dropped. Needs root (tests
/// run as root here and in CI).
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn mount(bytes: u64) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount -t tmpfs (needs root)");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.0.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_refuses_appends_and_the_spool_recovers_when_space_returns() {
    let fs = Tmpfs::mount(256 << 10);
    // The spool may hold more than the disk: the disk fills first.
    let (spool, _) = Spool::open(&config(fs.0.path(), 64 << 20)).unwrap();
    spool.set_sinks(vec![("sink".into(), start())]);
    let mut acknowledged = Vec::new();
    let mut refused = 0;
    for i in 0..2000 {
        match spool.append(items(&[&event(i), &event(i + 100_000)])).await {
            Ok(_) => acknowledged.extend([event(i), event(i + 100_000)]),
            Err(AppendError::Io(message)) => {
                assert!(message.contains("No space left on device"), "{message}");
                refused += 1;
                if refused == 5 {
                    break;
                }
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(refused, 5, "the disk never filled");
    assert!(acknowledged.len() > 100);
    // Everything acknowledged reads back, nothing refused does, and nothing is misread.
    assert_eq!(read_all(&spool, start()), acknowledged);
    // The sink reads everything: the writer rolls, deletes the read segment and takes appends
    // again, without anyone freeing space by hand.
    let end = *spool.committed().borrow();
    spool.progress("sink", end);
    let mut after = Vec::new();
    for i in 0..20 {
        spool
            .append(items(&[&event(200_000 + i)]))
            .await
            .unwrap_or_else(|e| panic!("append {i} after recovery: {e}"));
        after.push(event(200_000 + i));
    }
    assert_eq!(read_all(&spool, end), after);
    drop(spool);
    // And a restart reads the same.
    let (spool, recovery) = Spool::open(&config(fs.0.path(), 64 << 20)).unwrap();
    assert_eq!((recovery.corrupt, recovery.truncated_bytes), (0, 0));
    assert_eq!(read_all(&spool, end), after);
}

#[tokio::test]
async fn a_zero_filled_tail_is_cut_off_like_a_torn_one() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(&config(dir.path(), 64 << 10)).unwrap();
    for i in 0..40 {
        spool.append(items(&[&event(i)])).await.unwrap();
    }
    drop(spool);
    let segments = dir.path().join("segments");
    let mut ids: Vec<u64> = std::fs::read_dir(&segments)
        .unwrap()
        .map(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .trim_end_matches(".seg")
                .parse()
                .unwrap()
        })
        .collect();
    ids.sort();
    assert!(ids.len() >= 2);
    // A power loss under `--fsync never`: the last records of a finished segment and of the
    // active one are zeros, and a segment created last has a zero-filled header.
    let zeros = |id: u64, n: usize| {
        let path = segments.join(segment_name(id));
        let mut file = OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(&vec![0u8; n]).unwrap();
    };
    zeros(ids[0], 3000);
    zeros(*ids.last().unwrap(), 5000);
    let next = ids.last().unwrap() + 1;
    std::fs::write(
        segments.join(segment_name(next)),
        [0u8; SEGMENT_HEADER_LEN as usize],
    )
    .unwrap();

    let (spool, recovery) = Spool::open(&config(dir.path(), 64 << 10)).unwrap();
    assert_eq!(recovery.corrupt, 0);
    assert_eq!(
        recovery.truncated_bytes,
        3000 + 5000 + SEGMENT_HEADER_LEN,
        "{recovery:?}"
    );
    assert_eq!(recovery.events, 40);
    spool.append(items(&[&event(40)])).await.unwrap();
    let all = read_all(&spool, start());
    assert_eq!(all, (0..=40).map(event).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_unreadable_cursor_sends_its_sink_back_to_the_oldest_record() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, _) = Spool::open(&config(dir.path(), 1 << 30)).unwrap();
    spool
        .append(items(&["{\"a\":1}", "{\"b\":2}"]))
        .await
        .unwrap();
    let end = *spool.committed().borrow();
    spool
        .save_cursor("s", &Cursor { at: end, item: 0 })
        .unwrap();
    assert!(
        !dir.path().join("cursors/s.json.tmp").exists(),
        "written aside, then renamed"
    );
    // A power loss left zeros where the cursor was.
    std::fs::write(dir.path().join("cursors/s.json"), [0u8; 60]).unwrap();
    let error = spool.load_cursor("s").unwrap_err();
    assert!(
        error.message.contains("cursors/s.json: not a cursor"),
        "{error}"
    );
    assert_eq!(
        error.fallback,
        Cursor {
            at: start(),
            item: 0
        }
    );
    assert_eq!(
        read_all(&spool, error.fallback.at),
        ["{\"a\":1}", "{\"b\":2}"]
    );
    // A missing one is a new sink: from the end.
    std::fs::remove_file(dir.path().join("cursors/s.json")).unwrap();
    assert_eq!(spool.load_cursor("s").unwrap(), Cursor { at: end, item: 0 });
}

#[tokio::test]
async fn dead_letters_are_bounded_and_count_against_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let max = 64 << 10;
    let config = SpoolConfig {
        dead_letter_max_bytes: 16 << 10,
        ..config(dir.path(), max)
    };
    let (spool, _) = Spool::open(&config).unwrap();
    let line = "x".repeat(1023);
    let mut written = 0;
    let full = loop {
        match spool.dead_letter("s", &line) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 100, "never full");
    };
    assert_eq!(written, 16, "16 KiB of 1 KiB lines");
    assert!(
        matches!(
            full,
            DeadLetterError::Full {
                used: 16384,
                max_bytes: 16384
            }
        ),
        "{full}"
    );
    assert_eq!(
        std::fs::metadata(spool.dead_letter_path("s"))
            .unwrap()
            .len(),
        16 << 10
    );
    // The segments get what is left: 48 KiB, not 64.
    spool.set_sinks(vec![("s".into(), start())]);
    let mut bytes = 0;
    while let Ok(appended) = spool.append(items(&[&event(bytes as usize)])).await {
        bytes += appended.bytes;
    }
    let segments = spool.stats().bytes.load(Ordering::Relaxed);
    assert!(
        segments + (16 << 10) <= max && segments > max - (16 << 10) - 1024,
        "segments {segments}"
    );
    // Moving the dead letters away frees their budget.
    std::fs::remove_file(spool.dead_letter_path("s")).unwrap();
    spool.rescan_dead_letters();
    spool.dead_letter("s", &line).unwrap();
}
