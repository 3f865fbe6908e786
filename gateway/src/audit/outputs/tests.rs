use super::*;

fn file_output(path: &Path, max_size: u64, max_files: u32) -> Outputs {
    Outputs::new(
        &[OutputSpec {
            name: "f".into(),
            kind: OutputKind::File {
                path: path.to_owned(),
                max_size,
                max_files,
            },
        }],
        FsyncPolicy::Never,
    )
}

fn lines(n: usize, len: usize) -> Arc<Vec<String>> {
    Arc::new((0..n).map(|i| format!("{i:0len$}")).collect())
}

#[tokio::test]
async fn a_file_output_rotates_by_size_and_keeps_max_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/audit.jsonl");
    let mut outputs = file_output(&path, 100, 2);
    // 10-byte lines (9 digits and a newline): 10 per file.
    for _ in 0..5 {
        let mut done = 0;
        outputs.write(0, &lines(10, 9), &mut done).await.unwrap();
        assert_eq!(done, 10);
    }
    for file in [path.clone(), rotated(&path, 1), rotated(&path, 2)] {
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.lines().count(), 10, "{}", file.display());
        assert!(text.len() as u64 <= 100);
    }
    assert!(
        !rotated(&path, 3).exists(),
        "only maxFiles rotated files are kept"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test]
async fn a_line_longer_than_max_size_goes_alone_into_a_fresh_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut outputs = file_output(&path, 100, 5);
    let mut done = 0;
    outputs
        .write(
            0,
            &Arc::new(vec!["a".into(), "b".repeat(300), "c".into()]),
            &mut done,
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(rotated(&path, 2)).unwrap(), "a\n");
    assert_eq!(
        std::fs::read_to_string(rotated(&path, 1)).unwrap(),
        format!("{}\n", "b".repeat(300))
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "c\n");
}

#[tokio::test]
async fn an_unreachable_http_output_is_a_transient_failure() {
    // A port nothing listens on: bind, note it, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut outputs = Outputs::new(
        &[OutputSpec {
            name: "h".into(),
            kind: OutputKind::Http {
                url: format!("http://127.0.0.1:{port}/"),
                ca_file: None,
                bearer_token_file: None,
                batch_lines: 2,
            },
        }],
        FsyncPolicy::Never,
    );
    let mut done = 0;
    let err = outputs.write(0, &lines(3, 3), &mut done).await.unwrap_err();
    assert!(!err.permanent);
    assert!(
        err.message.contains("POST http://127.0.0.1:"),
        "{}",
        err.message
    );
    assert_eq!(done, 0);
}

#[tokio::test]
async fn a_line_cut_short_by_a_kill_is_cut_off_before_the_next_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    // What a gateway killed in the middle of a write leaves: whole lines, then part of one.
    std::fs::write(&path, "{\"a\":1}\n{\"b\":2}\n{\"c\":").unwrap();
    let mut outputs = file_output(&path, 1 << 20, 2);
    let mut done = 0;
    let again = Arc::new(vec!["{\"c\":3}".to_owned()]);
    outputs.write(0, &again, &mut done).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"a\":1}\n{\"b\":2}\n{\"c\":3}\n"
    );
    // A file of one fragment alone is emptied; one that ends a line is left as it is.
    std::fs::write(&path, "{\"c\":").unwrap();
    let mut outputs = file_output(&path, 1 << 20, 2);
    done = 0;
    outputs.write(0, &again, &mut done).await.unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"c\":3}\n");
    let mut outputs = file_output(&path, 1 << 20, 2);
    done = 0;
    outputs.write(0, &again, &mut done).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "{\"c\":3}\n{\"c\":3}\n"
    );
}
