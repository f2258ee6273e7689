//! loom models of the real loop: `Server::run` over the simulated kernel on one loom thread,
//! real `ConnHandle::send` / `LoopHandle::send_to` calls on others.
//!
//! Only the kernel is simulated; under `--cfg loom` its lock and condition variable, and every
//! atomic and lock the handles share with the loop, are loom's, so loom explores every
//! interleaving of the shipped cross-thread path within the preemption bound: the encode and
//! push, the eventfd write, the loop's eventfd reset, queue drain and socket write, and a close
//! or a shutdown racing all of that. The peer is played by the sim's driver from inside the
//! loop's `epoll_wait`. While a sender is still running and the peer has nothing to do, the
//! wait blocks (`DriverStep::Block`) until a sender acts; once every sender has finished, a
//! wait with nothing ready and no timeout is a stall (`DriverStep::Wait`): a wake-up was lost.
//! (Letting loom report the deadlock instead would also work, but loom aborts while unwinding
//! from one.)
//!
//! Each model checks exactly-once delivery (delivered to the peer, handed back as `Closed` or
//! `Full`, or counted in `on_disconnect`), per-sender order, and that a stale id never reaches
//! the connection that reused its slot.
#![cfg(loom)]

use std::sync::{Arc, Mutex};

use refloop::framing::Lines;
use refloop::reactor::KnownBad;
use refloop::sim::{Call, DriverStep, Fd, Kernel, KernelConfig, ReadEnd, Wait};
use refloop::{Config, Conn, ConnId, Disconnect, Endpoint, Handler, SendError, Server};
use refloop_model::{explore_with, loop_preemptions, rejects_with};

/// [`explore_with`] at the loop models' bound.
fn explore(name: &str, model: impl Fn() + Sync + Send + 'static) -> usize {
    explore_with(name, Some(loop_preemptions()), model)
}

/// [`rejects_with`] at the loop models' bound.
fn rejects(name: &str, expected: &str, model: impl Fn() + Sync + Send + 'static) -> usize {
    rejects_with(name, expected, Some(loop_preemptions()), model)
}

/// How one send ended, from the sender's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Ok,
    Closed,
    Full,
}

/// Which handle a sender uses.
#[derive(Debug, Clone, Copy)]
enum Route {
    /// `conn.handle()`.
    Handle,
    /// `conn.loop_handle().send_to(conn.id(), ..)`.
    ById,
}

/// What the model's threads record, checked once the loop has returned.
#[derive(Default)]
struct Record {
    /// (message, outcome) per send, in each sender's order.
    sent: Vec<(String, Sent)>,
    /// (connection, undelivered messages, unsent bytes) per disconnect.
    disconnects: Vec<(ConnId, usize, usize)>,
    /// Connections in the order they opened.
    opened: Vec<ConnId>,
}

/// Spawns the senders on the first connection, records disconnects.
struct Spawner {
    /// Per sender: its route and its messages.
    plan: Vec<(Route, Vec<String>)>,
    record: Arc<Mutex<Record>>,
    threads: Arc<Mutex<Vec<loom::thread::JoinHandle<()>>>>,
    /// Senders still running (a plain atomic: loom runs one thread at a time, and this only
    /// tells the peer whether anyone else can still act).
    running: Arc<std::sync::atomic::AtomicUsize>,
    /// The kernel, so a finishing sender can wake a wait that only it could end.
    kernel: Kernel,
}

impl Handler<Lines> for Spawner {
    fn on_connect(&mut self, conn: &Conn<'_, Lines>) {
        let first = {
            let mut record = self.record.lock().unwrap();
            record.opened.push(conn.id());
            record.opened.len() == 1
        };
        if !first {
            return;
        }
        for (route, messages) in std::mem::take(&mut self.plan) {
            let record = Arc::clone(&self.record);
            let running = Arc::clone(&self.running);
            let kernel = self.kernel.clone();
            // Relaxed: see the field; decremented by the sender as its last act.
            running.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut handle = conn.handle();
            let mut loop_handle = conn.loop_handle();
            let id = conn.id();
            let thread = loom::thread::spawn(move || {
                for msg in messages {
                    let result = match route {
                        Route::Handle => handle.send(msg.clone()),
                        Route::ById => loop_handle.send_to(id, msg.clone()),
                    };
                    let sent = match result {
                        Ok(()) => Sent::Ok,
                        Err(SendError::Closed(back)) => {
                            assert_eq!(back, msg, "Closed hands the message back");
                            Sent::Closed
                        }
                        Err(SendError::Full(back)) => {
                            assert_eq!(back, msg, "Full hands the message back");
                            Sent::Full
                        }
                        Err(e) => panic!("unexpected {e}"),
                    };
                    record.lock().unwrap().sent.push((msg, sent));
                }
                // Relaxed: as above.
                running.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                // Wakes a blocked wait (without an event: nothing epoll reports), so the peer
                // is asked again and sees that nobody else can act.
                kernel.advance(std::time::Duration::ZERO);
            });
            self.threads.lock().unwrap().push(thread);
        }
    }

    fn on_message(&mut self, _conn: &Conn<'_, Lines>, _msg: String) {}

    fn on_disconnect(&mut self, id: ConnId, d: Disconnect) {
        self.record
            .lock()
            .unwrap()
            .disconnects
            .push((id, d.undelivered_messages, d.unsent_bytes));
    }
}

/// How the peer behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// Reads; once it has `n` lines it asks the loop to shut down.
    ShutdownAfter(usize),
    /// Shuts its write half at once (the loop closes the connection), reads to EOF.
    HalfCloseAtOnce,
    /// Asks the loop to shut down at once, reads to EOF.
    LoopShutdownAtOnce,
    /// Half-closes the first connection, and once it is gone connects a second one, which
    /// takes the first one's slot; then asks for the shutdown.
    ReuseTheSlot,
}

/// What the peer read, per connection in the order it connected.
type Reads = Arc<Mutex<Vec<Vec<u8>>>>;

/// One execution: a loop over a fresh kernel, one client connected before `run`, the senders
/// of `plan` spawned on its connection, and the peer behaving as `peer`. Returns what the
/// threads recorded, what the peer read, and the eventfd writes the handles made.
fn execution(
    known_bad: KnownBad,
    plan: Vec<(Route, Vec<String>)>,
    peer: Peer,
) -> (Record, Vec<Vec<u8>>, u64) {
    let kernel = Kernel::new(KernelConfig {
        trace: false,
        ..KernelConfig::default()
    });
    let config = Config {
        idle_timeout: None,
        known_bad,
        ..Config::default()
    };
    let mut server = Server::with_os(kernel.clone(), Lines::new(64), config).unwrap();
    let addr = Endpoint::Tcp(server.listen("127.0.0.1:0").unwrap());
    let handle = server.handle();
    let first = kernel.peer().connect(&addr).unwrap();
    let reads: Reads = Arc::new(Mutex::new(vec![Vec::new()]));
    let mut clients: Vec<Option<Fd>> = vec![Some(first)];
    let mut shut = false;
    let mut half_closed = false;
    let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // The first call comes before `on_connect` spawned the senders: until then, act.
    let mut spawned = false;
    {
        let reads = Arc::clone(&reads);
        let running = Arc::clone(&running);
        kernel.set_driver(move |k: &Kernel, _wait: &Wait| {
            let p = k.peer();
            let mut progress = false;
            for (i, client) in clients.iter_mut().enumerate() {
                let Some(fd) = client else { continue };
                let (bytes, end) = p.read_available(fd);
                progress |= !bytes.is_empty();
                reads.lock().unwrap()[i].extend_from_slice(&bytes);
                if end != ReadEnd::WouldBlock {
                    *client = None;
                    progress = true;
                }
            }
            let lines = reads.lock().unwrap()[0]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            match peer {
                Peer::ShutdownAfter(n) if !shut && lines >= n => {
                    shut = true;
                    handle.shutdown();
                    progress = true;
                }
                Peer::HalfCloseAtOnce if !half_closed => {
                    half_closed = true;
                    let fd = clients[0].as_ref().expect("the first client is open");
                    p.shutdown(fd, refloop::os::Shutdown::Write).unwrap();
                    progress = true;
                }
                Peer::LoopShutdownAtOnce if !shut => {
                    shut = true;
                    handle.shutdown();
                    progress = true;
                }
                Peer::ReuseTheSlot if !half_closed => {
                    half_closed = true;
                    let fd = clients[0].as_ref().expect("the first client is open");
                    p.shutdown(fd, refloop::os::Shutdown::Write).unwrap();
                    progress = true;
                }
                Peer::ReuseTheSlot if clients.len() == 1 && clients[0].is_none() => {
                    // The first connection is gone: the next one takes its slot and fd.
                    clients.push(Some(p.connect(&addr).unwrap()));
                    reads.lock().unwrap().push(Vec::new());
                    progress = true;
                }
                Peer::ReuseTheSlot if clients.len() == 2 && !shut => {
                    shut = true;
                    handle.shutdown();
                    progress = true;
                }
                Peer::HalfCloseAtOnce if clients[0].is_none() && !shut => {
                    shut = true;
                    handle.shutdown();
                    progress = true;
                }
                _ => {}
            }
            // Relaxed: see `Spawner::running`.
            let senders = running.load(std::sync::atomic::Ordering::Relaxed);
            spawned |= senders > 0;
            if progress {
                DriverStep::Again
            } else if senders > 0 || !spawned {
                // Nothing for the peer to do: only a sender (or the accept) can move things.
                DriverStep::Block
            } else {
                // Nobody else can act: with nothing ready, this is a stall.
                DriverStep::Wait
            }
        });
    }
    let record = Arc::new(Mutex::new(Record::default()));
    let threads = Arc::new(Mutex::new(Vec::new()));
    let spawner = Spawner {
        plan,
        record: Arc::clone(&record),
        threads: Arc::clone(&threads),
        running,
        kernel: kernel.clone(),
    };
    server.run(spawner).expect("run");
    for thread in std::mem::take(&mut *threads.lock().unwrap()) {
        thread.join().unwrap();
    }
    kernel.clear_driver();
    let writes = kernel.calls(Call::EventfdWrite);
    let record = std::mem::take(&mut *record.lock().unwrap());
    let reads = reads.lock().unwrap().clone();
    (record, reads, writes)
}

/// The lines in `bytes`.
fn lines(bytes: &[u8]) -> Vec<String> {
    String::from_utf8(bytes.to_vec())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Exactly once on connection 0: every message sent `Ok` arrived once or is counted
/// undelivered; nothing else arrived; per-sender order holds.
fn check_exactly_once(record: &Record, reads: &[Vec<u8>]) {
    let got = lines(&reads[0]);
    let ok: Vec<&String> = record
        .sent
        .iter()
        .filter(|(_, s)| *s == Sent::Ok)
        .map(|(m, _)| m)
        .collect();
    for line in &got {
        assert!(ok.contains(&line), "only accepted messages arrive: {line}");
        assert_eq!(
            got.iter().filter(|l| *l == line).count(),
            1,
            "delivered at most once: {line}"
        );
    }
    let first = record.opened[0];
    let undelivered: usize = record
        .disconnects
        .iter()
        .filter(|(id, _, _)| *id == first)
        .map(|(_, n, _)| n)
        .sum();
    assert_eq!(
        ok.len(),
        got.len() + undelivered,
        "every accepted message is delivered or counted undelivered: {:?}",
        record.disconnects
    );
    // Per sender (messages named `<sender><index>`): delivered in send order.
    for sender in ["a", "b"] {
        let seq: Vec<&String> = got.iter().filter(|l| l.starts_with(sender)).collect();
        assert!(seq.windows(2).all(|w| w[0] < w[1]), "in order: {seq:?}");
    }
}

fn two_senders() -> Vec<(Route, Vec<String>)> {
    vec![
        (Route::Handle, vec!["a0".to_string()]),
        (Route::Handle, vec!["b0".to_string()]),
    ]
}

fn model_two_senders(known_bad: KnownBad) {
    let (record, reads, _) = execution(known_bad, two_senders(), Peer::ShutdownAfter(2));
    assert!(
        record.sent.iter().all(|(_, s)| *s == Sent::Ok),
        "no close: all taken"
    );
    check_exactly_once(&record, &reads);
}

#[test]
fn two_senders_one_message_each_are_delivered_exactly_once_without_a_lost_wakeup() {
    explore("loop_two_senders", || model_two_senders(KnownBad::None));
}

#[test]
fn teeth_skip_wake_loses_the_wakeup_in_the_loop_model() {
    rejects("loop_two_senders_skip_wake", "Stall", || {
        model_two_senders(KnownBad::SkipWake)
    });
}

#[test]
fn teeth_drain_before_eventfd_reset_loses_the_wakeup_in_the_loop_model() {
    rejects("loop_two_senders_drain_before_reset", "Stall", || {
        model_two_senders(KnownBad::DrainBeforeEventfdReset)
    });
}

#[test]
fn a_sender_racing_the_connections_close_is_delivered_handed_back_or_counted() {
    explore("loop_sender_vs_close", || {
        let plan = vec![(Route::Handle, vec!["a0".to_string()])];
        let (record, reads, _) = execution(KnownBad::None, plan, Peer::HalfCloseAtOnce);
        check_exactly_once(&record, &reads);
    });
}

#[test]
fn a_sender_racing_loop_shutdown_is_delivered_handed_back_or_counted() {
    explore("loop_sender_vs_shutdown", || {
        let plan = vec![(Route::Handle, vec!["a0".to_string()])];
        let (record, reads, _) = execution(KnownBad::None, plan, Peer::LoopShutdownAtOnce);
        check_exactly_once(&record, &reads);
    });
}

fn model_stale_id(known_bad: KnownBad) {
    let plan = vec![(Route::ById, vec!["a0".to_string()])];
    let (record, reads, _) = execution(known_bad, plan, Peer::ReuseTheSlot);
    if record.opened.len() == 2 {
        assert_eq!(
            record.opened[0].index(),
            record.opened[1].index(),
            "the second connection reused the slot"
        );
        assert!(
            lines(&reads[1]).is_empty(),
            "a stale id reached the connection that reused its slot: {:?}",
            lines(&reads[1])
        );
    }
    check_exactly_once(&record, &reads);
}

#[test]
fn a_stale_id_never_reaches_the_connection_that_reused_its_slot() {
    explore("loop_stale_id_vs_slot_reuse", || {
        model_stale_id(KnownBad::None)
    });
}

#[test]
fn teeth_ids_without_generation_reach_the_new_connection_in_the_loop_model() {
    rejects("loop_stale_id_no_generation", "a stale id reached", || {
        model_stale_id(KnownBad::NoGeneration)
    });
}

/// The fewest eventfd writes any execution of one sender's two messages made: 1 when the
/// second push rides on the first one's wake-up.
fn fewest_eventfd_writes(known_bad: KnownBad) -> u64 {
    let fewest = Arc::new(std::sync::atomic::AtomicU64::new(u64::MAX));
    let seen = Arc::clone(&fewest);
    explore("loop_eventfd_writes", move || {
        let plan = vec![(Route::Handle, vec!["a0".to_string(), "a1".to_string()])];
        let (record, reads, writes) = execution(known_bad, plan, Peer::ShutdownAfter(2));
        check_exactly_once(&record, &reads);
        // Relaxed: a statistic across executions, read after `explore` returns.
        seen.fetch_min(writes, std::sync::atomic::Ordering::Relaxed);
    });
    // Relaxed: as above.
    fewest.load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn the_second_push_of_a_batch_rides_on_the_first_ones_wakeup() {
    // One eventfd write for the shutdown command, one for the first push.
    let fewest = fewest_eventfd_writes(KnownBad::None);
    println!("@@stat loom-fewest-eventfd-writes correct {fewest}");
    assert_eq!(fewest, 2, "one wake-up for the batch, one for the shutdown");
}

#[test]
fn teeth_waking_on_every_push_shows_as_an_eventfd_write_count() {
    let fewest = fewest_eventfd_writes(KnownBad::WakeEveryPush);
    println!("@@stat loom-fewest-eventfd-writes wake_every_push {fewest}");
    assert!(fewest >= 3, "every push writes the eventfd: {fewest}");
}
