//! Fuzzer bytes -> a socket `Schedule` (through its `Arbitrary` impl) -> the same executor and
//! invariant checks as the `schedule_invariants` proptest, against refloop's real loop on real
//! loopback sockets.
//!
//! `REFLOOP_KNOWN_BAD=<variant>` runs a known-bad loop instead (`read_once`, `accept_once`,
//! `drop_partial_write_rest`, `no_generation`, `close_on_read_hup`,
//! `drain_before_eventfd_reset`), with a short stall bound, so the fuzzer can be shown to find
//! it.
//!
//! A crash replays as a regression: copy `fuzz/artifacts/schedule/crash-*` into
//! `fuzz/regressions/schedule/` (named `known_bad-<variant>-<hash>` if it was found against a
//! variant); `cargo test -p refloop-integration --test schedule_replay` then runs it through
//! `Schedule::from_fuzz_bytes` and the executor in the integration stage.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use refloop_integration::schedule::exec::{self, Options};
use refloop_integration::schedule::Schedule;

fn options() -> &'static Options {
    static OPTIONS: OnceLock<Options> = OnceLock::new();
    OPTIONS.get_or_init(|| match std::env::var("REFLOOP_KNOWN_BAD") {
        Ok(name) => exec::known_bad_options(&name)
            .unwrap_or_else(|| panic!("REFLOOP_KNOWN_BAD={name} names no loop variant")),
        Err(_) => Options::from_env(),
    })
}

fuzz_target!(|data: &[u8]| {
    let schedule = Schedule::from_fuzz_bytes(data);
    if let Err(e) = exec::run(&schedule, options()) {
        panic!("{e}\n{schedule}");
    }
});
