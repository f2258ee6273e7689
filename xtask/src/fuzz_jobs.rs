//! `cargo xtask fuzz TARGET --jobs N`: libFuzzer's fork mode on one machine, then a merge of
//! what it found back into the checked-in corpus.
//!
//! In fork mode (`-fork=N`) libFuzzer's parent process runs N child fuzzers at a time, each for
//! a short job, and folds the inputs each job found into the first corpus directory (here a
//! scratch directory, never the checked-in corpus). After each job it prints one status line,
//! `#<runs>: cov: .. exec/s: <rate> .. time: <secs>s job: <k> ..`, where `<runs>` counts the
//! executions of every job so far and `<rate>` is the average executions per second of the job
//! that just ended (libFuzzer's `FuzzerFork.cpp`). The parent prints no final statistics, so
//! these lines are what the xtask reads.
//!
//! The merge (`-merge=1 fuzz/corpus/<target> <scratch>`) keeps every checked-in input and adds
//! only the scratch inputs that reach coverage the corpus does not, so the corpus grows
//! minimized.

use std::fmt::Write;
use std::path::Path;

/// One fork-mode status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForkLine {
    /// Executions of all jobs so far.
    pub runs: u64,
    /// Average executions per second of the job that just ended.
    pub exec_per_sec: u64,
    /// Seconds since fuzzing started.
    pub seconds: u64,
    /// The job's number, from 1.
    pub job: u64,
}

/// Parses a fork-mode status line; any other line gives `None` (a plain libFuzzer status line
/// is `#<runs>\tNEW ..`, with no colon after the count).
pub fn parse_fork_line(line: &str) -> Option<ForkLine> {
    let rest = line.trim().strip_prefix('#')?;
    let (runs, rest) = rest.split_once(": cov:")?;
    let value = |key: &str| -> Option<u64> {
        let mut words = rest.split_whitespace();
        words.find(|w| *w == key)?;
        words.next()?.trim_end_matches('s').parse().ok()
    };
    Some(ForkLine {
        runs: runs.parse().ok()?,
        exec_per_sec: value("exec/s:")?,
        seconds: value("time:")?,
        job: value("job:")?,
    })
}

/// What a parallel run did, for the terminal: executions per second in all and per job, and
/// how much the corpus grew.
pub fn summary(
    jobs: u64,
    lines: &[ForkLine],
    corpus: &Path,
    before: usize,
    after: usize,
) -> String {
    let mut out = String::new();
    let Some(last) = lines.last() else {
        let _ = writeln!(out, "fork mode printed no job status: nothing to report");
        return out;
    };
    let total = last.runs as f64 / last.seconds.max(1) as f64;
    let _ = writeln!(
        out,
        "fork mode, {jobs} parallel jobs: {} executions in {} s, {total:.0} exec/s in all, \
         {:.0} exec/s per parallel job",
        last.runs,
        last.seconds,
        total / jobs.max(1) as f64
    );
    let _ = writeln!(
        out,
        "exec/s of each finished job (libFuzzer's average per job):"
    );
    for line in lines {
        let _ = writeln!(
            out,
            "    job {:>4}: {:>8} exec/s",
            line.job, line.exec_per_sec
        );
    }
    let _ = writeln!(
        out,
        "merged {} new inputs into {} ({before} before, {after} after, minimized by -merge=1)",
        after.saturating_sub(before),
        corpus.display()
    );
    out
}

/// How many files a corpus directory holds (0 if it does not exist).
pub fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|entries| entries.flatten().filter(|e| e.path().is_file()).count())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fork_status_lines_give_runs_rate_time_and_job() {
        let line = "#57149: cov: 1447 ft: 3610 corp: 272 exec/s: 4041 oom/timeout/crash: 0/0/0 \
                    time: 8s job: 4 dft_time: 0";
        assert_eq!(
            parse_fork_line(line),
            Some(ForkLine {
                runs: 57149,
                exec_per_sec: 4041,
                seconds: 8,
                job: 4
            })
        );
    }

    #[test]
    fn plain_libfuzzer_lines_are_not_fork_status_lines() {
        for line in [
            "#15\tNEW    cov: 1295 ft: 2051 corp: 14/179b lim: 21 exec/s: 0 rss: 42Mb",
            "#13\tINITED cov: 1225 ft: 1902 corp: 12/137b exec/s: 0 rss: 42Mb",
            "stat::number_of_executed_units: 9899",
            "INFO: -fork=2: fuzzing in separate process(s)",
        ] {
            assert_eq!(parse_fork_line(line), None, "{line}");
        }
    }

    #[test]
    fn summary_divides_the_total_rate_by_the_jobs_and_lists_each_job() {
        let lines = [
            ForkLine {
                runs: 4000,
                exec_per_sec: 2000,
                seconds: 2,
                job: 1,
            },
            ForkLine {
                runs: 12000,
                exec_per_sec: 1500,
                seconds: 4,
                job: 2,
            },
        ];
        let text = summary(2, &lines, Path::new("fuzz/corpus/t"), 10, 13);
        assert!(
            text.contains(
                "12000 executions in 4 s, 3000 exec/s in all, 1500 exec/s per parallel job"
            ),
            "{text}"
        );
        assert!(text.contains("job    1:     2000 exec/s"), "{text}");
        assert!(
            text.contains("merged 3 new inputs into fuzz/corpus/t"),
            "{text}"
        );
    }
}
