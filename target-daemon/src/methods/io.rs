//! Block I/O from an RPC thread: the request is submitted on a reactor, and its completion is
//! sent back over a channel that the RPC thread waits on. The reactor never blocks: the message
//! only opens a channel to the device and submits; the completion arrives on a later pass of
//! its loop.

use std::rc::Rc;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shoal_bdev::{Bdev, BdevError, BdevIo, IoChannel, IoSink, open_channel};
use shoal_reactor::ReactorHandle;

use crate::daemon::Daemon;

/// How long [`flush_all`] waits for all flushes together.
pub const FLUSH_ALL_TIMEOUT: Duration = Duration::from_secs(30);

/// The outcome of one I/O, as received by the waiting thread.
pub type IoOutcome = Result<(), String>;

/// The completion side of an I/O submitted from another thread: keeps the reactor's channel
/// to the device open until the I/O completes, then reports the result.
struct Reply {
    chan: IoChannel,
    tx: mpsc::Sender<IoOutcome>,
}

impl IoSink for Reply {
    fn io_done(&self, _tag: u64, _io: BdevIo, result: Result<(), BdevError>) {
        // The waiting thread may have given up (timeout): nothing to tell then.
        let _ = self.tx.send(result.map_err(|e| e.to_string()));
    }
}

/// Submits `make()` to `bdev` on `reactor`; the returned receiver gets the outcome.
///
/// # Errors
/// If the reactor has stopped or the device cannot be opened there.
pub fn submit(
    reactor: &ReactorHandle,
    bdev: Arc<dyn Bdev>,
    make: impl FnOnce() -> BdevIo + Send + 'static,
) -> Result<mpsc::Receiver<IoOutcome>, String> {
    let (tx, rx) = mpsc::channel();
    reactor
        .call(move || -> Result<(), String> {
            let chan = open_channel(&bdev).map_err(|e| e.to_string())?;
            let reply = Rc::new(Reply { chan, tx });
            let sink: Rc<dyn IoSink> = reply.clone();
            reply.chan.submit(make(), sink, 0);
            Ok(())
        })
        .ok_or_else(|| "the reactor has stopped".to_owned())??;
    Ok(rx)
}

/// Waits for an outcome until `deadline`.
///
/// # Errors
/// The I/O's error, or a timeout.
pub fn wait(rx: &mpsc::Receiver<IoOutcome>, deadline: Instant) -> IoOutcome {
    let left = deadline.saturating_duration_since(Instant::now());
    match rx.recv_timeout(left) {
        Ok(outcome) => outcome,
        Err(mpsc::RecvTimeoutError::Timeout) => Err("timed out".to_owned()),
        Err(mpsc::RecvTimeoutError::Disconnected) => Err("the reactor dropped the I/O".to_owned()),
    }
}

/// Flushes `bdev` on the first reactor and waits up to `timeout`.
///
/// # Errors
/// Why the flush failed or did not complete in time.
pub fn flush(daemon: &Daemon, bdev: &Arc<dyn Bdev>, timeout: Duration) -> IoOutcome {
    let reactor = daemon
        .reactors
        .first()
        .ok_or_else(|| "no reactor is running".to_owned())?;
    let rx = submit(reactor, bdev.clone(), BdevIo::flush)?;
    wait(&rx, Instant::now() + timeout)
}

/// Flushes every bdev (at shutdown), all at once, waiting at most [`FLUSH_ALL_TIMEOUT`] in
/// total; failures are logged.
pub fn flush_all(daemon: &Daemon) {
    let Some(reactor) = daemon.reactors.first() else {
        tracing::error!("flush at shutdown: no reactor is running; bdevs were not flushed");
        return;
    };
    let pending: Vec<(String, Result<mpsc::Receiver<IoOutcome>, String>)> = daemon
        .bdevs
        .list()
        .into_iter()
        // A closed device (e.g. a nexus destroyed just before) has nothing left to flush.
        .filter(|b| !b.info().is_closed())
        .map(|b| {
            let name = b.info().name.clone();
            (name, submit(reactor, b, BdevIo::flush))
        })
        .collect();
    let deadline = Instant::now() + FLUSH_ALL_TIMEOUT;
    let mut failed = 0usize;
    for (name, submitted) in &pending {
        match submitted
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|rx| wait(rx, deadline))
        {
            Ok(()) => tracing::debug!(bdev = %name, "flushed"),
            Err(e) => {
                failed += 1;
                tracing::warn!(bdev = %name, "flush at shutdown failed: {e}");
            }
        }
    }
    tracing::info!(
        "flushed {} of {} bdev(s) at shutdown",
        pending.len().saturating_sub(failed),
        pending.len()
    );
}
