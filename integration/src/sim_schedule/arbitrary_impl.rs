//! `arbitrary::Arbitrary` for [`SimCase`]: the fuzz target's decoding, and (over seeded bytes)
//! what a seed means.
//!
//! Base steps come from the real schedule's own `Arbitrary` step decoder, so a sim case is a
//! real schedule with sim-only steps mixed in. Knobs pick the loop's defaults most of the time
//! and their edges the rest: 1-byte reads and budgets, 1-byte and equal watermarks, idle
//! timeouts of 50 ms, 5 minutes and `Duration::MAX`, a 1 ms linger, one or two connections.

use std::time::Duration;

use arbitrary::{Arbitrary, Result, Unstructured};
use refloop::os::errno;

use super::{CrowdEnd, FaultCall, Jump, KernelKnobs, Knobs, SimCase, SimStep};
use crate::schedule::arbitrary_impl as base;
use crate::schedule::{Wire, MAX_CLIENTS};

/// The most steps a case has.
pub const MAX_STEPS: usize = 40;

/// Decodes a case; running out of bytes ends the steps early (an empty input gives the empty
/// case with default knobs).
pub(super) fn decode(data: &[u8]) -> SimCase {
    let mut u = Unstructured::new(data);
    match SimCase::arbitrary(&mut u) {
        Ok(case) => case,
        // Reason: decoding only fails on exhausted input; the empty case is its natural reading.
        Err(_) => SimCase {
            wire: Wire::LengthPrefixed,
            knobs: Knobs::from_tuning(&crate::schedule::Tuning::default()),
            kernel: KernelKnobs::default(),
            steps: Vec::new(),
        },
    }
}

fn pick<T: Copy>(u: &mut Unstructured<'_>, weighted: &[(u32, T)]) -> Result<T> {
    let total: u32 = weighted.iter().map(|(w, _)| w).sum();
    let mut at = u.int_in_range(0..=total - 1)?;
    for &(w, v) in weighted {
        if at < w {
            return Ok(v);
        }
        at -= w;
    }
    Ok(weighted[weighted.len() - 1].1)
}

/// The loop's knobs: defaults first, then edges.
pub(crate) fn knobs(u: &mut Unstructured<'_>) -> Result<Knobs> {
    let read_chunk = pick(
        u,
        &[(4, 65_536), (2, 4096), (1, 512), (1, 64), (1, 7), (1, 1)],
    )?;
    let fairness_budget = pick(u, &[(4, 262_144), (2, 8192), (1, 512), (1, 64), (1, 1)])?;
    let high_watermark = pick(u, &[(3, 1 << 20), (2, 16_384), (2, 1024), (1, 64), (1, 1)])?;
    let low_watermark = match pick(u, &[(5, 0u8), (2, 1), (2, 2), (1, 3)])? {
        0 => (high_watermark / 4).max(1),
        1 => high_watermark,
        2 => 1,
        // Invalid: the server must refuse it (review bug 6 was `low_watermark: 0`).
        _ if u.ratio(1, 8)? => 0,
        _ => 1,
    };
    let idle_timeout = pick(
        u,
        &[
            (3, None),
            (2, Some(Duration::from_secs(300))),
            (2, Some(Duration::from_millis(50))),
            (1, Some(Duration::from_secs(1))),
            (1, Some(Duration::MAX)),
        ],
    )?;
    let close_linger = pick(
        u,
        &[
            (3, Duration::from_secs(2)),
            (2, Duration::from_millis(20)),
            (1, Duration::from_millis(1)),
            (1, Duration::MAX),
        ],
    )?;
    let shutdown_timeout = pick(
        u,
        &[
            (3, Duration::from_secs(5)),
            (2, Duration::from_millis(5)),
            (1, Duration::MAX),
        ],
    )?;
    let max_connections = pick(u, &[(6, 16_384), (1, 1), (1, 2)])?;
    let server_sndbuf = pick(
        u,
        &[
            (3, Some(4096)),
            (2, None),
            (1, Some(32_768)),
            (1, Some(512)),
        ],
    )?;
    Ok(Knobs {
        read_chunk,
        fairness_budget,
        high_watermark,
        low_watermark,
        idle_timeout,
        close_linger,
        shutdown_timeout,
        max_connections,
        server_sndbuf,
    })
}

/// The kernel: Linux mode with default buffers most of the time.
pub(crate) fn kernel(u: &mut Unstructured<'_>) -> Result<KernelKnobs> {
    let minimal = u.ratio(1, 4)?;
    let (spurious_ppm, defer_ppm) = if minimal {
        (
            pick(u, &[(1, 0), (1, 100_000), (1, 400_000)])?,
            pick(u, &[(1, 0), (1, 200_000), (1, 500_000)])?,
        )
    } else {
        (0, 0)
    };
    let (send_buffer, recv_buffer) = pick(
        u,
        &[(5, (16_384, 65_536)), (2, (4096, 4096)), (1, (61, 97))],
    )?;
    Ok(KernelKnobs {
        minimal,
        seed: u.arbitrary()?,
        spurious_ppm,
        defer_ppm,
        send_buffer,
        recv_buffer,
    })
}

const ACCEPT_ERRNOS: [i32; 7] = [
    errno::EMFILE,
    errno::ENFILE,
    errno::ENOBUFS,
    errno::ENOMEM,
    errno::ECONNABORTED,
    errno::EPROTO,
    errno::EINTR,
];

/// One step; `clients` bounds the base steps' slots.
pub(crate) fn step(u: &mut Unstructured<'_>, clients: u8) -> Result<SimStep> {
    let client = u.int_in_range(0..=clients - 1)?;
    Ok(match u.int_in_range(0..=99u8)? {
        0..=59 => SimStep::Base(base::step(u, clients)?),
        60..=65 => {
            let call = pick(
                u,
                &[
                    (4, FaultCall::Accept),
                    (1, FaultCall::Read),
                    (1, FaultCall::Write),
                    (1, FaultCall::EpollWait),
                    (1, FaultCall::EventfdRead),
                ],
            )?;
            let errno = match call {
                FaultCall::Accept => *u.choose(&ACCEPT_ERRNOS)?,
                _ => errno::EINTR,
            };
            let after = pick(u, &[(4, 0), (1, 1), (1, 3)])?;
            SimStep::Fault { call, errno, after }
        }
        66..=72 => SimStep::Burst {
            steps: u.int_in_range(2..=6)?,
        },
        73..=78 => SimStep::Advance(pick(
            u,
            &[
                (2, Jump::PastIdle),
                (1, Jump::PastLinger),
                (1, Jump::PastShutdown),
                (2, Jump::Millis(0)),
            ],
        )?)
        .with_millis(u)?,
        79..=83 => SimStep::ConnectOut {
            client,
            greet: if u.ratio(2, 3)? {
                u.int_in_range(1..=2048)?
            } else {
                0
            },
        },
        84..=90 => SimStep::Pipeline {
            client,
            count: u.int_in_range(2..=24)?,
            len: pipeline_len(u)?,
        },
        91..=95 => SimStep::Crowd {
            count: crowd_count(u)?,
            then: pick(
                u,
                &[
                    (3, CrowdEnd::Close),
                    (1, CrowdEnd::Reset),
                    (1, CrowdEnd::HalfClose),
                    (1, CrowdEnd::Stay),
                ],
            )?,
        },
        96..=97 => SimStep::Shutdown,
        _ => SimStep::Base(base::step(u, clients)?),
    })
}

fn pipeline_len(u: &mut Unstructured<'_>) -> Result<u32> {
    match pick(u, &[(3, 0u8), (2, 1), (1, 2)])? {
        0 => u.int_in_range(13..=64),
        1 => u.int_in_range(65..=1024),
        _ => u.int_in_range(1025..=8192),
    }
}

/// Mostly small crowds; a third are large enough to close more connections than the timer
/// heap's slack (64) in one go.
fn crowd_count(u: &mut Unstructured<'_>) -> Result<u8> {
    if u.ratio(2, 3)? {
        u.int_in_range(2..=16)
    } else {
        u.int_in_range(64..=120)
    }
}

impl SimStep {
    fn with_millis(self, u: &mut Unstructured<'_>) -> Result<SimStep> {
        Ok(match self {
            SimStep::Advance(Jump::Millis(_)) => {
                SimStep::Advance(Jump::Millis(u.int_in_range(1..=100)?))
            }
            other => other,
        })
    }
}

impl<'a> Arbitrary<'a> for SimCase {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let wire = if u.ratio(2, 5)? {
            Wire::Lines
        } else {
            Wire::LengthPrefixed
        };
        let knobs = knobs(u)?;
        let kernel = kernel(u)?;
        let clients = match u.int_in_range(0..=9u8)? {
            0..=5 => u.int_in_range(1..=4u8)?,
            6..=8 => u.int_in_range(5..=16u8)?,
            _ => u.int_in_range(17..=MAX_CLIENTS)?,
        };
        let len = u.int_in_range(1..=MAX_STEPS)?;
        let mut steps = Vec::with_capacity(len);
        while steps.len() < len && !u.is_empty() {
            steps.push(step(u, clients)?);
        }
        Ok(SimCase {
            wire,
            knobs,
            kernel,
            steps,
        })
    }

    fn size_hint(_depth: usize) -> (usize, Option<usize>) {
        (16, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_bytes_decode_to_a_case_within_bounds() {
        for seed in 0..300u64 {
            let case = SimCase::from_seed(seed);
            assert!(case.steps.len() <= MAX_STEPS);
            assert!(case.knobs.read_chunk > 0 && case.knobs.fairness_budget > 0);
            for s in &case.steps {
                if let SimStep::Base(b) = s {
                    assert!(b.client() < MAX_CLIENTS);
                }
            }
        }
        assert_eq!(SimCase::from_seed(7), SimCase::from_seed(7));
        assert_eq!(decode(&[]).steps.len(), 0);
    }
}
