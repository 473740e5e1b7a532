//! The send queue of an NVMe/TCP connection (target or host): PDU headers (and, on the host,
//! copied write data) packed back to back into pooled "arena" buffers, data buffers queued as
//! they are, what is queued sent with one `sendmsg` of at most [`MAX_BATCH_BUFFERS`] buffers,
//! one in flight at a time; a short send keeps the unsent tail at the head.

use shoal_bdev::IoBuf;

/// Arena size for a target connection: a 4 KiB buffer holds about 170 response capsules.
pub(crate) const TARGET_ARENA: usize = 4096;
/// Arena size for a host connection, which also copies write data into its arenas.
pub(crate) const HOST_ARENA: usize = 64 * 1024;

/// Buffers in one `sendmsg` at most (SPDK's sockets send 64 iovecs at a time too). Larger
/// bursts made the kernel's TCP pace the connection: with BBR (this machine's default), a
/// connection that sent everything one deep queue had ready at once (128 4 KiB reads, 256
/// buffers, about 530 KB) left BBR's start-up phase and was paced by a timer at 1.25 times the
/// measured rate, about 10,000 timer interrupts a second in the target's reactor; 4 KiB reads
/// at depth 128 (`shoal-perf` as the load) ran at 0.67 of SPDK's rate. At 64 buffers (about
/// 130 KB of 4 KiB reads) the connection stays application-limited and is rarely paced: 0.88
/// of SPDK's rate, the median of five alternating rounds (`docs/PERFORMANCE.md`).
pub(crate) const MAX_BATCH_BUFFERS: usize = 64;

/// Output waiting to be sent, in order.
pub(crate) struct TxQueue {
    /// Buffers queued behind the one in flight (the first may be partly sent: see `skip`).
    queue: Vec<IoBuf>,
    /// The arena being filled; it joins `queue` before the next data buffer or at the send.
    arena: Option<IoBuf>,
    /// Capacity of a new arena (a larger PDU gets a buffer of its own size).
    arena_size: usize,
    /// An empty vector kept for reuse, so steady state allocates nothing.
    spare: Vec<IoBuf>,
    /// Bytes of `queue[0]` already sent.
    skip: usize,
    /// A `sendmsg` is in flight.
    pub(crate) in_flight: bool,
    /// Bytes of memory the queue holds: the capacity of every buffer queued, being filled or
    /// in flight. A target connection stops reading commands while it is at its bound.
    held: usize,
}

impl TxQueue {
    /// An empty queue whose arenas hold `arena_size` bytes.
    pub(crate) fn new(arena_size: usize) -> TxQueue {
        TxQueue {
            queue: Vec::new(),
            arena: None,
            arena_size,
            spare: Vec::new(),
            skip: 0,
            in_flight: false,
            held: 0,
        }
    }

    /// Bytes of memory held by what is queued or in flight (buffer capacities).
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Reserves `n` bytes at the end of the queue and returns them to be filled in.
    pub(crate) fn append(&mut self, n: usize) -> &mut [u8] {
        let fits = self
            .arena
            .as_ref()
            .is_some_and(|a| a.capacity() - a.len() >= n);
        if !fits {
            self.close_arena();
            let a = IoBuf::with_capacity(self.arena_size.max(n));
            self.held += a.capacity();
            self.arena = Some(a);
        }
        let Some(a) = self.arena.as_mut() else {
            return &mut [];
        };
        let at = a.len();
        a.set_len(at + n);
        a.as_mut_slice().get_mut(at..).unwrap_or(&mut [])
    }

    /// Appends small bytes (a PDU header, a digest, padding).
    pub(crate) fn push_hdr(&mut self, bytes: &[u8]) {
        self.append(bytes.len()).copy_from_slice(bytes);
    }

    /// Appends a data buffer (sent as it is, without a copy).
    pub(crate) fn push_data(&mut self, buf: IoBuf) {
        self.close_arena();
        if !buf.is_empty() {
            self.held += buf.capacity();
            self.queue.push(buf);
        }
    }

    fn close_arena(&mut self) {
        if let Some(a) = self.arena.take() {
            if a.is_empty() {
                self.held = self.held.saturating_sub(a.capacity());
            } else {
                self.queue.push(a);
            }
        }
    }

    /// Whether anything is waiting to be sent (not counting what is in flight).
    pub(crate) fn has_pending(&self) -> bool {
        !self.queue.is_empty() || self.arena.as_ref().is_some_and(|a| !a.is_empty())
    }

    /// Takes what is queued, up to [`MAX_BATCH_BUFFERS`] buffers, for one `sendmsg`, unless
    /// one is already in flight.
    pub(crate) fn take_batch(&mut self) -> Option<(Vec<IoBuf>, usize)> {
        if self.in_flight {
            return None;
        }
        self.close_arena();
        if self.queue.is_empty() {
            return None;
        }
        let mut next = std::mem::take(&mut self.spare);
        if self.queue.len() > MAX_BATCH_BUFFERS {
            next.extend(self.queue.drain(MAX_BATCH_BUFFERS..));
        }
        let batch = std::mem::replace(&mut self.queue, next);
        self.in_flight = true;
        Some((batch, self.skip))
    }

    /// A `sendmsg` of `batch` sent `n` bytes: drop what is fully sent, requeue the rest first.
    pub(crate) fn sent(&mut self, mut batch: Vec<IoBuf>, n: usize) {
        self.in_flight = false;
        let mut done = self.skip + n;
        let mut whole = 0;
        for b in &batch {
            if done < b.len() {
                break;
            }
            done -= b.len();
            whole += 1;
            self.held = self.held.saturating_sub(b.capacity());
        }
        batch.drain(..whole);
        if batch.is_empty() {
            self.skip = 0;
            self.spare = batch;
        } else {
            self.skip = done;
            batch.append(&mut self.queue);
            self.spare = std::mem::replace(&mut self.queue, batch);
        }
    }

    /// Drops everything queued (the connection is gone). A send in flight stays flagged until
    /// its completion comes back with [`TxQueue::sent`] or [`TxQueue::abandon`].
    pub(crate) fn clear(&mut self) {
        let dropped: usize = self
            .queue
            .iter()
            .chain(&self.arena)
            .map(IoBuf::capacity)
            .sum();
        self.held = self.held.saturating_sub(dropped);
        self.queue.clear();
        self.arena = None;
        self.skip = 0;
    }

    /// The send in flight failed or belonged to a closed socket: forget it.
    pub(crate) fn abandon(&mut self, mut batch: Vec<IoBuf>) {
        self.in_flight = false;
        // `skip` counted bytes of the batch's first buffer, which is gone.
        self.skip = 0;
        self.held = self
            .held
            .saturating_sub(batch.iter().map(IoBuf::capacity).sum::<usize>());
        batch.clear();
        if self.spare.capacity() < batch.capacity() {
            self.spare = batch;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(q: &[IoBuf], skip: usize) -> Vec<u8> {
        let mut v: Vec<u8> = q.iter().flat_map(|b| b.as_slice().to_vec()).collect();
        v.drain(..skip);
        v
    }

    #[test]
    fn headers_pack_data_stays_apart_and_partial_sends_resume_in_order() {
        let mut t = TxQueue::new(TARGET_ARENA);
        t.push_hdr(b"h1");
        t.push_hdr(b"h2");
        t.push_data(IoBuf::copy_from(b"DATA"));
        t.push_hdr(b"h3");
        let (batch, skip) = t.take_batch().unwrap();
        assert_eq!(
            batch.len(),
            3,
            "h1h2 share an arena, DATA is its own, h3 a new arena"
        );
        assert_eq!(bytes(&batch, skip), b"h1h2DATAh3");
        assert!(t.take_batch().is_none(), "one send at a time");
        t.push_hdr(b"h4");
        t.sent(batch, 6); // "h1h2DA" went out
        let (batch, skip) = t.take_batch().unwrap();
        assert_eq!(bytes(&batch, skip), b"TAh3h4");
        t.sent(batch, 6);
        assert!(!t.has_pending() && !t.in_flight);
        assert_eq!(t.held(), 0, "everything sent, nothing held");
    }

    #[test]
    fn a_batch_holds_at_most_max_batch_buffers_and_the_rest_follows_in_order() {
        let mut t = TxQueue::new(TARGET_ARENA);
        let n = MAX_BATCH_BUFFERS * 2 + 5;
        let mut want = Vec::new();
        for i in 0..n {
            let b = [u8::try_from(i % 251).unwrap(); 3];
            t.push_data(IoBuf::copy_from(&b));
            want.extend_from_slice(&b);
        }
        let mut got = Vec::new();
        let mut batches = 0;
        while let Some((batch, skip)) = t.take_batch() {
            assert!(batch.len() <= MAX_BATCH_BUFFERS, "{} buffers", batch.len());
            assert!(t.take_batch().is_none(), "one send at a time");
            // Each send is short by one byte: the tail comes first in the next batch.
            let all = bytes(&batch, skip);
            let n = all.len().saturating_sub(1).max(1).min(all.len());
            got.extend_from_slice(&all[..n]);
            t.sent(batch, n);
            batches += 1;
        }
        assert_eq!(got, want);
        assert!(batches >= 3);
        assert!(!t.has_pending() && !t.in_flight);
        assert_eq!(t.held(), 0);
    }

    #[test]
    fn a_failed_batch_with_a_tail_queued_leaves_the_tail_from_its_start() {
        let mut t = TxQueue::new(TARGET_ARENA);
        let cap = IoBuf::copy_from(&[0; 5]).capacity();
        for i in 0..MAX_BATCH_BUFFERS + 3 {
            t.push_data(IoBuf::copy_from(&[u8::try_from(i).unwrap(); 5]));
        }
        let (batch, _) = t.take_batch().unwrap();
        t.sent(batch, 2); // a short send: skip is 2
        let (batch, skip) = t.take_batch().unwrap();
        assert_eq!(skip, 2);
        t.abandon(batch);
        assert_eq!(t.held(), 3 * cap, "only the tail is held");
        let (batch, skip) = t.take_batch().unwrap();
        assert_eq!((batch.len(), skip), (3, 0));
        t.abandon(batch);
        assert_eq!(t.held(), 0);
        // clear() while a batch is in flight with a tail queued drops the tail.
        for _ in 0..MAX_BATCH_BUFFERS + 3 {
            t.push_data(IoBuf::copy_from(&[1; 5]));
        }
        let (batch, _) = t.take_batch().unwrap();
        t.clear();
        assert_eq!(
            t.held(),
            MAX_BATCH_BUFFERS * cap,
            "the batch in flight is still held"
        );
        t.sent(batch, MAX_BATCH_BUFFERS * 5);
        assert!(!t.has_pending() && t.held() == 0);
    }

    #[test]
    fn held_counts_capacities_until_they_are_sent_or_dropped() {
        let mut t = TxQueue::new(TARGET_ARENA);
        t.push_hdr(b"h1");
        assert_eq!(t.held(), TARGET_ARENA, "an arena counts whole");
        t.push_data(IoBuf::copy_from(&[1u8; 8192]));
        assert_eq!(t.held(), TARGET_ARENA + 8192);
        let (batch, _) = t.take_batch().unwrap();
        assert_eq!(t.held(), TARGET_ARENA + 8192, "in flight is still held");
        t.sent(batch, 2 + 100);
        assert_eq!(
            t.held(),
            8192,
            "the sent arena is released, the data is not"
        );
        let (batch, _) = t.take_batch().unwrap();
        t.abandon(batch);
        assert_eq!(t.held(), 0);
        t.push_hdr(b"h2");
        t.clear();
        assert_eq!(t.held(), 0);
    }

    #[test]
    fn a_pdu_larger_than_an_arena_gets_its_own_buffer() {
        let mut t = TxQueue::new(HOST_ARENA);
        t.append(2).copy_from_slice(b"h1");
        let big = vec![7u8; HOST_ARENA + 10];
        t.append(big.len()).copy_from_slice(&big);
        t.append(2).copy_from_slice(b"h3");
        let (batch, skip) = t.take_batch().unwrap();
        assert_eq!(
            batch.len(),
            2,
            "the big PDU opens a buffer that also takes what follows"
        );
        let mut want = b"h1".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"h3");
        assert_eq!(bytes(&batch, skip), want);
        t.abandon(batch);
        assert!(!t.in_flight);
    }
}
