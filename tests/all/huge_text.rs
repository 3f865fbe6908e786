//! `serve --huge-text`: the gateway's machine code moved onto transparent huge pages at start,
//! as the kernel's `/proc/<pid>/smaps` shows it, and reviews answered from the moved code.

use serde_json::json;

use crate::harness::{Gateway, Options, entry, policy_file, review};

/// The anonymous executable mappings of `pid` (as the move leaves them: no file, offset 0) and
/// their `AnonHugePages` in KiB.
fn anonymous_code(pid: u32) -> Vec<(String, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mut found = Vec::new();
    let mut current: Option<String> = None;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() >= 5 && fields[0].contains('-') && fields[1].len() == 4 {
            current = (fields[1] == "r-xp" && fields[4] == "0" && fields.len() == 5)
                .then(|| fields[0].to_owned());
        } else if let (Some(range), Some(kib)) = (&current, line.strip_prefix("AnonHugePages:")) {
            let kib = kib.trim().trim_end_matches("kB").trim().parse().unwrap();
            found.push((range.clone(), kib));
        }
    }
    found
}

fn policy() -> String {
    policy_file(&entry(
        "labels",
        "validator",
        "require-labels",
        "settings: {labels: [team]}",
    ))
}

#[tokio::test]
async fn serve_moves_its_code_onto_huge_pages_and_answers_from_it() {
    let mode =
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default();
    let available = mode.contains("[always]") || mode.contains("[madvise]");

    let gw = Gateway::start(&policy());
    let pod = review("pod-create.json");
    assert_eq!(gw.answer("/validate", &pod).await["allowed"], json!(true));
    let logs = gw.logs().join("\n");
    let code = anonymous_code(gw.pid());
    if available {
        assert!(
            logs.contains("MiB of machine code moved to anonymous memory"),
            "{logs}"
        );
        // The move asks for 2 MiB pages and the kernel gives them at the first write.
        let huge: u64 = code.iter().map(|(_, kib)| kib).sum();
        assert!(huge >= 2048, "no code on huge pages: {code:?}");
    } else {
        assert!(
            logs.contains("machine code left on the file's pages: transparent huge pages are off"),
            "{logs}"
        );
    }
    // The moved code keeps serving: a second review, and a refusal's message built by it.
    let mut unlabelled = pod.clone();
    unlabelled["request"]["object"]["metadata"]["labels"] = json!({});
    let refused = gw.answer("/validate", &unlabelled).await;
    assert_eq!(refused["allowed"], json!(false), "{refused}");

    // `off` leaves the code where the loader mapped it: from the file, on 4 KiB pages.
    let off = Gateway::start_with(
        &policy(),
        Options {
            extra_args: vec!["--huge-text".into(), "off".into()],
            ..Options::default()
        },
    );
    assert_eq!(off.answer("/validate", &pod).await["allowed"], json!(true));
    let code = anonymous_code(off.pid());
    assert!(
        code.iter().all(|(_, kib)| *kib == 0),
        "code on huge pages with --huge-text off: {code:?}"
    );
    assert!(!off.logs().join("\n").contains("machine code"));
}
