//! Runs stages: spawns each command, streams its output, and reads what it checked.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::stages::{Counts, Expect, Stage, Step};

/// What one stage did.
#[derive(Debug)]
pub struct Outcome {
    pub name: &'static str,
    pub status: Status,
    pub wall: Duration,
    pub tally: Tally,
    /// The commands that rerun this stage alone (when it failed).
    pub rerun: Vec<String>,
}

/// How a stage ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    Pass,
    /// The stage ran but had nothing to check: never shown as a pass.
    NoChecks,
    /// A step failed; the string says which and why.
    Fail(String),
}

impl Status {
    pub fn is_pass(&self) -> bool {
        *self == Status::Pass
    }
}

/// What a stage's output says it checked.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tally {
    pub tests_passed: u64,
    pub tests_failed: u64,
    pub test_binaries: u64,
    /// `@@stat <metric> <name> <value>` lines, in the order printed.
    pub stats: Vec<(String, String, String)>,
    /// `(target, executions)` from libFuzzer's final statistics.
    pub fuzz_runs: Vec<(String, u64)>,
    /// libFuzzer fork-mode status lines (`cargo xtask fuzz --jobs`), in the order printed.
    pub fork_lines: Vec<crate::fuzz_jobs::ForkLine>,
    /// Known-bad variants that were caught as required.
    pub teeth_caught: u64,
    /// `(variant, executions)` a fuzz run needed to catch a known-bad variant.
    pub teeth_runs: Vec<(String, u64)>,
    pub files: usize,
}

impl Tally {
    /// Reads one line of a command's output.
    pub fn observe(&mut self, line: &str, label: Option<&str>) {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("test result: ") {
            self.test_binaries += 1;
            self.tests_passed += number_before(rest, " passed").unwrap_or(0);
            self.tests_failed += number_before(rest, " failed").unwrap_or(0);
        } else if let Some(rest) = line.strip_prefix("@@stat ") {
            let mut words = rest.splitn(3, ' ');
            if let (Some(metric), Some(name), Some(value)) =
                (words.next(), words.next(), words.next())
            {
                // A labelled step (tsan, asan) tells its counts apart from a sibling step's.
                let name = match label {
                    Some(label) => format!("{label}:{name}"),
                    None => name.to_string(),
                };
                self.stats
                    .push((metric.to_string(), name, value.trim().to_string()));
            }
        } else if let Some(rest) = line.strip_prefix("stat::number_of_executed_units:") {
            if let (Some(target), Ok(n)) = (label, rest.trim().parse::<u64>()) {
                self.fuzz_runs.push((target.to_string(), n));
            }
        } else if let Some(fork) = crate::fuzz_jobs::parse_fork_line(line) {
            // Fork mode prints no final statistics: its running total stands for them.
            if let Some(target) = label {
                match self.fuzz_runs.iter_mut().find(|(t, _)| t == target) {
                    Some(entry) => entry.1 = fork.runs,
                    None => self.fuzz_runs.push((target.to_string(), fork.runs)),
                }
                self.fork_lines.push(fork);
            }
        }
    }

    fn checked_something(&self, counts: Counts) -> bool {
        match counts {
            Counts::Tests => self.tests_passed + self.tests_failed > 0,
            Counts::FuzzExecutions => self.fuzz_runs.iter().any(|(_, n)| *n > 0),
            Counts::Files => self.files > 0,
            Counts::Stat(metric) => self
                .stats
                .iter()
                .any(|(m, _, v)| m == metric && v.parse::<f64>().is_ok_and(|v| v > 0.0)),
        }
    }
}

/// The number just before `marker` in `text` (`"12 passed"` gives 12 for `" passed"`).
fn number_before(text: &str, marker: &str) -> Option<u64> {
    let end = text.find(marker)?;
    let start = text[..end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    text[start..end].parse().ok()
}

/// Prints progress, except in the xtask's own unit tests, whose made-up stages would otherwise
/// print alarming failures into the real `test` stage's output.
macro_rules! say {
    ($($arg:tt)*) => {
        if !cfg!(test) {
            println!($($arg)*);
        }
    };
}

/// Runs the stages in order. A failing stage does not stop the later ones, so one run shows
/// every problem; the exit code reports any failure.
pub fn run_stages(stages: &[Stage]) -> Vec<Outcome> {
    let total = stages.len();
    let mut outcomes = Vec::new();
    for (i, stage) in stages.iter().enumerate() {
        say!(
            "\n=== [{}/{total}] stage `{}`: {} ===",
            i + 1,
            stage.name,
            stage.about
        );
        let started = Instant::now();
        let mut tally = Tally {
            files: stage.files,
            ..Tally::default()
        };
        let mut status = Status::Pass;
        for (n, step) in stage.steps.iter().enumerate() {
            let what = step
                .label
                .clone()
                .unwrap_or_else(|| format!("step {}", n + 1));
            say!("--> [{}] {what}: {}", stage.name, step.display());
            if let Err(why) = run_step(step, &mut tally) {
                say!("!!! [{}] {what} FAILED: {why}", stage.name);
                status = Status::Fail(format!("{what}: {why}"));
                break;
            }
            if matches!(step.expect, Expect::Failure { .. }) {
                tally.teeth_caught += 1;
            }
        }
        if status == Status::Pass && !tally.checked_something(stage.counts) {
            status = Status::NoChecks;
        }
        let wall = started.elapsed();
        let mut rerun = vec![format!("cargo xtask test-all --only {}", stage.name)];
        if let Status::Fail(_) = status {
            rerun.extend(stage.steps.iter().map(Step::display));
            say!("!!! stage `{}` failed; rerun it alone with:", stage.name);
            for cmd in &rerun {
                say!("    {cmd}");
            }
        } else if status == Status::NoChecks {
            say!(
                "!!! stage `{}` ran but checked nothing: NO CHECKS YET",
                stage.name
            );
        }
        say!(
            "=== stage `{}` done in {:.1}s ===",
            stage.name,
            wall.as_secs_f64()
        );
        outcomes.push(Outcome {
            name: stage.name,
            status,
            wall,
            tally,
            rerun,
        });
    }
    outcomes
}

/// Runs one step, streaming its output while the tally reads it.
fn run_step(step: &Step, tally: &mut Tally) -> Result<(), String> {
    for dir in &step.fresh_dirs {
        // A missing directory is the state we want; any other error shows up at create_dir_all.
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut cmd = Command::new(&step.program);
    cmd.args(&step.args)
        .current_dir(&step.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in &step.env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `{}`: {e}", step.program))?;
    let (tx, rx) = mpsc::channel::<String>();
    let mut readers = Vec::new();
    let stdout = child
        .stdout
        .take()
        .map(|s| Box::new(s) as Box<dyn Read + Send>);
    let stderr = child
        .stderr
        .take()
        .map(|s| Box::new(s) as Box<dyn Read + Send>);
    for (pipe, to_stderr) in [(stdout, false), (stderr, true)] {
        let Some(pipe) = pipe else { continue };
        let tx = tx.clone();
        readers.push(thread::spawn(move || {
            for line in BufReader::new(pipe).split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line).into_owned();
                // The xtask's own unit tests feed made-up test results through here; echoing
                // them would let the outer `test` stage count them as real tests.
                if cfg!(test) {
                } else if to_stderr {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
                if tx.send(line).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let mut seen_markers = Vec::new();
    let markers: &[&str] = match &step.expect {
        Expect::Success => &[],
        Expect::Failure { markers } => markers,
    };
    let fuzz_runs_before = tally.fuzz_runs.len();
    for line in rx {
        tally.observe(&line, step.label.as_deref());
        for m in markers {
            if line.contains(m) && !seen_markers.contains(m) {
                seen_markers.push(*m);
            }
        }
    }
    for reader in readers {
        // A reader thread only ends when its pipe closes; a panic there would be a bug in this
        // file, and the child's exit status below still decides the step.
        let _ = reader.join();
    }
    if matches!(step.expect, Expect::Failure { .. }) {
        // Executions of a known-bad run measure how fast the check bites, not coverage.
        let teeth = tally.fuzz_runs.split_off(fuzz_runs_before);
        tally.teeth_runs.extend(teeth);
    }
    let status = child
        .wait()
        .map_err(|e| format!("cannot wait for `{}`: {e}", step.program))?;
    match (&step.expect, status.success()) {
        (Expect::Success, true) => Ok(()),
        (Expect::Success, false) => Err(format!("exited with {status}")),
        (Expect::Failure { .. }, true) => {
            Err("a known-bad variant was ACCEPTED: the check has no teeth here".to_string())
        }
        (Expect::Failure { markers }, false) if seen_markers.is_empty() => Err(format!(
            "the known-bad run failed ({status}) but printed none of {markers:?}, \
             so it did not fail for the expected reason"
        )),
        (Expect::Failure { .. }, false) => {
            say!("--> known-bad variant rejected as required ({status})");
            Ok(())
        }
    }
}

/// Runs one command with inherited stdio (for `cargo xtask bench`).
pub fn passthrough(step: &Step) -> bool {
    println!("--> {}", step.display());
    let mut cmd = Command::new(&step.program);
    cmd.args(&step.args).current_dir(&step.cwd);
    for (k, v) in &step.env {
        cmd.env(k, v);
    }
    cmd.status().map(|s| s.success()).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn tally_of(lines: &[&str], label: Option<&str>) -> Tally {
        let mut t = Tally::default();
        for l in lines {
            t.observe(l, label);
        }
        t
    }

    #[test]
    fn cargo_test_result_lines_are_summed() {
        let t = tally_of(
            &[
                "test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out",
                "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 1 filtered out",
            ],
            None,
        );
        assert_eq!(
            (t.tests_passed, t.tests_failed, t.test_binaries),
            (15, 2, 2)
        );
    }

    #[test]
    fn stat_lines_and_fuzz_statistics_are_collected() {
        let t = tally_of(
            &[
                "@@stat loom-executions queue_exactly_once 1234",
                "stat::number_of_executed_units: 777",
            ],
            Some("framing"),
        );
        assert_eq!(
            t.stats,
            vec![(
                "loom-executions".into(),
                "framing:queue_exactly_once".into(),
                "1234".into()
            )]
        );
        assert_eq!(t.fuzz_runs, vec![("framing".to_string(), 777)]);
    }

    fn stage(steps: Vec<Step>, counts: Counts) -> Stage {
        Stage {
            name: "demo",
            about: "a stage made up by the test",
            steps,
            counts,
            files: 0,
        }
    }

    fn sh(script: &str) -> Step {
        Step::new("sh", vec!["-c".into(), script.into()], Path::new("/"))
    }

    #[test]
    fn a_failing_command_fails_its_stage_and_names_the_rerun_command() {
        let out = run_stages(&[stage(vec![sh("exit 3")], Counts::Tests)]);
        assert!(matches!(&out[0].status, Status::Fail(why) if why.contains("exit status: 3")));
        assert!(out[0]
            .rerun
            .iter()
            .any(|c| c == "cargo xtask test-all --only demo"));
        assert!(out[0].rerun.iter().any(|c| c.contains("exit 3")));
    }

    #[test]
    fn a_stage_that_ran_no_test_is_not_a_pass() {
        let out = run_stages(&[stage(vec![sh("echo nothing here")], Counts::Tests)]);
        assert_eq!(out[0].status, Status::NoChecks);
        assert!(!out[0].status.is_pass());
    }

    #[test]
    fn a_known_bad_variant_that_passes_fails_the_stage() {
        let mut step = sh("echo 'test result: ok. 1 passed; 0 failed;'");
        step.expect = Expect::Failure {
            markers: vec!["data race"],
        };
        let out = run_stages(&[stage(vec![step], Counts::Tests)]);
        assert!(matches!(&out[0].status, Status::Fail(why) if why.contains("ACCEPTED")));
    }

    #[test]
    fn a_known_bad_variant_failing_for_the_wrong_reason_fails_the_stage() {
        let mut step = sh("echo 'error: could not compile'; exit 101");
        step.expect = Expect::Failure {
            markers: vec!["data race"],
        };
        let out = run_stages(&[stage(vec![step], Counts::Tests)]);
        assert!(matches!(&out[0].status, Status::Fail(why) if why.contains("expected reason")));
    }

    #[test]
    fn a_known_bad_variant_caught_for_the_right_reason_counts_as_teeth() {
        let mut bad = sh("echo 'WARNING: data race'; exit 66");
        bad.expect = Expect::Failure {
            markers: vec!["data race"],
        };
        let good = sh("echo 'test result: ok. 4 passed; 0 failed;'");
        let out = run_stages(&[stage(vec![good, bad], Counts::Tests)]);
        assert_eq!(out[0].status, Status::Pass);
        assert_eq!(out[0].tally.teeth_caught, 1);
        assert_eq!(out[0].tally.tests_passed, 4);
    }
}
