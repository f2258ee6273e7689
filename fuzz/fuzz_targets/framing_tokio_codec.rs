//! `cargo fuzz run framing_tokio_codec`: tokio-util's `LengthDelimitedCodec`, `LinesCodec`,
//! `AnyDelimiterCodec` and `BytesCodec` through refloop's framing oracle, by way of
//! `refloop::check::framing::tokio_codec`.
//!
//! The input's first byte picks the codec and the second its limit; the documented divergences
//! are accepted exactly where they show (see `tokio_codecs.rs`). `REFLOOP_KNOWN_BAD=<name>`
//! runs a known-bad codec instead (`refloop::check::framing::tokio_codec::known_bad::NAMES`).
//!
//! For your own codec the target is three lines: see `fuzz_check`'s documentation.
#![no_main]

#[path = "../../integration/tests/framing_common/tokio_codecs.rs"]
mod tokio_codecs;

#[global_allocator]
static ALLOC: refloop::check::framing::TrackingAlloc = refloop::check::framing::TrackingAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Err(why) = tokio_codecs::check(data, tokio_codecs::Subject::from_env()) {
        panic!("{why}");
    }
});
