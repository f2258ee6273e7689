//! `cargo xtask mutants` end to end, against scratch git repositories and a stand-in `cargo`
//! that writes cargo-mutants' output files, so the selection (files that differ from main), the
//! survivors list and the exit codes are checked without mutating anything real.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A stand-in for `cargo mutants`: one caught and one missed mutant in every group it is run
/// for, written where `--output` says, and exit 2 as cargo-mutants does when a mutant is missed.
const FAKE_CARGO: &str = r##"#!/bin/sh
[ "$1" = "+stable" ] && shift
[ "$1" = "mutants" ] || { echo "unexpected cargo $*"; exit 7; }
[ "$2" = "--version" ] && { echo "cargo-mutants 0.0.0-stand-in"; exit 0; }
[ -n "$FAKE_MUTANTS_MUST_NOT_RUN" ] && { echo "cargo mutants ran"; exit 8; }
out=""; prev=""
for a in "$@"; do [ "$prev" = "--output" ] && out=$a; prev=$a; done
mkdir -p "$out/mutants.out"
echo "core/src/framing/lines.rs:10:5: replace a with b" > "$out/mutants.out/caught.txt"
echo "core/src/framing/lines.rs:20:9: replace Lines::decode -> bool with true" > "$out/mutants.out/missed.txt"
echo "ran cargo mutants $*"
exit 2
"##;

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A scratch repository on branch `main` with `core/src/framing/lines.rs` committed.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-mutants-{name}-{}", std::process::id()));
    // Leftovers from an earlier run of the same pid are removed; absence is fine.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("core/src/framing")).unwrap();
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::write(dir.join("core/src/framing/lines.rs"), "fn a() {}\n").unwrap();
    std::fs::write(dir.join(".gitignore"), "bin/\ntarget/\n").unwrap();
    let cargo = dir.join("bin/cargo");
    std::fs::write(&cargo, FAKE_CARGO).unwrap();
    std::fs::set_permissions(&cargo, std::fs::Permissions::from_mode(0o755)).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    git(
        &dir,
        &["-c", "user.name=t", "-c", "user.email=t@t", "add", "."],
    );
    git(
        &dir,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "-m",
            "init",
        ],
    );
    dir
}

fn xtask(root: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let path = format!(
        "{}:{}",
        root.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args).env("XTASK_ROOT", root).env("PATH", path);
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

const EXPLAINED: &str = "[[survivor]]\n\
    mutant = \"core/src/framing/lines.rs: replace Lines::decode -> bool with true\"\n\
    kind = \"equivalent\"\nreason = \"the stand-in's survivor, explained\"\n";

#[test]
fn nothing_differs_from_main_so_no_mutant_runs() {
    let root = scratch("none");
    let out = xtask(&root, &["mutants"], &[("FAKE_MUTANTS_MUST_NOT_RUN", "1")]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("differ from main"), "{all}");
    assert!(all.contains("0 mutants run"), "{all}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_file_changed_on_a_branch_is_the_only_one_mutated_and_an_unexplained_survivor_fails() {
    let root = scratch("branch");
    git(&root, &["checkout", "-q", "-b", "work"]);
    std::fs::write(root.join("core/src/framing/lines.rs"), "fn a() { b() }\n").unwrap();
    std::fs::write(root.join("README.md"), "not rust\n").unwrap();
    let out = xtask(&root, &["mutants"], &[]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("[framing] 1 file(s)"), "{all}");
    assert!(all.contains("--file core/src/framing/lines.rs --"), "{all}");
    assert!(!all.contains("README"), "{all}");
    assert!(all.contains("1 survivor(s) not explained"), "{all}");
    assert!(
        all.contains("replace Lines::decode -> bool with true"),
        "{all}"
    );
    assert!(all.contains("50.0%"), "{all}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn a_survivor_explained_in_the_list_passes() {
    let root = scratch("explained");
    std::fs::create_dir_all(root.join("mutants")).unwrap();
    std::fs::write(root.join("mutants/survivors.toml"), EXPLAINED).unwrap();
    let out = xtask(
        &root,
        &["mutants", "--file", "core/src/framing/lines.rs"],
        &[],
    );
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("every survivor is explained"), "{all}");
    assert!(all.contains("NOT met"), "{all}");
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn deep_lists_every_group_of_core_src() {
    let root = scratch("deep");
    let out = xtask(&root, &["mutants", "--deep", "--list"], &[]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    for group in ["[framing]", "[check-framing]", "[queue]", "[loop]"] {
        assert!(all.contains(group), "{group} missing:\n{all}");
    }
    assert!(all.contains("--file 'core/src/reactor/**'"), "{all}");
    std::fs::remove_dir_all(&root).unwrap();
}
