//! loom model checks of refloop's send queue and its wake-up handshake.
//!
//! The models only build under `--cfg loom` (see `tests/`); this library holds the two helpers
//! every model uses:
//!
//! - `explore` runs a model to completion with loom's `loom::model::Builder`,
//!   counts the executions and prints them as an `@@stat loom-executions` line.
//! - `rejects` runs a model that must fail (a known-bad variant), catches loom's panic and
//!   checks that it names the expected property, so a check with no teeth fails the build.
//!
//! The bodies of the models are shared with the plain stress tests: see
//! `refloop::check::queue`.
#![cfg(loom)]

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The preemption bound when `LOOM_MAX_PREEMPTIONS` is not set.
pub const DEFAULT_PREEMPTIONS: usize = 3;

fn builder(bound: Option<usize>) -> loom::model::Builder {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(DEFAULT_PREEMPTIONS);
    }
    if let Some(bound) = bound {
        builder.preemption_bound = Some(bound);
    }
    builder
}

/// The preemption bound of the models of the whole loop (`tests/loop_models.rs`): one below
/// the stage's (`LOOM_MAX_PREEMPTIONS`, default 3), at least 1, since one loop turn makes
/// dozens of simulated syscalls, each a lock loom schedules around. `--deep` (bound 4) gives 3.
pub fn loop_preemptions() -> usize {
    std::env::var("LOOM_MAX_PREEMPTIONS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(DEFAULT_PREEMPTIONS)
        .saturating_sub(1)
        .max(1)
}

fn run_counted<F>(bound: Option<usize>, model: F) -> (Arc<AtomicUsize>, std::thread::Result<()>)
where
    F: Fn() + Sync + Send + 'static,
{
    let executions = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&executions);
    let result = panic::catch_unwind(AssertUnwindSafe(|| {
        builder(bound).check(move || {
            // Relaxed: a statistic, read after `check` returns.
            counter.fetch_add(1, Ordering::Relaxed);
            model();
        })
    }));
    (executions, result)
}

/// Explores every interleaving of `model` (within the preemption bound) and reports how many
/// executions that took; panics, failing the test, if any execution fails.
pub fn explore<F>(name: &str, model: F) -> usize
where
    F: Fn() + Sync + Send + 'static,
{
    explore_with(name, None, model)
}

/// [`explore`] with preemption bound `bound` (`None`: the stage's).
pub fn explore_with<F>(name: &str, bound: Option<usize>, model: F) -> usize
where
    F: Fn() + Sync + Send + 'static,
{
    let (executions, result) = run_counted(bound, model);
    // Relaxed: `check` has returned; the count is final.
    let n = executions.load(Ordering::Relaxed);
    if let Err(payload) = result {
        eprintln!("model `{name}` failed after {n} executions");
        panic::resume_unwind(payload);
    }
    println!("@@stat loom-executions {name} {n}");
    n
}

/// Runs `model`, which must fail: asserts that loom reports a failure whose message contains
/// `expected` (or one of its `|`-separated alternatives), and returns how many executions it
/// took to find it.
pub fn rejects<F>(name: &str, expected: &str, model: F) -> usize
where
    F: Fn() + Sync + Send + 'static,
{
    rejects_with(name, expected, None, model)
}

/// [`rejects`] with preemption bound `bound` (`None`: the stage's).
pub fn rejects_with<F>(name: &str, expected: &str, bound: Option<usize>, model: F) -> usize
where
    F: Fn() + Sync + Send + 'static,
{
    let (executions, result) = run_counted(bound, model);
    // Relaxed: `check` has returned; the count is final.
    let n = executions.load(Ordering::Relaxed);
    let payload = match result {
        Ok(()) => {
            panic!("known-bad variant `{name}` passed all {n} executions: the check has no teeth")
        }
        Err(payload) => payload,
    };
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("<non-string panic>");
    assert!(
        expected.split('|').any(|e| message.contains(e)),
        "known-bad variant `{name}` failed, but not for the expected reason \
         (wanted `{expected}`): {message}"
    );
    println!("@@stat loom-executions-to-reject {name} {n}");
    n
}
