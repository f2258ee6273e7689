//! The summary table printed at the end of every run.

use std::fmt::Write;

use crate::run::{Outcome, Status, Tally};

/// The table: stage, result, wall time, and what was checked. Its last line is the plain
/// `<command>: N passed, N failed` count of stages.
pub fn summary(command: &str, outcomes: &[Outcome]) -> String {
    let mut out = String::new();
    let rule = "-".repeat(100);
    let _ = writeln!(out, "\n{rule}");
    let _ = writeln!(
        out,
        "{:<12} {:<14} {:>9}  checked",
        "stage", "result", "time"
    );
    let _ = writeln!(out, "{rule}");
    for o in outcomes {
        let result = match &o.status {
            Status::Pass => "pass",
            Status::NoChecks => "NO CHECKS YET",
            Status::Fail(_) => "FAIL",
        };
        let time = format!("{:.1}s", o.wall.as_secs_f64());
        let mut lines = checked(&o.tally);
        if let Status::Fail(why) = &o.status {
            lines.push(format!("failed: {why}"));
            lines.push(format!("rerun: {}", o.rerun[0]));
        }
        if o.status == Status::NoChecks {
            lines.push("this stage has no checks yet: it is not a pass".to_string());
        }
        for (i, line) in lines.iter().enumerate() {
            if i == 0 {
                let _ = writeln!(out, "{:<12} {:<14} {:>9}  {line}", o.name, result, time);
            } else {
                let _ = writeln!(out, "{:<12} {:<14} {:>9}    {line}", "", "", "");
            }
        }
    }
    let _ = writeln!(out, "{rule}");
    let total: f64 = outcomes.iter().map(|o| o.wall.as_secs_f64()).sum();
    let _ = writeln!(
        out,
        "{:<12} {:<14} {:>9}",
        "total",
        "",
        format!("{total:.1}s")
    );
    let passed = outcomes.iter().filter(|o| o.status.is_pass()).count();
    let failed = outcomes.len() - passed;
    let _ = writeln!(out, "{command}: {passed} passed, {failed} failed");
    out
}

/// What the tally says was checked, as lines for the table.
fn checked(t: &Tally) -> Vec<String> {
    let mut lines = Vec::new();
    if t.test_binaries > 0 {
        lines.push(format!(
            "{} tests passed, {} failed, in {} test binaries",
            t.tests_passed, t.tests_failed, t.test_binaries
        ));
    }
    if !t.fuzz_runs.is_empty() {
        let runs: Vec<String> = t
            .fuzz_runs
            .iter()
            .map(|(target, n)| format!("{target}={n}"))
            .collect();
        lines.push(format!("fuzz executions: {}", runs.join(", ")));
    }
    if t.teeth_caught > 0 {
        lines.push(format!(
            "{} known-bad variants rejected as required",
            t.teeth_caught
        ));
    }
    if !t.teeth_runs.is_empty() {
        let runs: Vec<String> = t
            .teeth_runs
            .iter()
            .map(|(v, n)| format!("{v}={n}"))
            .collect();
        lines.push(format!(
            "executions to catch each known-bad variant: {}",
            runs.join(", ")
        ));
    }
    // Group `@@stat` lines by metric, keeping first-seen order.
    let mut metrics: Vec<(&str, Vec<String>)> = Vec::new();
    for (metric, name, value) in &t.stats {
        let entry = format!("{name}={value}");
        match metrics.iter_mut().find(|(m, _)| m == metric) {
            Some((_, entries)) => entries.push(entry),
            None => metrics.push((metric, vec![entry])),
        }
    }
    for (metric, entries) in metrics {
        lines.push(format!("{metric}: {}", entries.join(", ")));
    }
    if lines.is_empty() && t.files > 0 {
        lines.push(format!("{} Rust source files", t.files));
    }
    if lines.is_empty() {
        lines.push("nothing".to_string());
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn table_names_the_failing_stage_and_ends_with_the_stage_count() {
        let outcomes = vec![
            Outcome {
                name: "fmt",
                status: Status::Pass,
                wall: Duration::from_millis(1500),
                tally: Tally {
                    files: 10,
                    ..Tally::default()
                },
                rerun: vec!["cargo xtask test-all --only fmt".into()],
            },
            Outcome {
                name: "loom",
                status: Status::Fail("step 1: exited with exit status: 101".into()),
                wall: Duration::from_secs(3),
                tally: Tally {
                    stats: vec![("loom-executions".into(), "queue".into(), "99".into())],
                    ..Tally::default()
                },
                rerun: vec!["cargo xtask test-all --only loom".into()],
            },
        ];
        let table = summary("test-all", &outcomes);
        assert!(table.contains("loom-executions: queue=99"), "{table}");
        assert!(
            table.contains("rerun: cargo xtask test-all --only loom"),
            "{table}"
        );
        let fail_line = table.lines().find(|l| l.starts_with("loom")).unwrap();
        assert!(fail_line.contains("FAIL"), "{table}");
        assert_eq!(table.lines().last(), Some("test-all: 1 passed, 1 failed"));
    }
}
