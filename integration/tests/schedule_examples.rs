//! Hand-written schedules, one per hard path, each asserting that it reaches the path it is
//! named after and that every invariant holds there.
//! They pin the scenarios the random schedules are tuned to reach.

use refloop::reactor::KnownBad;
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

/// Closes c0, waits until the server saw it, reconnects the slot (the server reuses the
/// connection slot and, most likely, the fd number), then sends to the old connection by its
/// stale id (odd count) and through its stale handle (even count).
fn slot_reuse_then_stale_sends() -> Vec<Step> {
    let stale = |count| Step::CrossSend {
        client: 0,
        thread: 0,
        count,
        len: 20,
        stale: true,
    };
    vec![
        Step::Connect { client: 0 },
        Step::Sync { client: 0 },
        Step::Close { client: 0 },
        Step::Sync { client: 0 },
        Step::Connect { client: 0 },
        Step::Sync { client: 0 },
        stale(1),
        stale(2),
        send(0, 10),
    ]
}

#[test]
fn stale_handle_and_stale_id_are_refused_after_the_slot_is_reused() {
    let outcome = run(
        Wire::LengthPrefixed,
        Tuning::default(),
        slot_reuse_then_stale_sends(),
    );
    assert!(outcome.reach.stale_send);
}

#[test]
fn stale_id_reaching_the_new_connection_is_rejected_as_foreign_bytes() {
    let schedule = Schedule {
        wire: Wire::LengthPrefixed,
        tuning: Tuning::default(),
        steps: slot_reuse_then_stale_sends(),
    };
    let bad = exec::Options {
        known_bad: KnownBad::NoGeneration,
        ..exec::Options::from_env()
    };
    let err = exec::run(&schedule, &bad).expect_err("ids without generation must be caught");
    assert!(err.contains("from another connection"), "{err}");
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
                stale: false,
            },
            Step::CrossSend {
                client: 0,
                thread: 0,
                count: 40,
                len: 4000,
                stale: false,
            },
        ],
    );
    assert!(outcome.reach.full);
}

#[test]
fn connections_queued_while_the_loop_is_held_are_all_accepted() {
    let steps = vec![
        Step::HoldLoop {
            client: 0,
            steps: 3,
        },
        Step::Connect { client: 1 },
        Step::Connect { client: 2 },
        Step::Connect { client: 3 },
        send(1, 10),
        send(2, 10),
        send(3, 10),
    ];
    let outcome = run(Wire::Lines, Tuning::default(), steps.clone());
    assert!(outcome.reach.held_wakeup);
    let schedule = Schedule {
        wire: Wire::Lines,
        tuning: Tuning::default(),
        steps,
    };
    let bad = exec::Options {
        known_bad: KnownBad::AcceptOnce,
        stall: std::time::Duration::from_millis(500),
        leak_socket: false,
        loops: 1,
    };
    let err = exec::run(&schedule, &bad).expect_err("accept-once must be caught");
    assert!(
        err.contains("accept") || err.contains("never reported"),
        "{err}"
    );
}

#[test]
fn bytes_arriving_faster_than_one_read_are_all_delivered() {
    // One 40 000-byte frame against 512-byte reads: the loop must read until EAGAIN.
    let steps = vec![send(0, 40_000)];
    let tuning = Tuning {
        read_chunk: 512,
        ..Tuning::default()
    };
    run(Wire::LengthPrefixed, tuning, steps.clone());
    let schedule = Schedule {
        wire: Wire::LengthPrefixed,
        tuning,
        steps,
    };
    let bad = exec::Options {
        known_bad: KnownBad::ReadOnce,
        stall: std::time::Duration::from_millis(500),
        leak_socket: false,
        loops: 1,
    };
    let err = exec::run(&schedule, &bad).expect_err("read-once must be caught");
    assert!(err.contains("stalled"), "{err}");
}

#[test]
fn a_socket_leaked_inside_a_run_is_caught_by_the_fd_comparison() {
    let schedule = Schedule {
        wire: Wire::LengthPrefixed,
        tuning: Tuning::default(),
        steps: vec![send(0, 10)],
    };
    let leaky = exec::Options {
        leak_socket: true,
        ..exec::Options::from_env()
    };
    let err = exec::run(&schedule, &leaky).expect_err("a leaked fd must be caught");
    assert!(err.contains("fd table changed"), "{err}");
    assert!(err.contains("socket:["), "{err}");
}
