//! proptest strategies for [`SimCase`]s: the real schedule's steps (its own strategy) mixed
//! with the sim-only steps, and knobs at their edges.
//!
//! Shrinking goes towards fewer steps, base steps, the loop's default knobs and Linux mode.

use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use refloop::os::errno;

use super::{CrowdEnd, FaultCall, Jump, KernelKnobs, Knobs, SimCase, SimStep};
use crate::schedule::{strategy as base, Wire, MAX_CLIENTS};

/// Cases of 1 to `max_steps` steps.
pub fn case(max_steps: usize) -> impl Strategy<Value = SimCase> {
    let wire = prop_oneof![3 => Just(Wire::LengthPrefixed), 2 => Just(Wire::Lines)];
    let clients = prop_oneof![6 => 1..=4u8, 3 => 5..=16u8, 1 => 17..=MAX_CLIENTS];
    (
        wire,
        knobs(),
        kernel(),
        clients,
        vec(step(), 1..=max_steps.max(1)),
    )
        .prop_map(|(wire, knobs, kernel, clients, steps)| SimCase {
            wire,
            knobs,
            kernel,
            steps: steps.into_iter().map(|s| with_client(s, clients)).collect(),
        })
}

fn with_client(step: SimStep, clients: u8) -> SimStep {
    let clients = clients.max(1);
    match step {
        // The base strategy's own slot folding.
        SimStep::Base(s) => SimStep::Base(base::with_client(s, clients)),
        SimStep::ConnectOut { client, greet } => SimStep::ConnectOut {
            client: client % clients,
            greet,
        },
        SimStep::Pipeline { client, count, len } => SimStep::Pipeline {
            client: client % clients,
            count,
            len,
        },
        other => other,
    }
}

/// The loop's defaults first (what shrinking goes to), then the edges.
pub fn knobs() -> impl Strategy<Value = Knobs> {
    let read_chunk = prop_oneof![4 => Just(65_536u32), 2 => Just(4096u32), 1 => Just(512u32), 1 => Just(64u32), 1 => Just(7u32), 1 => Just(1u32)];
    let budget = prop_oneof![4 => Just(262_144u32), 2 => Just(8192u32), 1 => Just(512u32), 1 => Just(64u32), 1 => Just(1u32)];
    let high = prop_oneof![3 => Just(1u32 << 20), 2 => Just(16_384u32), 2 => Just(1024u32), 1 => Just(64u32), 1 => Just(1u32)];
    let low = prop_oneof![5 => Just(0u8), 2 => Just(1u8), 2 => Just(2u8), 1 => Just(3u8)];
    let idle = prop_oneof![
        3 => Just(None),
        2 => Just(Some(Duration::from_secs(300))),
        2 => Just(Some(Duration::from_millis(50))),
        1 => Just(Some(Duration::from_secs(1))),
        1 => Just(Some(Duration::MAX)),
    ];
    let linger = prop_oneof![3 => Just(Duration::from_secs(2)), 2 => Just(Duration::from_millis(20)), 1 => Just(Duration::from_millis(1)), 1 => Just(Duration::MAX)];
    let shutdown = prop_oneof![3 => Just(Duration::from_secs(5)), 2 => Just(Duration::from_millis(5)), 1 => Just(Duration::MAX)];
    let max_conn = prop_oneof![6 => Just(16_384u32), 1 => Just(1u32), 1 => Just(2u32)];
    let sndbuf = prop_oneof![3 => Just(Some(4096u32)), 2 => Just(None), 1 => Just(Some(32_768u32)), 1 => Just(Some(512u32))];
    (
        (read_chunk, budget, high, low),
        (idle, linger, shutdown, max_conn, sndbuf),
    )
        .prop_map(
            |(
                (read_chunk, fairness_budget, high_watermark, low),
                (idle_timeout, close_linger, shutdown_timeout, max_connections, server_sndbuf),
            )| Knobs {
                read_chunk,
                fairness_budget,
                high_watermark,
                low_watermark: match low {
                    0 => (high_watermark / 4).max(1),
                    1 => high_watermark,
                    _ => 1,
                },
                idle_timeout,
                close_linger,
                shutdown_timeout,
                max_connections,
                server_sndbuf,
            },
        )
}

/// Linux mode with the default buffers first.
pub fn kernel() -> impl Strategy<Value = KernelKnobs> {
    let buffers = prop_oneof![5 => Just((16_384u32, 65_536u32)), 2 => Just((4096, 4096)), 1 => Just((61, 97))];
    (
        prop::bool::weighted(0.25),
        any::<u64>(),
        prop_oneof![Just(0u32), Just(100_000u32), Just(400_000u32)],
        prop_oneof![Just(0u32), Just(200_000u32), Just(500_000u32)],
        buffers,
    )
        .prop_map(
            |(minimal, seed, spurious, defer, (send_buffer, recv_buffer))| KernelKnobs {
                minimal,
                seed,
                spurious_ppm: if minimal { spurious } else { 0 },
                defer_ppm: if minimal { defer } else { 0 },
                send_buffer,
                recv_buffer,
            },
        )
}

/// One step: a base step most of the time.
pub fn step() -> impl Strategy<Value = SimStep> {
    let client = 0..MAX_CLIENTS;
    let accept_errno = prop_oneof![
        Just(errno::EMFILE),
        Just(errno::ENFILE),
        Just(errno::ENOBUFS),
        Just(errno::ENOMEM),
        Just(errno::ECONNABORTED),
        Just(errno::EPROTO),
        Just(errno::EINTR),
    ];
    let fault = prop_oneof![
        4 => (accept_errno, 0..=3u8).prop_map(|(errno, after)| SimStep::Fault { call: FaultCall::Accept, errno, after }),
        1 => (prop_oneof![Just(FaultCall::Read), Just(FaultCall::Write), Just(FaultCall::EpollWait), Just(FaultCall::EventfdRead)], 0..=3u8)
            .prop_map(|(call, after)| SimStep::Fault { call, errno: errno::EINTR, after }),
    ];
    let jump = prop_oneof![
        2 => Just(Jump::PastIdle),
        1 => Just(Jump::PastLinger),
        1 => Just(Jump::PastShutdown),
        2 => (1..=100u16).prop_map(Jump::Millis),
    ];
    let crowd_end = prop_oneof![3 => Just(CrowdEnd::Close), 1 => Just(CrowdEnd::Reset), 1 => Just(CrowdEnd::HalfClose), 1 => Just(CrowdEnd::Stay)];
    prop_oneof![
        60 => base::step().prop_map(SimStep::Base),
        6 => fault,
        7 => (2..=6u8).prop_map(|steps| SimStep::Burst { steps }),
        6 => jump.prop_map(SimStep::Advance),
        5 => (client.clone(), prop_oneof![1 => Just(0u32), 2 => 1..=2048u32]).prop_map(|(client, greet)| SimStep::ConnectOut { client, greet }),
        7 => (client, 2..=24u8, prop_oneof![3 => 13..=64u32, 2 => 65..=1024u32, 1 => 1025..=8192u32]).prop_map(|(client, count, len)| SimStep::Pipeline { client, count, len }),
        5 => (prop_oneof![2 => 2..=16u8, 1 => 64..=120u8], crowd_end).prop_map(|(count, then)| SimStep::Crowd { count, then }),
        2 => Just(SimStep::Shutdown),
    ]
}
