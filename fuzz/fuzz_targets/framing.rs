//! `cargo fuzz run framing`: the framing oracle on a structured case (which framing, its
//! limit, well-formed messages or raw bytes, cut points). See
//! `refloop_integration::framing_case`; `REFLOOP_KNOWN_BAD=<name>` swaps in a broken framing.
#![no_main]

use refloop::check::framing::TrackingAlloc;
use refloop_integration::framing_case::{FramingCase, Subject};

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

libfuzzer_sys::fuzz_target!(|case: FramingCase| {
    case.check(Subject::from_env());
});
