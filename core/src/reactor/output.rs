//! Per-connection output: a queue of byte chunks written with gathered writes.
//!
//! Loop-thread sends encode straight onto the tail chunk, so a reply costs no allocation once
//! the buffers have grown; chunks from other threads (already encoded on their thread) are
//! linked in whole, without a copy.
//! A partial write leaves `head_offset` inside the first chunk, and the next write starts
//! exactly there: the rest of a partly written message always goes out next, in order.

use crate::os::MAX_IOV;
use std::collections::VecDeque;
use std::io::{self, IoSlice};

/// Loop-thread sends stop appending to a tail chunk once it holds this many bytes.
const APPEND_LIMIT: usize = 64 * 1024;
/// Written-out chunks up to this capacity are kept for reuse.
const RECYCLE_LIMIT: usize = 256 * 1024;
/// How many empty chunks a connection keeps for reuse.
const POOL_SIZE: usize = 2;

/// What one [`Output::write_to`] call achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WriteReport {
    /// Bytes the kernel accepted.
    pub(crate) written: usize,
    /// A write hit `EAGAIN`: wait for the next `EPOLLOUT` edge.
    pub(crate) blocked: bool,
    /// Gathered-write calls made.
    pub(crate) calls: u64,
    /// Calls that wrote some but not all of what they offered.
    pub(crate) partial: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Output {
    chunks: VecDeque<Vec<u8>>,
    /// How much of `chunks[0]` is already written.
    head_offset: usize,
    /// Unwritten bytes over all chunks.
    len: usize,
    pool: Vec<Vec<u8>>,
}

impl Output {
    /// Unwritten bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends bytes produced by `fill` (an encoder) to the tail; on error nothing is kept.
    ///
    /// Returns how many bytes were added.
    pub(crate) fn append_with<E>(
        &mut self,
        fill: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
    ) -> Result<usize, E> {
        let reuse_tail = match self.chunks.back() {
            Some(tail) => tail.len() < APPEND_LIMIT,
            None => false,
        };
        if !reuse_tail {
            let chunk = self.pool.pop().unwrap_or_default();
            self.chunks.push_back(chunk);
        }
        let tail = self
            .chunks
            .back_mut()
            .expect("a tail chunk was just ensured");
        let before = tail.len();
        let result = fill(tail);
        let added = tail.len().saturating_sub(before);
        match result {
            Ok(()) => {
                self.len += added;
                self.drop_empty_tail();
                Ok(added)
            }
            Err(e) => {
                tail.truncate(before);
                self.drop_empty_tail();
                Err(e)
            }
        }
    }

    fn drop_empty_tail(&mut self) {
        // Fully written chunks are popped as soon as they are written, so an empty chunk can
        // only be a tail that was just added and then not filled.
        if self.chunks.back().is_some_and(Vec::is_empty) {
            let chunk = self.chunks.pop_back().expect("tail exists");
            self.recycle(chunk);
        }
    }

    /// Links in a whole chunk encoded elsewhere.
    pub(crate) fn push_chunk(&mut self, chunk: Vec<u8>) {
        if chunk.is_empty() {
            return;
        }
        self.len += chunk.len();
        self.chunks.push_back(chunk);
    }

    fn recycle(&mut self, mut chunk: Vec<u8>) {
        if self.pool.len() < POOL_SIZE && chunk.capacity() <= RECYCLE_LIMIT {
            chunk.clear();
            self.pool.push(chunk);
        }
    }

    /// Writes until everything is out or the socket would block.
    ///
    /// With `drop_partial_rest` (a known-bad variant) the unwritten rest of a partly written
    /// chunk is thrown away instead of being written next.
    pub(crate) fn write_to(
        &mut self,
        mut writev: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
        drop_partial_rest: bool,
    ) -> io::Result<WriteReport> {
        let mut report = WriteReport {
            written: 0,
            blocked: false,
            calls: 0,
            partial: 0,
        };
        while self.len > 0 {
            let mut slices = [IoSlice::new(&[]); MAX_IOV];
            let mut count = 0;
            let mut offered = 0;
            for (i, chunk) in self.chunks.iter().enumerate().take(MAX_IOV) {
                let bytes = if i == 0 {
                    &chunk[self.head_offset..]
                } else {
                    &chunk[..]
                };
                slices[count] = IoSlice::new(bytes);
                offered += bytes.len();
                count += 1;
            }
            report.calls += 1;
            match writev(&slices[..count]) {
                Ok(n) => {
                    report.written += n;
                    if n < offered {
                        report.partial += 1;
                    }
                    self.consume(n, drop_partial_rest);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    report.blocked = true;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }

    /// Marks `n` bytes from the front as written.
    fn consume(&mut self, mut n: usize, drop_partial_rest: bool) {
        self.len -= n;
        while n > 0 {
            let head_left = self.chunks[0].len() - self.head_offset;
            if n >= head_left {
                n -= head_left;
                self.head_offset = 0;
                let chunk = self
                    .chunks
                    .pop_front()
                    .expect("written bytes come from a chunk");
                self.recycle(chunk);
            } else {
                self.head_offset += n;
                n = 0;
                if drop_partial_rest {
                    // KNOWN-BAD: forget the rest of the partly written chunk.
                    let rest = self.chunks[0].len() - self.head_offset;
                    self.len -= rest;
                    self.head_offset = 0;
                    let chunk = self.chunks.pop_front().expect("head chunk exists");
                    self.recycle(chunk);
                }
            }
        }
    }

    /// Empties the buffer (the connection is gone) and returns how many bytes were unwritten.
    pub(crate) fn discard(&mut self) -> usize {
        let len = self.len;
        self.chunks.clear();
        self.head_offset = 0;
        self.len = 0;
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contents(out: &Output) -> Vec<u8> {
        let mut all = Vec::new();
        for (i, chunk) in out.chunks.iter().enumerate() {
            all.extend_from_slice(if i == 0 {
                &chunk[out.head_offset..]
            } else {
                chunk
            });
        }
        all
    }

    #[test]
    fn consume_keeps_the_unwritten_rest_in_order() {
        let mut out = Output::default();
        out.append_with(|b| -> Result<(), ()> {
            b.extend_from_slice(b"hello ");
            Ok(())
        })
        .unwrap();
        out.push_chunk(b"big world".to_vec());
        out.append_with(|b| -> Result<(), ()> {
            b.extend_from_slice(b"!");
            Ok(())
        })
        .unwrap();
        out.consume(8, false);
        assert_eq!(contents(&out), b"g world!");
        assert_eq!(out.len(), 8);
    }

    #[test]
    fn failed_encode_leaves_no_bytes_behind() {
        let mut out = Output::default();
        out.append_with(|b| -> Result<(), ()> {
            b.extend_from_slice(b"ok");
            Ok(())
        })
        .unwrap();
        let err = out.append_with(|b| {
            b.extend_from_slice(b"partial");
            Err("too long")
        });
        assert_eq!(err, Err("too long"));
        assert_eq!(contents(&out), b"ok");
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn known_bad_drop_partial_rest_loses_bytes() {
        let mut out = Output::default();
        out.push_chunk(b"abcdef".to_vec());
        out.push_chunk(b"ghi".to_vec());
        out.consume(2, true);
        assert_eq!(
            contents(&out),
            b"ghi",
            "the bad variant skips the rest of the head chunk"
        );
    }
}
