//! Decoding one maximal frame fed one byte at a time costs time linear in its size.
//!
//! Two independent measures: the framings' own count of bytes examined (exact and
//! deterministic), and wall-clock time for sizes `n` and `4n` (a ratio, never an absolute
//! time). Both are shown to reject `RescanningLines`, which rescans from the start each call.

use std::time::{Duration, Instant};

use refloop::check::framing::known_bad::RescanningLines;
use refloop::framing::{Decoded, Framing, LengthPrefixed, Lines};

/// Feeds `stream` one byte at a time; returns the bytes examined and the elapsed time, or
/// `None` once `deadline` has passed.
fn feed_byte_by_byte<F: Framing>(
    framing: &mut F,
    stream: &[u8],
    deadline: Option<Duration>,
) -> Option<(u64, Duration)> {
    let started = Instant::now();
    let mut start = 0;
    for fed in 1..=stream.len() {
        loop {
            match framing.decode(&stream[start..fed]) {
                Ok(Decoded::Message(_, used)) => start += used,
                Ok(Decoded::NeedMore) => break,
                Err(e) => panic!("unexpected error {e}"),
            }
        }
        if fed % 1024 == 0 && deadline.is_some_and(|d| started.elapsed() > d) {
            return None;
        }
    }
    assert_eq!(start, stream.len(), "the stream must decode completely");
    Some((framing.bytes_examined().unwrap_or(0), started.elapsed()))
}

fn line(len: usize) -> Vec<u8> {
    let mut out = vec![b'x'; len];
    out.push(b'\n');
    out
}

fn frame(len: usize) -> Vec<u8> {
    let mut out = (len as u32).to_be_bytes().to_vec();
    out.resize(4 + len, 7);
    out
}

#[test]
fn lines_maximal_line_byte_by_byte_examines_each_byte_about_twice() {
    const N: usize = 1 << 16;
    let (examined, _) = feed_byte_by_byte(&mut Lines::new(N), &line(N), None).unwrap();
    // Once scanning for the newline, once validating UTF-8.
    assert_eq!(examined, 2 * N as u64 + 1);
    println!(
        "@@stat examined-per-byte lines_byte_by_byte {:.3}",
        examined as f64 / N as f64
    );
}

#[test]
fn length_prefixed_maximal_frame_byte_by_byte_examines_each_byte_once() {
    const N: usize = 1 << 16;
    let (examined, _) = feed_byte_by_byte(&mut LengthPrefixed::new(N), &frame(N), None).unwrap();
    assert_eq!(examined, 4 + N as u64);
}

#[test]
fn rescanning_lines_work_counter_grows_quadratically() {
    const N: usize = 4096;
    let (examined, _) = feed_byte_by_byte(&mut RescanningLines::new(N), &line(N), None).unwrap();
    // Each of the N + 1 calls rescans everything buffered: (N + 1)(N + 2) / 2 bytes.
    assert_eq!(examined, ((N + 1) * (N + 2) / 2) as u64);
}

/// How many times the `n` versus `4n` comparison is repeated; the best round counts.
const ROUNDS: usize = 5;

/// Linear decoding scales by about 4 for 4 times the bytes; quadratic by about 16. The
/// threshold sits between them with room for a noisy, shared machine.
const RATIO_CAP: f64 = 9.0;

/// The time ratio of `4n` versus `n` bytes, each size timed by its fastest of [`ROUNDS`] runs,
/// or `None` if it is over [`RATIO_CAP`]. Each `4n` run is cut off at the cap, so a quadratic
/// decoder cannot make the test slow.
///
/// The fastest run of each size is the one least disturbed by the rest of the machine. (An
/// earlier version took the smallest per-round ratio instead; on a loaded machine a round
/// whose `n` run was slowed down gave the quadratic decoder a ratio of only 7.16.)
fn best_time_ratio<F: Framing>(
    make: impl Fn(usize) -> F,
    stream: impl Fn(usize) -> Vec<u8>,
    n: usize,
) -> Option<f64> {
    let (small_stream, large_stream) = (stream(n), stream(4 * n));
    let mut small: Option<Duration> = None;
    let mut large: Option<Duration> = None;
    for _ in 0..ROUNDS {
        let (_, t) = feed_byte_by_byte(&mut make(n), &small_stream, None)?;
        let fastest_small = small.map_or(t, |s| s.min(t));
        small = Some(fastest_small);
        let cutoff = fastest_small.mul_f64(RATIO_CAP);
        if let Some((_, t)) = feed_byte_by_byte(&mut make(4 * n), &large_stream, Some(cutoff)) {
            large = Some(large.map_or(t, |l| l.min(t)));
        }
    }
    let ratio = large?.as_secs_f64() / small?.as_secs_f64();
    (ratio <= RATIO_CAP).then_some(ratio)
}

/// One test, so that the three timings never run in parallel with each other.
#[test]
fn byte_by_byte_time_ratio_separates_linear_from_quadratic() {
    let lines = best_time_ratio(Lines::new, line, 1 << 16);
    let length_prefixed = best_time_ratio(LengthPrefixed::new, frame, 1 << 16);
    // Quadratic: 4x the bytes takes about 16x the time, so every round is cut off at 9x.
    let rescanning = best_time_ratio(RescanningLines::new, line, 1 << 12);
    let shown = |r: Option<f64>| r.map_or("over-cap".to_string(), |r| format!("{r:.2}"));
    println!("@@stat time-ratio-4x lines_byte_by_byte {}", shown(lines));
    println!(
        "@@stat time-ratio-4x length_prefixed_byte_by_byte {}",
        shown(length_prefixed)
    );
    println!(
        "@@stat time-ratio-4x rescanning_lines_byte_by_byte {}",
        shown(rescanning)
    );
    assert!(
        lines.is_some(),
        "Lines took over {RATIO_CAP}x longer for 4x the bytes"
    );
    assert!(
        length_prefixed.is_some(),
        "LengthPrefixed took over {RATIO_CAP}x longer for 4x the bytes"
    );
    assert!(
        rescanning.is_none(),
        "rescanning scaled by only {rescanning:?}"
    );
}
