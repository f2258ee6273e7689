//! `.clusterfuzzlite/local_check.sh`, the fuzz stage's Docker-free check of ClusterFuzzLite's
//! `build.sh`, against scratch projects: the real `build.sh` with a stand-in `cargo` (so its
//! copying of binaries, dictionaries and seed corpora is checked without compiling a fuzzer),
//! and broken build scripts, each of which the check must reject for its own reason.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn write_exe(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A stand-in fuzzer: runs once over the inputs of the directory it is given (`-runs=0`) and
/// fails on an input that says `crash`.
const FAKE_FUZZER: &str = "#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in -*) ;; *) \
    if grep -rqs crash \"$a\"; then echo 'deadly signal'; exit 1; fi ;; esac; done\n\
    echo \"ran $*\"\n";

/// A scratch repository with two fuzz targets: `alpha` (corpus and dictionary) and `beta`
/// (neither), and a stand-in `cargo` whose `fuzz build` writes both fuzzers where cargo-fuzz
/// would.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("xtask-cflite-{name}-{}", std::process::id()));
    // Leftovers from an earlier run of the same pid are removed; absence is fine.
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("fuzz/corpus/alpha")).unwrap();
    std::fs::create_dir_all(dir.join("fuzz/dict")).unwrap();
    std::fs::write(
        dir.join("fuzz/Cargo.toml"),
        "[package]\nname = \"f\"\n\n[[bin]]\nname = \"alpha\"\npath = \"a.rs\"\n\n\
         [[bin]]\nname = \"beta\"\npath = \"b.rs\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("fuzz/corpus/alpha/seed-1"), "hello").unwrap();
    std::fs::write(dir.join("fuzz/corpus/alpha/seed-2"), "world").unwrap();
    std::fs::write(dir.join("fuzz/dict/alpha.dict"), "kw=\"x\"\n").unwrap();
    std::fs::write(dir.join("fuzzer.sh"), FAKE_FUZZER).unwrap();
    write_exe(
        &dir.join("bin/cargo"),
        "#!/bin/sh\n[ \"$*\" = \"fuzz build -O --debug-assertions\" ] || { echo \"cargo $*\"; exit 7; }\n\
         out=fuzz/target/x86_64-unknown-linux-gnu/release\nmkdir -p $out\n\
         for t in alpha beta; do cp fuzzer.sh $out/$t; chmod +x $out/$t; done\n",
    );
    dir
}

fn check(root: &Path, build_sh: Option<&str>) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join(".clusterfuzzlite/local_check.sh"))
        .current_dir(root)
        .env(
            "PATH",
            format!(
                "{}:{}",
                root.join("bin").display(),
                std::env::var("PATH").unwrap()
            ),
        )
        .env_remove("CARGO_TARGET_DIR");
    let path = match build_sh {
        Some(script) => {
            let path = root.join("broken_build.sh");
            std::fs::write(&path, script).unwrap();
            path
        }
        None => repo().join(".clusterfuzzlite/build.sh"),
    };
    cmd.env("CFLITE_BUILD_SH", path);
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
fn real_build_script_puts_every_target_its_dictionary_and_seed_corpus_in_out() {
    let root = scratch("real");
    let out = check(&root, None);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let built = root.join("target/cflite-local/out");
    for file in ["alpha", "beta", "alpha.dict", "alpha_seed_corpus.zip"] {
        assert!(
            built.join(file).is_file(),
            "{file} missing from $OUT:\n{all}"
        );
    }
    assert!(!built.join("beta_seed_corpus.zip").exists());
    assert!(all.contains("$OUT/alpha -runs=0 -dict="), "{all}");
    assert!(all.contains("(2 seed inputs)"), "{all}");
    assert!(all.contains("@@stat cflite-binaries-run local 2"), "{all}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// Runs the check with `script` as build.sh and asserts it fails naming `why`.
fn rejects(name: &str, script: &str, why: &str) {
    let root = scratch(name);
    let out = check(&root, Some(script));
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("cflite local check FAILED"), "{all}");
    assert!(all.contains(why), "expected `{why}` in:\n{all}");
    std::fs::remove_dir_all(&root).unwrap();
}

/// A build.sh that does what the real one does for `targets`, by hand.
fn copies(targets: &str, seeds: bool, dict: bool) -> String {
    let mut s = format!(
        "cd $SRC/refloop\ncargo fuzz build -O --debug-assertions\n\
         for t in {targets}; do cp fuzz/target/x86_64-unknown-linux-gnu/release/$t $OUT/; done\n"
    );
    if seeds {
        s.push_str("python3 -m zipfile -c $OUT/alpha_seed_corpus.zip fuzz/corpus/alpha/*\n");
    }
    if dict {
        s.push_str("cp fuzz/dict/alpha.dict $OUT/\n");
    }
    s
}

#[test]
fn a_build_script_that_fails_is_rejected() {
    rejects(
        "exit",
        "echo building; exit 3\n",
        "build.sh exited with status 3",
    );
}

#[test]
fn a_build_script_that_leaves_out_a_target_is_rejected() {
    rejects(
        "missing",
        &copies("alpha", true, true),
        "no binary for target beta",
    );
}

#[test]
fn a_build_script_without_the_seed_corpus_is_rejected() {
    rejects(
        "seeds",
        &copies("alpha beta", false, true),
        "no $OUT/alpha_seed_corpus.zip",
    );
}

#[test]
fn a_build_script_without_the_dictionary_is_rejected() {
    rejects(
        "dict",
        &copies("alpha beta", true, false),
        "no $OUT/alpha.dict",
    );
}

#[test]
fn a_fuzzer_that_fails_on_its_seed_corpus_is_rejected() {
    let script = copies("alpha beta", true, true)
        + "echo crash > crash-seed\npython3 -m zipfile -c $OUT/alpha_seed_corpus.zip crash-seed\n";
    rejects("crash", &script, "alpha failed on its seed corpus");
}
