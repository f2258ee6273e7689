//! refloop's task runner.
//!
//! - `cargo xtask test-all [--only STAGE]... [--skip STAGE]... [--quick | --deep]` runs the
//!   whole correctness kit, stage by stage, and ends with a summary table.
//! - `cargo xtask fuzz TARGET [--seconds N] [--jobs N]` fuzzes one target; `--jobs` runs
//!   libFuzzer's fork mode and merges what it found into `fuzz/corpus/TARGET`.
//! - `cargo xtask mutants [--deep] [--base REV] [--file PATH]... [--list]` runs cargo-mutants
//!   over `core/src` and fails on a survivor `mutants/survivors.toml` does not explain.
//! - `cargo xtask bench [--quick] [ARGS...]` runs the side-by-side benchmarks.
//! - `cargo xtask stages` lists the stages and the commands they run.
//!
//! The xtask has no dependencies: it only spawns cargo and reads what it prints.

mod budget;
mod fuzz_jobs;
mod mutants;
mod report;
mod run;
mod stages;

use std::path::PathBuf;
use std::process::ExitCode;

use budget::{Budget, Profile};

const USAGE: &str = "\
usage:
  cargo xtask test-all [--only STAGE]... [--skip STAGE]... [--quick | --deep]
  cargo xtask fuzz TARGET [--seconds N] [--jobs N]
  cargo xtask mutants [--deep] [--base REV] [--file PATH]... [--list]
  cargo xtask bench [--quick] [ARGS...]
  cargo xtask stages

stages, in order: fmt clippy test loom integration sanitize fuzz doc

budgets (an environment variable wins over the profile's default):
  PROPTEST_CASES          proptest cases per property
  LOOM_MAX_PREEMPTIONS    loom preemption bound (default 3)
  REFLOOP_FUZZ_SECONDS    seconds of fuzzing per target
  CI=true                 CI budgets (the default profile is already sized for CI)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match real_main(args) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("xtask: {msg}");
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn real_main(args: Vec<String>) -> Result<ExitCode, String> {
    let root = workspace_root();
    let (cmd, rest) = match args.split_first() {
        Some((cmd, rest)) => (cmd.as_str(), rest),
        None => return Err("no command given".to_string()),
    };
    match cmd {
        "test-all" => test_all(root, rest),
        "fuzz" => fuzz_one(root, rest),
        "mutants" => mutants::run(root, rest),
        "bench" => {
            let ctx = stages::Ctx::new(root, Budget::from_env(Profile::Default));
            let ok = run::passthrough(&stages::bench_command(&ctx, rest));
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        "stages" => {
            let ctx = stages::Ctx::new(root, Budget::from_env(Profile::Default));
            for stage in stages::all(&ctx) {
                println!("{}: {}", stage.name, stage.about);
                for step in &stage.steps {
                    println!("    {}", step.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => Err(format!("unknown command `{other}`")),
    }
}

/// The workspace root: `XTASK_ROOT` if set (the xtask's own tests point it at a scratch
/// project), else the parent of this crate's manifest directory.
fn workspace_root() -> PathBuf {
    if let Some(root) = std::env::var_os("XTASK_ROOT") {
        return PathBuf::from(root);
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

fn test_all(root: PathBuf, args: &[String]) -> Result<ExitCode, String> {
    let mut only = Vec::new();
    let mut skip = Vec::new();
    let mut profile = Profile::Default;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--only" => only.push(it.next().ok_or("--only needs a stage name")?.clone()),
            "--skip" => skip.push(it.next().ok_or("--skip needs a stage name")?.clone()),
            "--quick" => profile = Profile::Quick,
            "--deep" => profile = Profile::Deep,
            other => return Err(format!("unknown test-all flag `{other}`")),
        }
    }
    let ctx = stages::Ctx::new(root, Budget::from_env(profile));
    let all = stages::all(&ctx);
    for name in only.iter().chain(&skip) {
        if !all.iter().any(|s| s.name == name) {
            return Err(format!("unknown stage `{name}`"));
        }
    }
    let selected: Vec<_> = all
        .into_iter()
        .filter(|s| only.is_empty() || only.iter().any(|o| o == s.name))
        .filter(|s| !skip.iter().any(|k| k == s.name))
        .collect();
    println!("== cargo xtask test-all ({}) ==", ctx.budget.describe());
    let outcomes = run::run_stages(&selected);
    print!("{}", report::summary("test-all", &outcomes));
    let failed = outcomes.iter().any(|o| !o.status.is_pass());
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn fuzz_one(root: PathBuf, args: &[String]) -> Result<ExitCode, String> {
    let mut target = None;
    let mut seconds = None;
    let mut jobs = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--jobs" => {
                let value = it.next().ok_or("--jobs needs a number")?;
                let n = value.parse::<u64>().map_err(|e| format!("--jobs: {e}"))?;
                if n == 0 {
                    return Err("--jobs must be at least 1".to_string());
                }
                jobs = Some(n);
            }
            "--seconds" => {
                let value = it.next().ok_or("--seconds needs a number")?;
                seconds = Some(
                    value
                        .parse::<u64>()
                        .map_err(|e| format!("--seconds: {e}"))?,
                );
            }
            flag if flag.starts_with('-') => return Err(format!("unknown fuzz flag `{flag}`")),
            name => target = Some(name.to_string()),
        }
    }
    let target = target.ok_or("fuzz needs a TARGET (see `cargo fuzz list`)")?;
    let mut budget = Budget::from_env(Profile::Default);
    if let Some(seconds) = seconds {
        budget.fuzz_seconds = seconds;
    } else if std::env::var_os("REFLOOP_FUZZ_SECONDS").is_none() {
        budget.fuzz_seconds = 60;
    }
    let ctx = stages::Ctx::new(root, budget);
    let Some(jobs) = jobs else {
        let stage = stages::fuzz_single(&ctx, &target);
        let outcomes = run::run_stages(&[stage]);
        print!("{}", report::summary("fuzz", &outcomes));
        let failed = outcomes.iter().any(|o| !o.status.is_pass());
        return Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    };
    let corpus = ctx.root.join("fuzz/corpus").join(&target);
    std::fs::create_dir_all(&corpus)
        .map_err(|e| format!("cannot create {}: {e}", corpus.display()))?;
    let before = fuzz_jobs::count_files(&corpus);
    let outcomes = run::run_stages(&[stages::fuzz_parallel(&ctx, &target, jobs)]);
    let after = fuzz_jobs::count_files(&corpus);
    print!(
        "\n{}",
        fuzz_jobs::summary(jobs, &outcomes[0].tally.fork_lines, &corpus, before, after)
    );
    print!("{}", report::summary("fuzz", &outcomes));
    let failed = outcomes.iter().any(|o| !o.status.is_pass());
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
