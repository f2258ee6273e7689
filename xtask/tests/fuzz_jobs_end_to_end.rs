//! `cargo xtask fuzz TARGET --jobs N` end to end, with a stand-in `cargo` on `PATH` that acts
//! like libFuzzer's fork mode and merge, so the plumbing (flags, scratch corpus, merge into the
//! checked-in corpus, per-job rates, exit codes) is checked without building a fuzzer.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A stand-in for `cargo fuzz`: `--version`, a fork-mode run that writes three inputs into its
/// scratch corpus and prints two job lines, and a merge that keeps two of them.
const FAKE_CARGO: &str = r##"#!/bin/sh
case "$*" in
  *"fuzz --version"*) echo "cargo-fuzz 0.0.0-stand-in"; exit 0 ;;
  *-fork=2*)
    if [ -n "$FAKE_FORK_CRASH" ]; then echo "==1== ERROR: libFuzzer: deadly signal"; exit 1; fi
    for i in 1 2 3; do echo "input $i" > "$4/new-$i"; done
    echo "#4000: cov: 10 ft: 20 corp: 3 exec/s: 2000 oom/timeout/crash: 0/0/0 time: 2s job: 1 dft_time: 0"
    echo "#12000: cov: 12 ft: 25 corp: 5 exec/s: 1500 oom/timeout/crash: 0/0/0 time: 4s job: 2 dft_time: 0"
    exit 0 ;;
  *-merge=1*)
    [ "$5" = "target/fuzz-work/jobs-demo" ] || { echo "merge from $5, not the scratch corpus"; exit 9; }
    cp "$5/new-1" "$5/new-2" "$4/"; echo "MERGE-OUTER: 2 new files"; exit 0 ;;
esac
echo "unexpected cargo $*"; exit 7
"##;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-jobs-{name}-{}", std::process::id()));
    // Leftovers from an earlier run of the same pid are removed; absence is fine.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("fuzz/corpus/demo")).unwrap();
    std::fs::write(dir.join("fuzz/corpus/demo/seed"), "seed").unwrap();
    let cargo = dir.join("bin/cargo");
    std::fs::write(&cargo, FAKE_CARGO).unwrap();
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn xtask(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let path = format!(
        "{}:{}",
        root.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args)
        .env("XTASK_ROOT", root)
        .env("PATH", path)
        .env("REFLOOP_NIGHTLY_TOOLCHAIN", "")
        .env("REFLOOP_STABLE_TOOLCHAIN", "");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn jobs_run_fork_mode_merge_new_inputs_into_the_corpus_and_print_each_jobs_rate() {
    let root = scratch("ok");
    let out = xtask(
        &root,
        &["fuzz", "demo", "--jobs", "2", "--seconds", "4"],
        &[],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("-fork=2 -max_total_time=4"), "{all}");
    assert!(
        all.contains("12000 executions in 4 s, 3000 exec/s in all, 1500 exec/s per parallel job"),
        "{all}"
    );
    assert!(all.contains("job    1:     2000 exec/s"), "{all}");
    assert!(all.contains("job    2:     1500 exec/s"), "{all}");
    assert!(all.contains("merged 2 new inputs"), "{all}");
    assert!(all.contains("fuzz executions: demo=12000"), "{all}");
    let mut corpus: Vec<String> = std::fs::read_dir(root.join("fuzz/corpus/demo"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    corpus.sort();
    assert_eq!(corpus, ["new-1", "new-2", "seed"]);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_crash_in_a_fork_job_fails_the_run_and_merges_nothing() {
    let root = scratch("crash");
    let out = xtask(
        &root,
        &["fuzz", "demo", "--jobs", "2"],
        &[("FAKE_FORK_CRASH", "1")],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("stage `fuzz` failed"), "{all}");
    assert_eq!(
        std::fs::read_dir(root.join("fuzz/corpus/demo"))
            .unwrap()
            .count(),
        1
    );
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn zero_jobs_is_refused() {
    let root = scratch("zero");
    let out = xtask(&root, &["fuzz", "demo", "--jobs", "0"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--jobs must be at least 1"));
    std::fs::remove_dir_all(&root).unwrap();
}
