//! The README agrees with the binary: every flag of the commands a user runs is documented.

use std::process::Command;

use crate::harness::repo;

/// The `--flags` that `wasmgate <command> --help` lists (not `--help` and `--version`).
fn flags(command: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_wasmgate"))
        .args([command, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let mut flags: Vec<String> = help
        .lines()
        .filter_map(|line| {
            let line = line.trim_start();
            // `-p, --policy <P>`: the long form.
            let line = match line.split_once(", --") {
                Some((short, _)) if short.len() == 2 => &line[4..],
                _ => line,
            };
            let flag = line.strip_prefix("--")?;
            let end = flag
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(flag.len());
            Some(format!("--{}", &flag[..end]))
        })
        .filter(|f| f != "--help" && f != "--version")
        .collect();
    flags.dedup();
    flags
}

/// Whether `text` has `flag` as a whole word (`--max-body-bytes` is not found in
/// `--max-body-bytes-in-flight`).
fn mentions(text: &str, flag: &str) -> bool {
    text.match_indices(flag).any(|(at, _)| {
        !text[at + flag.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-')
    })
}

#[test]
fn readme_lists_every_flag_of_serve_check_and_new() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    for command in ["serve", "check", "new"] {
        let flags = flags(command);
        assert!(flags.len() >= 2, "{command} --help: {flags:?}");
        let missing: Vec<&String> = flags
            .iter()
            .filter(|flag| !mentions(&readme, flag))
            .collect();
        assert!(
            missing.is_empty(),
            "README.md does not mention these `wasmgate {command}` flags: {missing:?}"
        );
    }
}
