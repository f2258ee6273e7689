//! Fuzzer bytes -> a `SimCase` (through its `Arbitrary` impl, the decoding `SimCase::from_seed`
//! also uses) -> the sim executor and its invariants: the real loop over the simulated kernel,
//! one thread, virtual time, injected faults.
//!
//! `REFLOOP_KNOWN_BAD=<Variant>` (as named in `sim_schedule::exec::KNOWN_BAD`, for example
//! `SkipWake`) runs a known-bad loop instead, so the fuzzer can be shown to find it.
//! A crash replays exactly: the artifact decodes with `SimCase::from_fuzz_bytes`, and the
//! panic message prints the case.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use refloop_integration::sim_schedule::exec::{self, Options};
use refloop_integration::sim_schedule::SimCase;

fn options() -> &'static Options {
    static OPTIONS: OnceLock<Options> = OnceLock::new();
    OPTIONS.get_or_init(|| match std::env::var("REFLOOP_KNOWN_BAD") {
        Ok(name) => Options::variant(
            exec::known_bad(&name)
                .unwrap_or_else(|| panic!("REFLOOP_KNOWN_BAD={name} names no loop variant")),
        ),
        Err(_) => Options::correct(),
    })
}

fuzz_target!(|data: &[u8]| {
    let case = SimCase::from_fuzz_bytes(data);
    if let Err(f) = exec::run(&case, options()) {
        panic!("{f}\n{case}\n{}", f.trace_tail);
    }
});
