//! How a user runs the framing oracle under proptest: a strategy for the stream and the cuts,
//! and one call. Shown here on `Lines` (swap in your own framing's constructor).

use proptest::prelude::*;
use refloop::check::framing::{check_round_trip, check_stream, TrackingAlloc};
use refloop::framing::Lines;

// Optional: lets the oracle also check what `decode` allocates.
#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

proptest! {
    #[test]
    fn user_framing_passes_the_oracle_on_any_bytes(
        stream in prop::collection::vec(any::<u8>(), 0..256),
        cuts in prop::collection::vec(0usize..256, 0..8),
    ) {
        check_stream(|| Lines::new(64), &stream, &cuts);
    }

    #[test]
    fn user_framing_round_trips_any_lines(
        lines in prop::collection::vec("[^\n]{0,80}", 0..6),
        cuts in prop::collection::vec(0usize..512, 0..8),
    ) {
        check_round_trip(|| Lines::new(64), &lines, &cuts);
    }
}
