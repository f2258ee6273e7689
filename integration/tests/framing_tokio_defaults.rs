//! refloop's default framing limits are tokio-util's (a test added to kill mutation survivors;
//! see VERIFICATION.md, mutation testing).

use refloop::framing::{Framing, LengthPrefixed};
use tokio_util::codec::LengthDelimitedCodec;

#[test]
fn length_prefixed_default_limit_is_tokio_utils_length_delimited_default() {
    let tokio = LengthDelimitedCodec::new().max_frame_length();
    assert_eq!(LengthPrefixed::DEFAULT_MAX_FRAME_LEN, tokio);
    assert_eq!(LengthPrefixed::default().max_frame_len(), tokio);
    // A header one byte over the default is refused by both; one at the default is not.
    let mut framing = LengthPrefixed::default();
    let over = u32::try_from(tokio + 1).unwrap().to_be_bytes();
    assert!(framing.decode(&over).is_err());
    let at = u32::try_from(tokio).unwrap().to_be_bytes();
    assert!(LengthPrefixed::default().decode(&at).is_ok());
}
