//! The send side of a queue pair: PDUs encoded back to back into pooled buffers, sent with one
//! `sendmsg` per reactor pass.
//!
//! Headers and (copied) data of every PDU queued during a pass go into "arenas": 64 KiB pooled
//! [`IoBuf`]s filled from the front. A PDU larger than an arena gets a buffer of its own. The
//! batch goes out as one vector of buffers; a short send keeps the unsent tail at the head.

use shoal_bdev::IoBuf;

/// Capacity of a shared arena.
const ARENA: usize = 64 * 1024;

/// Output waiting to be sent, in order.
#[derive(Default)]
pub(crate) struct TxQueue {
    /// Full arenas (and big PDUs) waiting behind the one in flight; the first may be partly
    /// sent (see `skip`).
    queue: Vec<IoBuf>,
    /// The arena being filled.
    arena: Option<IoBuf>,
    /// An empty vector kept for reuse, so the steady state allocates nothing.
    spare: Vec<IoBuf>,
    /// Bytes of `queue[0]` already sent.
    skip: usize,
    /// A `sendmsg` is in flight.
    pub(crate) in_flight: bool,
}

impl TxQueue {
    /// Reserves `n` bytes at the end of the queue and returns them to be filled in.
    pub(crate) fn append(&mut self, n: usize) -> &mut [u8] {
        let fits = self
            .arena
            .as_ref()
            .is_some_and(|a| a.capacity() - a.len() >= n);
        if !fits {
            self.close_arena();
            self.arena = Some(IoBuf::with_capacity(ARENA.max(n)));
        }
        let Some(a) = self.arena.as_mut() else {
            return &mut [];
        };
        let at = a.len();
        a.set_len(at + n);
        a.as_mut_slice().get_mut(at..).unwrap_or(&mut [])
    }

    fn close_arena(&mut self) {
        if let Some(a) = self.arena.take()
            && !a.is_empty()
        {
            self.queue.push(a);
        }
    }

    /// Whether anything is waiting to be sent (not counting what is in flight).
    pub(crate) fn has_pending(&self) -> bool {
        !self.queue.is_empty() || self.arena.as_ref().is_some_and(|a| !a.is_empty())
    }

    /// Takes everything queued for one `sendmsg`, unless one is already in flight.
    pub(crate) fn take_batch(&mut self) -> Option<(Vec<IoBuf>, usize)> {
        if self.in_flight {
            return None;
        }
        self.close_arena();
        if self.queue.is_empty() {
            return None;
        }
        let next = std::mem::take(&mut self.spare);
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
        self.queue.clear();
        self.arena = None;
        self.skip = 0;
    }

    /// The send in flight failed or belonged to a closed socket: forget it.
    pub(crate) fn abandon(&mut self, mut batch: Vec<IoBuf>) {
        self.in_flight = false;
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
    fn pdus_pack_and_partial_sends_resume_in_order() {
        let mut t = TxQueue::default();
        t.append(2).copy_from_slice(b"h1");
        t.append(4).copy_from_slice(b"DATA");
        let big = vec![7u8; ARENA + 10];
        t.append(big.len()).copy_from_slice(&big);
        t.append(2).copy_from_slice(b"h3");
        let (batch, skip) = t.take_batch().unwrap();
        assert_eq!(
            batch.len(),
            2,
            "small PDUs share an arena; a big one opens a new one, which takes the rest"
        );
        let mut want = b"h1DATA".to_vec();
        want.extend_from_slice(&big);
        want.extend_from_slice(b"h3");
        assert_eq!(bytes(&batch, skip), want);
        assert!(t.take_batch().is_none(), "one send at a time");
        t.append(2).copy_from_slice(b"h4");
        t.sent(batch, 8); // "h1DATA" and 2 bytes of the big one went out
        let (batch, skip) = t.take_batch().unwrap();
        let mut rest = big[2..].to_vec();
        rest.extend_from_slice(b"h3h4");
        assert_eq!(bytes(&batch, skip), rest);
        let n = rest.len();
        t.sent(batch, n);
        assert!(!t.has_pending() && !t.in_flight);
    }
}
