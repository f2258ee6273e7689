//! The correctness kit's own costs: loom executions per second and seconds per model, and
//! libFuzzer executions per second per fuzz target.
//!
//! Loom models are built exactly as the loom stage of `cargo xtask test-all` builds them
//! (`RUSTFLAGS="--cfg loom" cargo +stable test --release -p refloop-model --target-dir
//! target/loom`), then each model test is run on its own so its wall time can be attributed.
//! The number of executions comes from the `@@stat loom-executions <model> <n>` lines the
//! models print.
//!
//! Fuzz targets run through `cargo fuzz run <target>` from the repository root, with a fresh
//! scratch corpus directory first (so new inputs never land in the checked-in corpus) and the
//! checked-in corpus after it as a read-only seed; the figure is parsed from libFuzzer's
//! `Done N runs in S second(s)` line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// One loom model test's cost.
#[derive(Debug, Clone, PartialEq)]
pub struct LoomModel {
    /// The test name.
    pub test: String,
    /// Executions explored, summed over the `@@stat loom-executions` lines it printed, if any.
    pub executions: Option<u64>,
    /// Executions loom needed to reject a known-bad variant, summed over the
    /// `@@stat loom-executions-to-reject` lines it printed, if any.
    pub to_reject: Option<u64>,
    /// Wall time of the test alone.
    pub seconds: f64,
    /// Whether the test passed.
    pub passed: bool,
}

/// One fuzz target's cost.
#[derive(Debug, Clone, PartialEq)]
pub struct FuzzTarget {
    /// The target name.
    pub target: String,
    /// Executions and seconds from libFuzzer's `Done` line.
    pub done: Option<(u64, f64)>,
    /// Why there is no figure, if there is none.
    pub error: Option<String>,
}

/// Extracts `(metric, model, n)` from every `@@stat <metric> <model> <n>` whose metric is
/// `metric`.
///
/// The stat may follow other text on its line: with `--nocapture`, libtest prints
/// `test name ... ` and the test's own output on the same line.
pub fn parse_stats(text: &str, metric: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let at = l.find("@@stat ")?;
            let mut f = l[at..].split_whitespace();
            f.next()?;
            if f.next()? != metric {
                return None;
            }
            let model = f.next()?.to_string();
            let n = f.next()?.parse().ok()?;
            Some((model, n))
        })
        .collect()
}

/// Extracts `(model, n)` from every `@@stat loom-executions <model> <n>`.
pub fn parse_loom_stats(text: &str) -> Vec<(String, u64)> {
    parse_stats(text, "loom-executions")
}

/// Extracts `(runs, seconds)` from libFuzzer's last `Done N runs in S second(s)` line.
pub fn parse_libfuzzer_done(text: &str) -> Option<(u64, f64)> {
    text.lines().rev().find_map(|l| {
        let rest = &l[l.find("Done ")? + 5..];
        let mut f = rest.split_whitespace();
        let runs: u64 = f.next()?.parse().ok()?;
        if f.next()? != "runs" || f.next()? != "in" {
            return None;
        }
        let secs: f64 = f.next()?.parse().ok()?;
        Some((runs, secs))
    })
}

/// The test executables listed by `cargo test --no-run --message-format=json`.
pub fn parse_executables(json_lines: &str) -> Vec<PathBuf> {
    const KEY: &str = "\"executable\":\"";
    json_lines
        .lines()
        .filter_map(|l| {
            let at = l.find(KEY)? + KEY.len();
            let end = l[at..].find('"')?;
            Some(PathBuf::from(&l[at..at + end]))
        })
        .collect()
}

/// The test names in a libtest `--list` output.
pub fn parse_test_list(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_suffix(": test").map(str::to_string))
        .collect()
}

fn output_text(out: &Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    s
}

/// A `cargo` command that picks its toolchain afresh, not the one this harness runs under.
fn cargo(root: &Path) -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    c
}

/// Builds and runs every loom model at the given preemption bound; returns the models and the
/// build time.
///
/// # Errors
///
/// Fails when the model crate does not build.
pub fn run_loom(root: &Path, max_preemptions: &str) -> Result<(Vec<LoomModel>, Duration), String> {
    let t0 = Instant::now();
    let out = cargo(root)
        .args([
            "+stable",
            "test",
            "--release",
            "-p",
            "refloop-model",
            "--target-dir",
        ])
        .arg("target/loom")
        .args(["--no-run", "--message-format=json"])
        .env("RUSTFLAGS", "--cfg loom")
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let build = t0.elapsed();
    if !out.status.success() {
        return Err(format!(
            "loom models do not build:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut models = Vec::new();
    for exe in parse_executables(&String::from_utf8_lossy(&out.stdout)) {
        let list = Command::new(&exe)
            .arg("--list")
            .output()
            .map_err(|e| format!("cannot list {}: {e}", exe.display()))?;
        for test in parse_test_list(&String::from_utf8_lossy(&list.stdout)) {
            let t = Instant::now();
            let run = Command::new(&exe)
                .args(["--exact", &test, "--nocapture", "--test-threads=1"])
                .env("LOOM_MAX_PREEMPTIONS", max_preemptions)
                .current_dir(root.join("model"))
                .output()
                .map_err(|e| format!("cannot run {}: {e}", exe.display()))?;
            let seconds = t.elapsed().as_secs_f64();
            let text = output_text(&run);
            let sum = |stats: Vec<(String, u64)>| {
                (!stats.is_empty()).then(|| stats.iter().map(|s| s.1).sum())
            };
            models.push(LoomModel {
                test,
                executions: sum(parse_loom_stats(&text)),
                to_reject: sum(parse_stats(&text, "loom-executions-to-reject")),
                seconds,
                passed: run.status.success(),
            });
        }
    }
    Ok((models, build))
}

/// The fuzz targets `cargo fuzz list` reports.
///
/// # Errors
///
/// Fails when cargo-fuzz is missing or fails.
pub fn fuzz_targets(root: &Path) -> Result<Vec<String>, String> {
    let out = cargo(root)
        .args(["fuzz", "list"])
        .output()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo fuzz list failed:\n{}", output_text(&out)));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect())
}

/// Builds every fuzz target; returns the build time.
///
/// # Errors
///
/// Fails when the build fails.
pub fn build_fuzz(root: &Path) -> Result<Duration, String> {
    let t0 = Instant::now();
    let out = cargo(root)
        .args(["fuzz", "build"])
        .output()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo fuzz build failed:\n{}", output_text(&out)));
    }
    Ok(t0.elapsed())
}

/// Fuzzes `target` for `seconds` and reads libFuzzer's execution count.
pub fn run_fuzz(root: &Path, target: &str, seconds: u64) -> FuzzTarget {
    let scratch = std::env::temp_dir().join(format!(
        "refloop-bench-corpus-{target}-{}",
        std::process::id()
    ));
    let result = (|| {
        std::fs::create_dir_all(&scratch)
            .map_err(|e| format!("cannot create {}: {e}", scratch.display()))?;
        let mut c = cargo(root);
        c.args(["fuzz", "run", target]).arg(&scratch);
        let seeds = root.join("fuzz/corpus").join(target);
        if seeds.is_dir() {
            c.arg(&seeds);
        }
        c.arg("--").arg(format!("-max_total_time={seconds}"));
        let out = c
            .output()
            .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
        let text = output_text(&out);
        if !out.status.success() {
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            return Err(format!(
                "cargo fuzz run {target} failed: {}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        parse_libfuzzer_done(&text)
            .ok_or_else(|| "no `Done N runs` line in libFuzzer output".to_string())
    })();
    // The scratch corpus is ours and disposable; failing to remove it only leaves a temp dir.
    let _ = std::fs::remove_dir_all(&scratch);
    match result {
        Ok(done) => FuzzTarget {
            target: target.to_string(),
            done: Some(done),
            error: None,
        },
        Err(e) => FuzzTarget {
            target: target.to_string(),
            done: None,
            error: Some(e),
        },
    }
}

/// Cases per second of the sim schedule executor and of the real one, on the same schedules:
/// `(real, sim)`, from the `@@stat sim-speed` lines of `integration/tests/sim_speed.rs`.
///
/// # Errors
///
/// When the test fails or prints no figures.
pub fn run_sim_speed(root: &Path, cases: usize) -> Result<(f64, f64), String> {
    let out = cargo(root)
        .args([
            "+stable",
            "test",
            "--release",
            "-p",
            "refloop-integration",
            "--test",
            "sim_speed",
            "--",
            "--nocapture",
        ])
        .env("REFLOOP_SIM_SPEED_CASES", cases.to_string())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "sim_speed failed:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stats = parse_stats(&text, "sim-speed");
    let get = |name: &str| {
        stats
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v as f64 / 100.0)
    };
    match (get("real"), get("sim")) {
        (Some(real), Some(sim)) => Ok((real, sim)),
        _ => Err(format!(
            "sim_speed printed no @@stat sim-speed lines:\n{text}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loom_stat_lines_are_found_among_other_output() {
        let text = "running 1 test\n@@stat loom-executions queue_exactly_once 18234\nnoise @@stat x\n@@stat proptest-cases s 256\ntest a ... @@stat loom-executions wake 7\n@@stat loom-executions-to-reject bad 12\n";
        assert_eq!(
            parse_loom_stats(text),
            vec![
                ("queue_exactly_once".to_string(), 18234),
                ("wake".to_string(), 7)
            ]
        );
        assert_eq!(
            parse_stats(text, "loom-executions-to-reject"),
            vec![("bad".to_string(), 12)]
        );
    }

    #[test]
    fn libfuzzer_done_line_is_parsed_and_the_last_one_wins() {
        let text = "#2 INITED cov: 10\nDone 100 runs in 1 second(s)\nstuff\nDone 123456 runs in 11 second(s)\n";
        assert_eq!(parse_libfuzzer_done(text), Some((123456, 11.0)));
        assert_eq!(parse_libfuzzer_done("#1 INITED\n"), None);
    }

    #[test]
    fn executables_are_read_from_cargo_json_and_null_ones_skipped() {
        let json = r#"{"reason":"compiler-artifact","executable":null}
{"reason":"compiler-artifact","target":{"name":"queue"},"executable":"/t/loom/release/deps/queue-abc"}
{"reason":"build-finished","success":true}"#;
        assert_eq!(
            parse_executables(json),
            vec![PathBuf::from("/t/loom/release/deps/queue-abc")]
        );
    }

    #[test]
    fn test_list_keeps_tests_and_drops_benches_and_summary() {
        let text = "a::b: test\nc: bench\n\n2 tests, 0 benchmarks\n";
        assert_eq!(parse_test_list(text), vec!["a::b".to_string()]);
    }
}
