//! `arbitrary::Arbitrary` for [`Schedule`], so a fuzzer's bytes drive the same executor as
//! proptest's strategies.
//!
//! The distributions follow [`strategy`](super::strategy); every decoded schedule is valid, and
//! running out of bytes simply ends the schedule.

use arbitrary::{Arbitrary, Result, Unstructured};

use super::wire::MAX_PAYLOAD;
use super::{Buffer, Malformation, Schedule, Step, Tuning, Wire, MAX_CLIENTS, SENDER_THREADS};

/// The most steps a fuzzer-built schedule has.
pub const MAX_FUZZ_STEPS: usize = 64;

impl<'a> Arbitrary<'a> for Schedule {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let wire = if u.ratio(2, 5)? {
            Wire::Lines
        } else {
            Wire::LengthPrefixed
        };
        let tuning = Tuning {
            read_chunk: match u.int_in_range(0..=5u8)? {
                0..=2 => 64 * 1024,
                3 | 4 => 4096,
                _ => 512,
            },
            high_watermark: if u.ratio(1, 3)? {
                16 * 1024
            } else {
                1024 * 1024
            },
            fairness_budget: if u.ratio(1, 3)? { 8 * 1024 } else { 256 * 1024 },
            server_sndbuf: match u.int_in_range(0..=6u8)? {
                0..=4 => Some(4096),
                5 => Some(32 * 1024),
                _ => None,
            },
        };
        let clients = match u.int_in_range(0..=9u8)? {
            0..=4 => u.int_in_range(1..=4u8)?,
            5..=7 => u.int_in_range(5..=16u8)?,
            _ => u.int_in_range(17..=MAX_CLIENTS)?,
        };
        let mut steps = Vec::new();
        while steps.len() < MAX_FUZZ_STEPS && !u.is_empty() {
            steps.push(step(u, clients)?);
        }
        Ok(Schedule {
            wire,
            tuning,
            steps,
        })
    }

    fn size_hint(_depth: usize) -> (usize, Option<usize>) {
        (2, None)
    }
}

pub(crate) fn payload_len(u: &mut Unstructured<'_>) -> Result<u32> {
    Ok(match u.int_in_range(0..=14u8)? {
        0..=4 => u.int_in_range(1..=64u32)?,
        5..=7 => u.int_in_range(65..=2048u32)?,
        8 | 9 => u.int_in_range(2049..=32_767u32)?,
        10..=13 => u.int_in_range(32_768..=MAX_PAYLOAD)?,
        _ => 0,
    })
}

fn chunks(u: &mut Unstructured<'_>) -> Result<Vec<u16>> {
    let (max, n) = match u.int_in_range(0..=6u8)? {
        0..=2 => return Ok(Vec::new()),
        3 | 4 => (16, u.int_in_range(1..=3usize)?),
        _ => (4096, u.int_in_range(1..=3usize)?),
    };
    (0..n).map(|_| u.int_in_range(1..=max)).collect()
}

pub(crate) fn step(u: &mut Unstructured<'_>, clients: u8) -> Result<Step> {
    let client = u.int_in_range(0..=clients - 1)?;
    // The weights of `strategy::step`, in its order: 8 26 7 14 5 5 6 14 4 9 5 6 (sum 109).
    let pick = u.int_in_range(0..=108u8)?;
    Ok(match pick {
        0..=7 => Step::Connect { client },
        8..=33 => Step::Send {
            client,
            len: payload_len(u)?,
            chunks: chunks(u)?,
            yields: u.ratio(3, 10)?,
        },
        34..=40 => Step::ReadSmall {
            client,
            buf: u.int_in_range(1..=512u16)?,
        },
        41..=54 => Step::Pause {
            client,
            steps: u.int_in_range(1..=24u8)?,
        },
        55..=59 => Step::HalfClose { client },
        60..=64 => Step::Close { client },
        65..=70 => Step::Reset { client },
        71..=84 => Step::CrossSend {
            client,
            thread: u.int_in_range(0..=SENDER_THREADS)?,
            count: if u.ratio(3, 4)? {
                u.int_in_range(1..=8u8)?
            } else {
                u.int_in_range(9..=64u8)?
            },
            len: if u.ratio(3, 4)? {
                u.int_in_range(13..=256u32)?
            } else {
                u.int_in_range(257..=16_384u32)?
            },
            stale: u.ratio(1, 4)?,
        },
        85..=88 => Step::Malformed {
            client,
            kind: if u.arbitrary()? {
                Malformation::Garbage
            } else {
                Malformation::TooLong
            },
        },
        89..=97 => Step::ShrinkBuffer {
            client,
            which: if u.ratio(1, 4)? {
                Buffer::Send
            } else {
                Buffer::Recv
            },
            bytes: if u.arbitrary()? {
                u.int_in_range(1..=4096u32)?
            } else {
                u.int_in_range(4097..=65_536u32)?
            },
        },
        98..=102 => Step::Sync { client },
        _ => Step::HoldLoop {
            client,
            steps: u.int_in_range(1..=6u8)?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_bytes_decode_to_a_valid_schedule() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in 0..200 {
            let data: Vec<u8> = (0..len * 7)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let s = Schedule::from_fuzz_bytes(&data);
            assert!(s.steps.len() <= MAX_FUZZ_STEPS);
            assert!(s.clients() <= usize::from(MAX_CLIENTS));
            for step in &s.steps {
                if let Step::Send { len, .. } | Step::CrossSend { len, .. } = step {
                    assert!(*len <= MAX_PAYLOAD);
                }
                if let Step::CrossSend { thread, .. } = step {
                    assert!(*thread <= SENDER_THREADS);
                }
            }
        }
    }
}
