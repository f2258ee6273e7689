//! `cargo fuzz run framing_tokio`: differential fuzzing of refloop's framings against
//! tokio-util's `LengthDelimitedCodec` and `LinesCodec` on the same fragmented streams.
#![no_main]

#[path = "../../integration/tests/framing_common/tokio_peer.rs"]
mod tokio_peer;

use refloop_integration::framing_case::{FramingCase, Subject};

libfuzzer_sys::fuzz_target!(|case: FramingCase| {
    let subject = Subject::from_env();
    let stream = case.stream(subject.family(case.which));
    tokio_peer::assert_agrees_with_tokio(
        subject,
        case.which,
        case.limit(),
        &stream,
        &case.cut_offsets(),
    );
});
