//! Hand-written schedules, one per hard path, each asserting that it reaches the path it is
//! named after and that every invariant holds there.
//! They pin the scenarios the random schedules are tuned to reach.

use refloop_integration::schedule::exec::{self, Outcome};
use refloop_integration::schedule::{Buffer, Malformation, Schedule, Step, Tuning, Wire};

fn run(wire: Wire, tuning: Tuning, steps: Vec<Step>) -> Outcome {
    let schedule = Schedule {
        wire,
        tuning,
        steps,
    };
    match exec::run(&schedule, &exec::Options::from_env()) {
        Ok(outcome) => outcome,
        Err(e) => panic!("{e}\n{schedule}"),
    }
}

fn send(client: u8, len: u32) -> Step {
    Step::Send {
        client,
        len,
        chunks: Vec::new(),
        yields: false,
    }
}

#[test]
fn paused_reader_with_small_rcvbuf_forces_partial_writes_and_still_gets_every_echo() {
    for wire in [Wire::LengthPrefixed, Wire::Lines] {
        let outcome = run(
            wire,
            Tuning {
                server_sndbuf: Some(4096),
                ..Tuning::default()
            },
            vec![
                Step::ShrinkBuffer {
                    client: 0,
                    which: Buffer::Recv,
                    bytes: 1,
                },
                Step::Pause {
                    client: 0,
                    steps: 10,
                },
                send(0, 60_000),
                send(0, 60_000),
                send(0, 60_000),
                send(1, 10),
            ],
        );
        assert!(outcome.reach.partial_write, "{wire:?}: {:?}", outcome.stats);
        assert!(outcome.fds_checked);
    }
}

#[test]
fn reset_client_is_reported_as_reset_and_others_keep_their_echoes() {
    let outcome = run(
        Wire::LengthPrefixed,
        Tuning::default(),
        vec![
            send(0, 100),
            send(1, 100),
            Step::Reset { client: 0 },
            Step::Sync { client: 0 },
            send(1, 5),
        ],
    );
    assert!(outcome.reach.rst);
}

#[test]
fn half_closed_client_still_receives_every_echo() {
    let outcome = run(
        Wire::Lines,
        Tuning::default(),
        vec![
            Step::Pause {
                client: 0,
                steps: 5,
            },
            send(0, 30_000),
            send(0, 30_000),
            Step::HalfClose { client: 0 },
        ],
    );
    assert!(outcome.reach.half_close);
}

#[test]
fn malformed_frame_disconnects_only_its_sender() {
    for wire in [Wire::LengthPrefixed, Wire::Lines] {
        for kind in [Malformation::TooLong, Malformation::Garbage] {
            let outcome = run(
                wire,
                Tuning::default(),
                vec![
                    send(0, 50),
                    send(1, 50),
                    Step::Malformed { client: 0, kind },
                    send(1, 70),
                ],
            );
            assert!(outcome.reach.framing_error, "{wire:?} {kind:?}");
        }
    }
}

#[test]
fn stale_handle_and_stale_id_are_refused_after_the_slot_is_reused() {
    let outcome = run(
        Wire::LengthPrefixed,
        Tuning::default(),
        vec![
            Step::Connect { client: 0 },
            Step::Sync { client: 0 },
            Step::Close { client: 0 },
            Step::Sync { client: 0 },
            Step::Connect { client: 1 },
            Step::Sync { client: 1 },
            // Odd count: through `LoopHandle::send_to` with the stale id; even: the stale handle.
            Step::CrossSend {
                client: 0,
                thread: 0,
                count: 1,
                len: 20,
            },
            Step::CrossSend {
                client: 0,
                thread: 0,
                count: 2,
                len: 20,
            },
            send(1, 10),
        ],
    );
    assert!(outcome.reach.stale_send);
}

#[test]
fn cross_thread_sends_over_the_high_watermark_come_back_full() {
    let outcome = run(
        Wire::LengthPrefixed,
        Tuning {
            read_chunk: 4096,
            high_watermark: 16 * 1024,
            server_sndbuf: Some(4096),
            ..Tuning::default()
        },
        vec![
            Step::ShrinkBuffer {
                client: 0,
                which: Buffer::Recv,
                bytes: 1,
            },
            Step::Pause {
                client: 0,
                steps: 10,
            },
            Step::CrossSend {
                client: 0,
                thread: 1,
                count: 40,
                len: 4000,
            },
            Step::CrossSend {
                client: 0,
                thread: 0,
                count: 40,
                len: 4000,
            },
        ],
    );
    assert!(outcome.reach.full);
}
