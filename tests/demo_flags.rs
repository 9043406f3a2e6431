//! The demo's flags: `--help` lists every flag the demo parses and exits 0, `--replay`
//! without `--store` gives the same transcript every run and leaves no file behind,
//! the console leaves on `/quit` (in a wizard too), and `--diagram` prints the flow.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn demo(args: &[&str], cwd: Option<&Path>, input: &str) -> Output {
    let mut cmd = Command::new(common::example_binary("demo"));
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let mut child = cmd.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn help_lists_every_flag_on_a_line_of_its_own() {
    let out = demo(&["--help"], None, "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let help = text(&out.stdout);
    // Every flag the demo's argument parser matches on.
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/demo.rs"))
            .unwrap();
    let flags: Vec<&str> = source
        .lines()
        .filter_map(|l| l.split_once("=>").map(|(arm, _)| arm.trim()))
        .flat_map(|arm| arm.split('|'))
        .filter_map(|alt| alt.trim().strip_prefix('"')?.strip_suffix('"'))
        .filter(|flag| flag.starts_with("--"))
        .collect();
    assert!(flags.len() >= 9, "{flags:?}");
    for flag in flags {
        let lines: Vec<&str> = help
            .lines()
            .filter(|l| {
                // The flag opens its line (`  --store URL  ...`, `  -h, --help  ...`).
                l.split_whitespace()
                    .take(2)
                    .any(|word| word.trim_end_matches(',') == flag)
            })
            .collect();
        assert_eq!(lines.len(), 1, "{flag} on one line of:\n{help}");
    }
}

#[test]
fn a_replay_without_a_store_is_the_same_every_time() {
    let dir = std::env::temp_dir().join(common::unique_name("demo_replay"));
    std::fs::create_dir_all(&dir).unwrap();
    let file: PathBuf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/02_invalid_age_reask.jsonl");
    let expected = std::fs::read_to_string(file.with_extension("full.transcript.jsonl")).unwrap();
    let path = file.display().to_string();
    for run in 0..2 {
        let out = demo(&["--replay", &path], Some(&dir), "");
        assert!(out.status.success(), "{}", text(&out.stderr));
        assert_eq!(text(&out.stdout), expected, "run {run}");
    }
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(left.is_empty(), "a replay writes no file: {left:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_console_says_how_to_leave_and_leaves_on_quit() {
    // `/quit` in the middle of the signup wizard: nothing after it is read.
    let out = demo(&["--store", "memory"], None, "/start\n/quit\nAlice\n");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "What is your name?\n");
    assert!(text(&out.stderr).contains("/quit"), "{}", text(&out.stderr));
    // Outside any scene too.
    let out = demo(&["--store", "memory"], None, "/quit\n/start\n");
    assert!(out.status.success());
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn the_diagram_is_the_flow_of_the_demo() {
    let out = demo(&["--diagram"], None, "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let chart = text(&out.stdout);
    assert!(chart.starts_with("flowchart TD\n"), "{chart}");
    for part in [
        "subgraph s2[\"signup (wizard)\"]",
        "s2_step0[\"step 0\"] -->|next| s2_step1[\"step 1\"]",
        "subgraph s1[\"profile, ttl 300 s\"]",
        "s1 -->|enter| s2",
        "outside -->|enter| s0",
    ] {
        assert!(chart.contains(part), "{part} in:\n{chart}");
    }
    // The README shows this very diagram.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(
        readme.contains(&format!("```mermaid\n{chart}```")),
        "README.md shows the output of `demo --diagram`"
    );
}
