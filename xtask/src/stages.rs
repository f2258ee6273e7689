//! The stages of `cargo xtask test-all`, each a list of commands.
//!
//! A stage is data: its commands can be printed (`cargo xtask stages`), run, and rerun alone.
//! Nothing here parses output; `run` does that.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::budget::Budget;

/// What the xtask knows while building stages.
#[derive(Debug)]
pub struct Ctx {
    pub root: PathBuf,
    pub budget: Budget,
    /// `["+stable"]` when rustup can select the stable toolchain, else empty (plain `cargo`).
    stable: Vec<String>,
    /// `["+nightly"]` likewise; the fuzz and sanitize stages need nightly.
    nightly: Vec<String>,
}

impl Ctx {
    pub fn new(root: PathBuf, budget: Budget) -> Ctx {
        let toolchain = |var: &str, default: &str| -> Vec<String> {
            let name = std::env::var(var).unwrap_or_else(|_| default.to_string());
            if name.is_empty() || !rustup_has(&name) {
                Vec::new()
            } else {
                vec![format!("+{name}")]
            }
        };
        Ctx {
            root,
            budget,
            stable: toolchain("REFLOOP_STABLE_TOOLCHAIN", "stable"),
            nightly: toolchain("REFLOOP_NIGHTLY_TOOLCHAIN", "nightly"),
        }
    }

    fn cargo(&self, toolchain: Toolchain, args: &[&str]) -> Step {
        let mut all: Vec<String> = match toolchain {
            Toolchain::Stable => self.stable.clone(),
            Toolchain::Nightly => self.nightly.clone(),
        };
        all.extend(args.iter().map(|s| s.to_string()));
        Step::new("cargo", all, &self.root).envs(self.budget.env())
    }
}

fn rustup_has(toolchain: &str) -> bool {
    Command::new("rustup")
        .args(["run", toolchain, "rustc", "--version"])
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false)
}

#[derive(Clone, Copy)]
enum Toolchain {
    Stable,
    Nightly,
}

/// What a step's exit must look like for the step to pass.
#[derive(Debug, Clone)]
pub enum Expect {
    /// Exit status zero.
    Success,
    /// A known-bad variant: the command must fail, and its output must contain one of these
    /// markers (so a build error is not mistaken for the check catching the bug).
    Failure { markers: Vec<&'static str> },
}

/// One command of a stage.
#[derive(Debug, Clone)]
pub struct Step {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub expect: Expect,
    /// Directories emptied and recreated before the step runs (fuzz scratch corpora).
    pub fresh_dirs: Vec<PathBuf>,
    /// What this step's summary line calls it (a fuzz target name, for instance).
    pub label: Option<String>,
}

impl Step {
    pub fn new(program: &str, args: Vec<String>, cwd: &Path) -> Step {
        Step {
            program: program.to_string(),
            args,
            env: Vec::new(),
            cwd: cwd.to_path_buf(),
            expect: Expect::Success,
            fresh_dirs: Vec::new(),
            label: None,
        }
    }

    pub fn env(mut self, key: &str, value: &str) -> Step {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    fn envs(mut self, pairs: Vec<(String, String)>) -> Step {
        for (k, v) in pairs {
            self = self.env(&k, &v);
        }
        self
    }

    fn expect_failure(mut self, markers: &[&'static str]) -> Step {
        self.expect = Expect::Failure {
            markers: markers.to_vec(),
        };
        self
    }

    fn fresh(mut self, dir: PathBuf) -> Step {
        self.fresh_dirs.push(dir);
        self
    }

    fn label(mut self, label: &str) -> Step {
        self.label = Some(label.to_string());
        self
    }

    /// The command as a user would type it from the repository root.
    pub fn display(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.env {
            out.push_str(&format!("{k}={} ", shell_quote(v)));
        }
        out.push_str(&self.program);
        for arg in &self.args {
            out.push(' ');
            out.push_str(&shell_quote(arg));
        }
        out
    }
}

fn shell_quote(s: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=+:,@%".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// How a stage's checks are counted, to tell "passed" from "had nothing to check".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counts {
    /// cargo test binaries: the stage checked nothing if no test ran.
    Tests,
    /// Fuzz runs: the stage checked nothing if no target executed an input.
    FuzzExecutions,
    /// Lint-like stages (fmt, clippy, doc): the stage checked nothing if no file was seen.
    Files,
    /// Harness-less binaries that report `@@stat <metric> ...`: nothing was checked unless one
    /// reported a positive value.
    Stat(&'static str),
}

/// One stage of `test-all`.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: &'static str,
    pub about: &'static str,
    pub steps: Vec<Step>,
    pub counts: Counts,
    /// For [`Counts::Files`]: how many source files the stage covers.
    pub files: usize,
}

/// Every stage, in the order `test-all` runs them.
pub fn all(ctx: &Ctx) -> Vec<Stage> {
    let root = &ctx.root;
    let fuzz_manifest = root.join("fuzz/Cargo.toml");
    let has_fuzz = fuzz_manifest.exists();
    let manifest = fuzz_manifest.to_string_lossy().into_owned();
    let rs_files = count_rs_files(root);

    let mut fmt = vec![ctx.cargo(Toolchain::Stable, &["fmt", "--all", "--check"])];
    let mut clippy = vec![ctx.cargo(
        Toolchain::Stable,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    )];
    if root.join("model/Cargo.toml").exists() {
        // The loom models only exist under `--cfg loom`: lint them there too.
        clippy.push(
            ctx.cargo(
                Toolchain::Stable,
                &[
                    "clippy",
                    "-p",
                    "refloop-model",
                    "--all-targets",
                    "--release",
                    "--target-dir",
                    "target/loom",
                    "--",
                    "-D",
                    "warnings",
                ],
            )
            .env("RUSTFLAGS", "--cfg loom"),
        );
    }
    if has_fuzz {
        fmt.push(ctx.cargo(
            Toolchain::Stable,
            &["fmt", "--manifest-path", &manifest, "--check"],
        ));
        clippy.push(ctx.cargo(
            Toolchain::Stable,
            &[
                "clippy",
                "--manifest-path",
                &manifest,
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ));
    }

    let mut stages = vec![
        Stage {
            name: "fmt",
            about: "rustfmt --check over the workspace and the fuzz crate",
            steps: fmt,
            counts: Counts::Files,
            files: rs_files,
        },
        Stage {
            name: "clippy",
            about: "clippy -D warnings over the workspace, the loom models and the fuzz crate",
            steps: clippy,
            counts: Counts::Files,
            files: rs_files,
        },
        Stage {
            name: "test",
            about: "unit, doc and stress tests (everything but the integration proptests)",
            steps: vec![ctx.cargo(
                Toolchain::Stable,
                &[
                    "test",
                    "--workspace",
                    "--exclude",
                    "refloop-integration",
                    "--",
                    "--nocapture",
                ],
            )],
            counts: Counts::Tests,
            files: 0,
        },
    ];
    if root.join("model/Cargo.toml").exists() {
        stages.push(Stage {
            name: "loom",
            about: "loom models of the send queue and its wake-up handshake (release, --cfg loom)",
            steps: vec![ctx
                .cargo(
                    Toolchain::Stable,
                    &[
                        "test",
                        "-p",
                        "refloop-model",
                        "--release",
                        "--target-dir",
                        "target/loom",
                        "--",
                        "--nocapture",
                    ],
                )
                .env("RUSTFLAGS", "--cfg loom")],
            counts: Counts::Tests,
            files: 0,
        });
    }
    let sim_in_core = has_sim_tests(&root.join("core/tests"));
    let sim_in_integration = has_sim_tests(&root.join("integration/tests"));
    if sim_in_core || sim_in_integration {
        let mut steps = Vec::new();
        for (package, present) in [
            ("refloop", sim_in_core),
            ("refloop-integration", sim_in_integration),
        ] {
            if present {
                steps.push(ctx.cargo(
                    Toolchain::Stable,
                    &[
                        "test",
                        "-p",
                        package,
                        "--release",
                        "--test",
                        "sim_*",
                        "--",
                        "--nocapture",
                    ],
                ));
            }
        }
        stages.push(Stage {
            name: "sim",
            about: "the real loop over the simulated kernel: conformance with Linux, schedules and hunts, review-bug reproducers, virtual time",
            steps,
            counts: Counts::Tests,
            files: 0,
        });
    }
    if root.join("integration/Cargo.toml").exists() {
        stages.push(Stage {
            name: "integration",
            about: "proptest schedules and framing properties against real loopback sockets, \
                    and the kv example against redis-server, redis-benchmark and redis-cli",
            steps: vec![
                install_redis(ctx),
                ctx.cargo(
                    Toolchain::Stable,
                    &["build", "-p", "refloop", "--release", "--example", "kv"],
                )
                .label("build-kv"),
                ctx.cargo(
                    Toolchain::Stable,
                    &[
                        "test",
                        "-p",
                        "refloop-integration",
                        "--release",
                        "--",
                        "--nocapture",
                        // The sim schedules (every test named `sim_*`) run in the sim stage.
                        "--skip",
                        "sim_",
                    ],
                ),
            ],
            counts: Counts::Tests,
            files: 0,
        });
    }
    if let Some(stage) = sanitize(ctx) {
        stages.push(stage);
    }
    if has_fuzz {
        stages.push(fuzz(ctx));
    }
    stages.push(Stage {
        name: "doc",
        about: "cargo doc with warnings denied",
        steps: vec![ctx
            .cargo(Toolchain::Stable, &["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings")],
        counts: Counts::Files,
        files: rs_files,
    });
    stages
}

/// Whether a tests directory has simulated-kernel test targets (`sim_*.rs`).
fn has_sim_tests(tests: &Path) -> bool {
    std::fs::read_dir(tests).is_ok_and(|dir| {
        dir.flatten().any(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with("sim_") && name.ends_with(".rs")
        })
    })
}

/// Installs redis-server, redis-cli and redis-benchmark (Debian's `redis-server` and
/// `redis-tools`) when one is missing, as CI starts on a fresh machine; the RESP tests drive
/// them.
fn install_redis(ctx: &Ctx) -> Step {
    let script = "command -v redis-server >/dev/null && command -v redis-cli >/dev/null \
                  && command -v redis-benchmark >/dev/null \
                  || { apt-get update && apt-get install -y redis-server redis-tools; }";
    Step::new("sh", vec!["-c".to_string(), script.to_string()], &ctx.root).label("install-redis")
}

/// The nightly sanitizer runs of the queue's stress tests, when they exist.
///
/// ThreadSanitizer runs with `-Cunsafe-allow-abi-mismatch=sanitizer` because std cannot be
/// rebuilt here; the uninstrumented std's false reports are suppressed by the checked-in
/// suppressions file, and a known-racy mode must be reported, so the stage shows TSan works.
fn sanitize(ctx: &Ctx) -> Option<Stage> {
    let root = &ctx.root;
    let tests = root.join("core/tests");
    let suppressions = root.join("core/tsan-suppressions.txt");
    if !tests.join("sanitize_queue.rs").exists() || !suppressions.exists() {
        return None;
    }
    let tsan_options = format!("suppressions={} halt_on_error=1", suppressions.display());
    // The sanitizers need an explicit `--target` (so build scripts and proc macros stay
    // uninstrumented) and a target directory of their own.
    let sanitized = |rustflags: &str, target_dir: &str| {
        ctx.cargo(
            Toolchain::Nightly,
            &[
                "test",
                "-p",
                "refloop",
                "--test",
                "sanitize_queue",
                "--target",
                "x86_64-unknown-linux-gnu",
                "--target-dir",
                target_dir,
            ],
        )
        .env("RUSTFLAGS", rustflags)
    };
    let tsan = || {
        sanitized(
            "-Zsanitizer=thread -Cunsafe-allow-abi-mismatch=sanitizer",
            "target/tsan",
        )
        .env("TSAN_OPTIONS", &tsan_options)
    };
    let asan = sanitized("-Zsanitizer=address", "target/asan");
    Some(Stage {
        name: "sanitize",
        about: "queue stress tests under nightly ThreadSanitizer and AddressSanitizer",
        steps: vec![
            tsan().label("tsan"),
            tsan()
                .env("REFLOOP_KNOWN_BAD", "racy")
                .label("tsan-catches-known-race")
                .expect_failure(&["WARNING: ThreadSanitizer: data race"]),
            asan.label("asan"),
        ],
        counts: Counts::Stat("sanitize-rounds"),
        files: 0,
    })
}

/// The names of the fuzz targets, read from the fuzz crate's `[[bin]]` entries.
pub fn fuzz_targets(root: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(root.join("fuzz/Cargo.toml")) else {
        return Vec::new();
    };
    let mut targets = Vec::new();
    let mut in_bin = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin {
            if let Some(value) = line.strip_prefix("name").map(str::trim_start) {
                if let Some(value) = value.strip_prefix('=') {
                    targets.push(value.trim().trim_matches('"').to_string());
                }
            }
        }
    }
    targets
}

/// One line of `fuzz/teeth.txt`: a known-bad variant the fuzzer must catch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tooth {
    pub target: String,
    pub max_runs: u64,
    pub env: Vec<(String, String)>,
}

/// Parses `fuzz/teeth.txt`: `<target> <max_runs> [ENV=VALUE ...]`, `#` comments.
pub fn parse_teeth(text: &str) -> Result<Vec<Tooth>, String> {
    let mut teeth = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let target = words.next().unwrap_or_default().to_string();
        let max_runs = words
            .next()
            .and_then(|w| w.parse::<u64>().ok())
            .ok_or_else(|| format!("fuzz/teeth.txt:{}: expected `<target> <max_runs>`", n + 1))?;
        let mut env = Vec::new();
        for word in words {
            let (k, v) = word
                .split_once('=')
                .ok_or_else(|| format!("fuzz/teeth.txt:{}: `{word}` is not ENV=VALUE", n + 1))?;
            env.push((k.to_string(), v.to_string()));
        }
        teeth.push(Tooth {
            target,
            max_runs,
            env,
        });
    }
    Ok(teeth)
}

fn ensure_cargo_fuzz(ctx: &Ctx) -> Step {
    Step::new(
        "sh",
        vec![
            "-c".to_string(),
            "cargo fuzz --version || cargo install cargo-fuzz --locked".to_string(),
        ],
        &ctx.root,
    )
    .label("install cargo-fuzz if missing")
}

/// Which inputs a fuzz run starts from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Seeds {
    /// The checked-in corpus and regression inputs.
    CheckedIn,
    /// Nothing: the fuzzer's own search must find the bug (used for teeth, so that a seed input
    /// that already triggers it cannot make the search look better than it is).
    Empty,
}

fn fuzz_run(ctx: &Ctx, target: &str, scratch: &Path, seeds: Seeds, libfuzzer: &[String]) -> Step {
    let root = &ctx.root;
    let mut args: Vec<String> = ["fuzz", "run", target]
        .iter()
        .map(|s| s.to_string())
        .collect();
    // The scratch directory comes first: libFuzzer writes new inputs there, never into the
    // checked-in corpus.
    args.push(rel(root, scratch));
    for dir in [
        format!("fuzz/corpus/{target}"),
        format!("fuzz/regressions/{target}"),
    ] {
        if seeds == Seeds::CheckedIn && root.join(&dir).is_dir() {
            args.push(dir);
        }
    }
    args.push("--".to_string());
    let dict = format!("fuzz/dict/{target}.dict");
    if root.join(&dict).exists() {
        args.push(format!("-dict={dict}"));
    }
    args.extend(libfuzzer.iter().cloned());
    let arg_refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ctx.cargo(Toolchain::Nightly, &arg_refs)
        .fresh(scratch.to_path_buf())
}

fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

fn fuzz(ctx: &Ctx) -> Stage {
    let root = &ctx.root;
    let work = root.join("target/fuzz-work");
    let mut steps = vec![
        ensure_cargo_fuzz(ctx),
        ctx.cargo(Toolchain::Nightly, &["fuzz", "build"])
            .label("build every target"),
    ];
    steps.extend(cflite_local_check(ctx));
    let targets = fuzz_targets(root);
    for t in &targets {
        steps.push(
            fuzz_run(
                ctx,
                t,
                &work.join(format!("replay-{t}")),
                Seeds::CheckedIn,
                &["-runs=0".to_string()],
            )
            .label(&format!("{t}: replay corpus and regressions")),
        );
    }
    for t in &targets {
        let secs = ctx.budget.fuzz_seconds;
        steps.push(
            fuzz_run(
                ctx,
                t,
                &work.join(format!("run-{t}")),
                Seeds::CheckedIn,
                &[
                    format!("-max_total_time={secs}"),
                    "-print_final_stats=1".to_string(),
                ],
            )
            .label(t),
        );
    }
    let teeth = std::fs::read_to_string(root.join("fuzz/teeth.txt")).unwrap_or_default();
    match parse_teeth(&teeth) {
        Ok(teeth) => {
            for tooth in teeth {
                let variant: Vec<&str> = tooth.env.iter().map(|(_, v)| v.as_str()).collect();
                let name = format!("{}/{}", tooth.target, variant.join("+"));
                let scratch = work.join(format!("teeth-{}", name.replace('/', "-")));
                let mut step = fuzz_run(
                    ctx,
                    &tooth.target,
                    &scratch,
                    Seeds::Empty,
                    &[
                        format!("-runs={}", tooth.max_runs),
                        "-seed=1".to_string(),
                        "-print_final_stats=1".to_string(),
                        format!("-artifact_prefix={}/", rel(root, &scratch)),
                    ],
                )
                .label(&name)
                .expect_failure(&[
                    "ERROR: libFuzzer",
                    "ERROR: AddressSanitizer",
                    "panicked",
                ]);
                for (k, v) in &tooth.env {
                    step = step.env(k, v);
                }
                steps.push(step);
            }
        }
        Err(e) => steps.push(
            Step::new(
                "sh",
                vec!["-c".to_string(), format!("echo '{e}' >&2; exit 1")],
                root,
            )
            .label("parse fuzz/teeth.txt"),
        ),
    }
    Stage {
        name: "fuzz",
        about: "build every fuzz target, replay corpora and regressions, fuzz each, prove teeth",
        steps,
        counts: Counts::FuzzExecutions,
        files: 0,
    }
}

/// ClusterFuzzLite's `build.sh` run without Docker (`.clusterfuzzlite/local_check.sh`), when the
/// repository has one: right after the stage's own build, whose artifacts it reuses.
fn cflite_local_check(ctx: &Ctx) -> Option<Step> {
    let script = ".clusterfuzzlite/local_check.sh";
    if !ctx.root.join(script).exists() {
        return None;
    }
    let mut step = Step::new("bash", vec![script.to_string()], &ctx.root)
        .label("clusterfuzzlite build.sh without docker");
    // build.sh runs plain `cargo fuzz`: give it the stage's nightly.
    if let Some(toolchain) = ctx.nightly.first().and_then(|t| t.strip_prefix('+')) {
        step = step.env("RUSTUP_TOOLCHAIN", toolchain);
    }
    Some(step)
}

/// `cargo xtask fuzz TARGET`: build, then fuzz one target for the budget's seconds.
pub fn fuzz_single(ctx: &Ctx, target: &str) -> Stage {
    let secs = ctx.budget.fuzz_seconds;
    Stage {
        name: "fuzz",
        about: "fuzz one target",
        steps: vec![
            ensure_cargo_fuzz(ctx),
            fuzz_run(
                ctx,
                target,
                &ctx.root.join(format!("target/fuzz-work/run-{target}")),
                Seeds::CheckedIn,
                &[
                    format!("-max_total_time={secs}"),
                    "-print_final_stats=1".to_string(),
                ],
            )
            .label(target),
        ],
        counts: Counts::FuzzExecutions,
        files: 0,
    }
}

/// `cargo xtask fuzz TARGET --jobs N`: libFuzzer's fork mode with `jobs` parallel jobs into a
/// scratch corpus, then `-merge=1` of what it found into `fuzz/corpus/TARGET` (see
/// `fuzz_jobs`).
pub fn fuzz_parallel(ctx: &Ctx, target: &str, jobs: u64) -> Stage {
    let secs = ctx.budget.fuzz_seconds;
    let scratch = ctx.root.join(format!("target/fuzz-work/jobs-{target}"));
    let corpus = format!("fuzz/corpus/{target}");
    let merge = ctx
        .cargo(
            Toolchain::Nightly,
            &[
                "fuzz",
                "run",
                target,
                &corpus,
                &rel(&ctx.root, &scratch),
                "--",
                "-merge=1",
            ],
        )
        .label(&format!("merge into {corpus}"));
    Stage {
        name: "fuzz",
        about: "fuzz one target in libFuzzer's fork mode, then merge into its corpus",
        steps: vec![
            ensure_cargo_fuzz(ctx),
            fuzz_run(
                ctx,
                target,
                &scratch,
                Seeds::CheckedIn,
                &[
                    format!("-fork={jobs}"),
                    format!("-max_total_time={secs}"),
                    "-print_final_stats=1".to_string(),
                ],
            )
            .label(target),
            merge,
        ],
        counts: Counts::FuzzExecutions,
        files: 0,
    }
}

/// `cargo xtask bench ARGS`: the benchmark harness in the bench crate.
pub fn bench_command(ctx: &Ctx, args: &[String]) -> Step {
    let mut all = vec![
        "run",
        "--release",
        "-p",
        "refloop-bench",
        "--bin",
        "bench",
        "--",
    ];
    all.extend(args.iter().map(String::as_str));
    ctx.cargo(Toolchain::Stable, &all)
}

fn count_rs_files(root: &Path) -> usize {
    fn walk(dir: &Path, n: &mut usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if !name.starts_with("target") && !name.starts_with('.') {
                    walk(&path, n);
                }
            } else if name.ends_with(".rs") {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(root, &mut n);
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teeth_file_parses_targets_runs_and_env() {
        let teeth = parse_teeth(
            "# comment\nframing 50000 REFLOOP_KNOWN_BAD=header_off_by_one\n\nframing_raw 10\n",
        )
        .unwrap();
        assert_eq!(teeth.len(), 2);
        assert_eq!(teeth[0].target, "framing");
        assert_eq!(teeth[0].max_runs, 50000);
        assert_eq!(
            teeth[0].env,
            vec![("REFLOOP_KNOWN_BAD".into(), "header_off_by_one".into())]
        );
        assert!(teeth[1].env.is_empty());
    }

    #[test]
    fn teeth_file_rejects_a_line_without_a_run_count() {
        let err = parse_teeth("framing lots\n").unwrap_err();
        assert!(err.contains("teeth.txt:1"), "{err}");
    }

    #[test]
    fn fuzz_targets_are_read_from_bin_entries() {
        let dir = std::env::temp_dir().join(format!("xtask-targets-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("fuzz")).unwrap();
        std::fs::write(
            dir.join("fuzz/Cargo.toml"),
            "[package]\nname = \"x\"\n\n[[bin]]\nname = \"framing\"\npath = \"a.rs\"\n\n\
             [[bin]]\nname = \"schedule\"\n",
        )
        .unwrap();
        assert_eq!(
            fuzz_targets(&dir),
            vec!["framing".to_string(), "schedule".to_string()]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn parallel_fuzzing_forks_into_scratch_then_merges_into_the_checked_in_corpus() {
        let ctx = Ctx {
            root: PathBuf::from("/repo"),
            budget: crate::budget::Budget::resolve(crate::budget::Profile::Default, |_| None),
            stable: Vec::new(),
            nightly: Vec::new(),
        };
        let stage = fuzz_parallel(&ctx, "framing", 3);
        let run = &stage.steps[1];
        assert!(
            run.args.contains(&"-fork=3".to_string()),
            "{}",
            run.display()
        );
        assert_eq!(run.args[3], "target/fuzz-work/jobs-framing");
        assert_eq!(
            run.fresh_dirs,
            vec![PathBuf::from("/repo/target/fuzz-work/jobs-framing")]
        );
        let merge = &stage.steps[2];
        assert_eq!(
            merge.display(),
            "LOOM_MAX_PREEMPTIONS=3 REFLOOP_FUZZ_SECONDS=20 cargo fuzz run framing \
             fuzz/corpus/framing target/fuzz-work/jobs-framing -- -merge=1"
        );
        // The merge reads the scratch corpus the run left: it must not empty it first.
        assert!(merge.fresh_dirs.is_empty());
    }

    #[test]
    fn displayed_commands_quote_what_a_shell_would_split() {
        let step = Step::new("cargo", vec!["test".into(), "a b".into()], Path::new("/"))
            .env("RUSTFLAGS", "--cfg loom");
        assert_eq!(step.display(), "RUSTFLAGS='--cfg loom' cargo test 'a b'");
    }
}
