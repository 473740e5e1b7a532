//! A reactor's settings, the answer of its pollers and its counters.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Settings of a reactor.
#[derive(Debug, Clone)]
pub struct ReactorConfig {
    /// How long to keep spinning without work before sleeping; `None` never sleeps. A reactor
    /// with file or disk operations in flight keeps spinning regardless: their completions are
    /// due within the device latency, and sleeping for them costs throughput.
    pub idle_spin: Option<Duration>,
    /// Submission queue entries of the ring.
    pub ring_entries: u32,
    /// Hand each file / disk operation to the kernel as soon as it is queued (one
    /// `io_uring_enter` per operation, as `fio` does) rather than with the rest of the pass.
    /// On the virtio disks measured (see `hack/bench-bdev.sh`) a batch of reads sent together
    /// reaches the device later than reads sent one by one: 4 KiB random reads at depth 32 ran
    /// 10-15% faster this way. Socket operations are always batched per pass.
    pub disk_submit_at_once: bool,
    /// How long a reactor whose pollers report [`PollStatus::Waiting`] (commands in flight to a
    /// peer, such as an NVMe/TCP target) keeps spinning past its last work. Their answers are
    /// due within the peer's latency, and waking from a sleep costs tens of microseconds on a
    /// virtual machine (a 4 KiB depth-32 read of a file through NVMe/TCP lost 7% of its IOPS
    /// with a sleeping host); the bound keeps a peer that stopped answering from holding a
    /// core until the command times out.
    pub peer_wait_spin: Duration,
}

impl Default for ReactorConfig {
    fn default() -> Self {
        ReactorConfig {
            idle_spin: Some(Duration::from_micros(100)),
            ring_entries: 1024,
            disk_submit_at_once: true,
            peer_wait_spin: Duration::from_millis(5),
        }
    }
}

/// Whether a poller found work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollStatus {
    /// It did something; the reactor keeps spinning.
    Busy,
    /// Nothing to do.
    Idle,
    /// Nothing to do now, but answers are due soon (commands in flight to a peer): the
    /// reactor keeps spinning for up to [`ReactorConfig::peer_wait_spin`] after its last work
    /// instead of sleeping, as it does while its own disk operations are in flight.
    Waiting,
}

/// Counters of a reactor, readable from any thread.
#[derive(Debug, Default)]
pub struct ReactorStats {
    /// Loop passes.
    pub passes: AtomicU64,
    /// Loop passes that found work.
    pub busy_passes: AtomicU64,
    /// Times the reactor went to sleep in the kernel.
    pub sleeps: AtomicU64,
    /// Ring operations completed.
    pub completions: AtomicU64,
}
