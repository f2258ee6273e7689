//! `cargo fuzz run resp`: the framing oracle on `Resp`, over raw wire bytes behind a 4-byte
//! header (cut stride, `max_bulk`, `max_request`). See `refloop_integration::resp::case`;
//! `REFLOOP_KNOWN_BAD=reserve_declared_bulk` swaps in a decoder that reserves by the declared
//! bulk length.
#![no_main]

use refloop::check::framing::TrackingAlloc;
use refloop_integration::resp::case::RespCase;

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    RespCase::from_fuzz_bytes(data).check_from_env();
});
