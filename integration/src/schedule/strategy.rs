//! proptest strategies for [`Schedule`]s.
//!
//! The weights are tuned so that most schedules reach the loop's hard paths (the reach figures
//! are measured and printed by `schedule_invariants`): a paused or slow reader with a shrunk
//! `SO_RCVBUF` facing large echoes forces the server into partial writes, and resets, closes,
//! half-closes and malformed frames each appear in a good share of schedules.
//!
//! Shrinking goes towards fewer steps, fewer clients (the slot of every step is taken modulo a
//! client count that itself shrinks towards one), shorter messages, whole-frame writes and the
//! earlier (simpler) alternative of every choice.

use proptest::collection::vec;
use proptest::prelude::*;

use super::wire::MAX_PAYLOAD;
use super::{Buffer, Malformation, Schedule, Step, Tuning, Wire, MAX_CLIENTS, SENDER_THREADS};

/// The CI default for the number of steps in one schedule.
pub const DEFAULT_MAX_STEPS: usize = 40;

/// Schedules of 1 to `max_steps` steps over 1 to [`MAX_CLIENTS`] clients, most over a few.
pub fn schedule(max_steps: usize) -> impl Strategy<Value = Schedule> {
    let wire = prop_oneof![3 => Just(Wire::LengthPrefixed), 2 => Just(Wire::Lines)];
    let clients = prop_oneof![
        5 => 1..=4u8,
        3 => 5..=16u8,
        2 => 17..=MAX_CLIENTS,
    ];
    (wire, tuning(), clients, vec(step(), 1..=max_steps.max(1))).prop_map(
        |(wire, tuning, clients, steps)| {
            let steps = steps.into_iter().map(|s| with_client(s, clients)).collect();
            Schedule {
                wire,
                tuning,
                steps,
            }
        },
    )
}

/// The loop's defaults first (what shrinking goes to), then small reads, an early high
/// watermark and a small fairness budget; the server's send buffer is small by default.
pub fn tuning() -> impl Strategy<Value = Tuning> {
    let read_chunk = prop_oneof![3 => Just(64 * 1024u32), 2 => Just(4096u32), 1 => Just(512u32)];
    let high_watermark = prop_oneof![2 => Just(1024 * 1024u32), 1 => Just(16 * 1024u32)];
    let fairness_budget = prop_oneof![2 => Just(256 * 1024u32), 1 => Just(8 * 1024u32)];
    // A small send buffer first: it is what makes the loop's writes partial on loopback.
    let server_sndbuf = prop_oneof![
        5 => Just(Some(4096u32)),
        1 => Just(Some(32 * 1024u32)),
        1 => Just(None),
    ];
    (read_chunk, high_watermark, fairness_budget, server_sndbuf).prop_map(
        |(read_chunk, high_watermark, fairness_budget, server_sndbuf)| Tuning {
            read_chunk,
            high_watermark,
            fairness_budget,
            server_sndbuf,
        },
    )
}

/// Replaces the slot of `step` by its value modulo `clients`.
pub(crate) fn with_client(mut step: Step, clients: u8) -> Step {
    let c = step.client() % clients.max(1);
    match &mut step {
        Step::Connect { client }
        | Step::Send { client, .. }
        | Step::ReadSmall { client, .. }
        | Step::Pause { client, .. }
        | Step::HalfClose { client }
        | Step::Close { client }
        | Step::Reset { client }
        | Step::CrossSend { client, .. }
        | Step::Malformed { client, .. }
        | Step::ShrinkBuffer { client, .. }
        | Step::Sync { client }
        | Step::HoldLoop { client, .. } => *client = c,
    }
    step
}

/// Payload lengths: mostly small, a good share of 32 KiB or more (enough to make one echo a
/// partial write into the server's small send buffer), and an occasional empty frame.
pub fn payload_len() -> impl Strategy<Value = u32> {
    prop_oneof![
        5 => 1..=64u32,
        3 => 65..=2048u32,
        2 => 2049..=32_767u32,
        4 => 32_768..=MAX_PAYLOAD,
        1 => Just(0u32),
    ]
}

/// Write piece sizes: one write for the whole frame, single bytes, or small or large pieces.
fn chunks() -> impl Strategy<Value = Vec<u16>> {
    prop_oneof![
        3 => Just(Vec::new()),
        2 => vec(1..=16u16, 1..4),
        2 => vec(1..=4096u16, 1..4),
    ]
}

/// One step on a slot below [`MAX_CLIENTS`] (to be taken modulo the client count).
pub fn step() -> impl Strategy<Value = Step> {
    let client = 0..MAX_CLIENTS;
    prop_oneof![
        8 => client.clone().prop_map(|client| Step::Connect { client }),
        26 => (client.clone(), payload_len(), chunks(), prop::bool::weighted(0.3)).prop_map(
            |(client, len, chunks, yields)| Step::Send { client, len, chunks, yields }
        ),
        7 => (client.clone(), 1..=512u16).prop_map(|(client, buf)| Step::ReadSmall { client, buf }),
        14 => (client.clone(), 1..=24u8).prop_map(|(client, steps)| Step::Pause { client, steps }),
        5 => client.clone().prop_map(|client| Step::HalfClose { client }),
        5 => client.clone().prop_map(|client| Step::Close { client }),
        6 => client.clone().prop_map(|client| Step::Reset { client }),
        14 => (
            client.clone(),
            0..=SENDER_THREADS,
            prop_oneof![3 => 1..=8u8, 1 => 9..=64u8],
            prop_oneof![3 => 13..=256u32, 1 => 257..=16_384u32],
            prop::bool::weighted(0.25),
        )
            .prop_map(|(client, thread, count, len, stale)| Step::CrossSend {
                client,
                thread,
                count,
                len,
                stale
            }),
        4 => (
            client.clone(),
            prop_oneof![Just(Malformation::TooLong), Just(Malformation::Garbage)]
        )
            .prop_map(|(client, kind)| Step::Malformed { client, kind }),
        9 => (
            client.clone(),
            prop_oneof![3 => Just(Buffer::Recv), 1 => Just(Buffer::Send)],
            prop_oneof![1..=4096u32, 4097..=65_536u32],
        )
            .prop_map(|(client, which, bytes)| Step::ShrinkBuffer { client, which, bytes }),
        5 => client.clone().prop_map(|client| Step::Sync { client }),
        6 => (client.clone(), 1..=6u8).prop_map(|(client, steps)| Step::HoldLoop { client, steps }),
    ]
}
