//! `cargo fuzz run framing_raw`: the framing oracle on raw wire bytes behind a 4-byte header
//! (framing, cut stride, limit), so byte mutations and the dictionary hit the stream itself.
//! See `refloop_integration::framing_case::RawCase`.
#![no_main]

use refloop::check::framing::TrackingAlloc;
use refloop_integration::framing_case::{RawCase, Subject};

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    RawCase::from_fuzz_bytes(data).check(Subject::from_env());
});
