//! Runs the real xtask binary against scratch projects, so "a failing stage fails test-all and
//! is named" is checked end to end rather than taken on trust.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch single-crate workspace under the system temp directory.
fn scratch(name: &str, lib_rs: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-e2e-{name}-{}", std::process::id()));
    // Leftovers from an earlier run of the same pid are removed; absence is fine.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"scratch\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), lib_rs).unwrap();
    dir
}

fn xtask(root: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("XTASK_ROOT", root)
        .env("CARGO_TARGET_DIR", root.join("target"))
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn failing_fmt_stage_fails_test_all_and_names_the_stage_and_rerun_command() {
    let root = scratch("fmt-bad", "pub fn  badly_formatted( ){}\n");
    let out = xtask(&root, &["test-all", "--only", "fmt"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("stage `fmt` failed"), "{all}");
    assert!(all.contains("cargo xtask test-all --only fmt"), "{all}");
    assert!(
        all.lines()
            .any(|l| l.starts_with("fmt") && l.contains("FAIL")),
        "{all}"
    );
    assert!(
        all.trim_end().ends_with("test-all: 0 passed, 1 failed"),
        "{all}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn clean_fmt_stage_passes_and_the_output_ends_with_the_summary() {
    let root = scratch("fmt-good", "pub fn well_formatted() {}\n");
    let out = xtask(&root, &["test-all", "--only", "fmt"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.lines()
            .any(|l| l.starts_with("fmt") && l.contains("pass")),
        "{all}"
    );
    assert!(
        all.trim_end().ends_with("test-all: 1 passed, 0 failed"),
        "{all}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn failing_unit_test_fails_the_test_stage() {
    let root = scratch(
        "test-bad",
        "#[test]\nfn one_is_two() {\n    assert_eq!(1, 2);\n}\n",
    );
    let out = xtask(&root, &["test-all", "--only", "test"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("stage `test` failed"), "{all}");
    assert!(all.contains("0 passed, 1 failed"), "{all}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn test_stage_without_any_test_says_no_checks_and_fails() {
    let root = scratch("test-empty", "pub fn untested() {}\n");
    let out = xtask(&root, &["test-all", "--only", "test"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(
        all.lines()
            .any(|l| l.starts_with("test") && l.contains("NO CHECKS YET")),
        "{all}"
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn unknown_stage_is_refused_with_usage() {
    let root = scratch("unknown", "pub fn f() {}\n");
    let out = xtask(&root, &["test-all", "--only", "bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("unknown stage `bogus`"));
    std::fs::remove_dir_all(&root).unwrap();
}
