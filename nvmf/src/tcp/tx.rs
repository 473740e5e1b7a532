//! The send queue of a connection: small headers packed into shared buffers, data buffers
//! queued as they are, one `sendmsg` in flight at a time.

use shoal_bdev::IoBuf;

/// Capacity of a header buffer; a 4 KiB buffer holds about 170 response capsules.
const ARENA: usize = 4096;

/// Output waiting to be sent, in order.
#[derive(Default)]
pub(super) struct TxQueue {
    /// Buffers queued behind the one in flight (the first may be partly sent: see `skip`).
    queue: Vec<IoBuf>,
    /// The header buffer being filled; it joins `queue` before the next data buffer.
    arena: Option<IoBuf>,
    /// An empty vector kept for reuse, so steady state allocates nothing.
    spare: Vec<IoBuf>,
    /// Bytes of `queue[0]` already sent.
    skip: usize,
    /// A `sendmsg` is in flight.
    pub(super) in_flight: bool,
    /// The connection is on this pass's flush list.
    pub(super) dirty: bool,
}

impl TxQueue {
    /// Appends small header bytes (a PDU header, a digest, padding).
    pub(super) fn push_hdr(&mut self, bytes: &[u8]) {
        let need = bytes.len();
        let fits = self
            .arena
            .as_ref()
            .is_some_and(|a| a.capacity() - a.len() >= need);
        if !fits {
            self.close_arena();
            self.arena = Some(IoBuf::with_capacity(ARENA.max(need)));
        }
        if let Some(a) = self.arena.as_mut() {
            let at = a.len();
            a.set_len(at + need);
            a.as_mut_slice()[at..].copy_from_slice(bytes);
        }
    }

    /// Appends a data buffer (sent as it is, without a copy).
    pub(super) fn push_data(&mut self, buf: IoBuf) {
        self.close_arena();
        if !buf.is_empty() {
            self.queue.push(buf);
        }
    }

    fn close_arena(&mut self) {
        if let Some(a) = self.arena.take()
            && !a.is_empty()
        {
            self.queue.push(a);
        }
    }

    /// Takes everything queued for one `sendmsg`, unless one is already in flight.
    pub(super) fn take_batch(&mut self) -> Option<(Vec<IoBuf>, usize)> {
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
    pub(super) fn sent(&mut self, mut batch: Vec<IoBuf>, n: usize) {
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
    fn headers_pack_and_partial_sends_resume_in_order() {
        let mut t = TxQueue::default();
        t.push_hdr(b"h1");
        t.push_hdr(b"h2");
        t.push_data(IoBuf::copy_from(b"DATA"));
        t.push_hdr(b"h3");
        let (batch, skip) = t.take_batch().unwrap();
        assert_eq!(bytes(&batch, skip), b"h1h2DATAh3");
        assert!(t.take_batch().is_none(), "one send at a time");
        t.push_hdr(b"h4");
        t.sent(batch, 6); // "h1h2DA" went out
        let (batch, skip) = t.take_batch().unwrap();
        assert_eq!(bytes(&batch, skip), b"TAh3h4");
        t.sent(batch, 6);
        assert!(t.take_batch().is_none(), "everything was sent");
    }
}
