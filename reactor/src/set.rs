//! Starting reactors: the ring each one owns, core masks, and the set of reactor threads.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::thread::JoinHandle;

use io_uring::IoUring;

use super::{Reactor, ReactorConfig, ReactorHandle};

/// Shuts a socket down in both directions (`shutdown(2)`). Operations pending on it in a ring
/// complete (a receive with 0, an accept on a listening socket with `EINVAL`), which is how a
/// connection or listener is closed while the ring still holds an operation on it.
pub fn shutdown_socket(fd: &impl std::os::fd::AsFd) -> std::io::Result<()> {
    let raw = fd.as_fd().as_raw_fd();
    // SAFETY: shutdown(2) on a descriptor borrowed for the duration of the call; it touches no
    // memory of ours.
    let rc = unsafe { libc::shutdown(raw, libc::SHUT_RDWR) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Sets the backlog of a listening socket (`listen(2)` again on a socket that already listens:
/// Linux keeps the socket and takes the new backlog, which the kernel caps at `somaxconn`).
pub fn set_listen_backlog(fd: &impl std::os::fd::AsFd, backlog: u32) -> std::io::Result<()> {
    let raw = fd.as_fd().as_raw_fd();
    let n = i32::try_from(backlog).unwrap_or(i32::MAX);
    // SAFETY: listen(2) on a descriptor borrowed for the duration of the call; it touches no
    // memory of ours.
    let rc = unsafe { libc::listen(raw, n) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Creates a ring for one reactor thread. Where the kernel has them (6.1+), completions are
/// run only when the reactor asks for them (`COOP_TASKRUN`, `DEFER_TASKRUN`, `SINGLE_ISSUER`:
/// no inter-processor interrupt per completion while the reactor spins, which `fio` also
/// relies on), with `TASKRUN_FLAG` telling the loop when to enter the kernel for them. Older
/// kernels refuse the flags with `EINVAL` and get a plain ring.
pub(super) fn new_ring(entries: u32) -> std::io::Result<IoUring> {
    let deferred = IoUring::builder()
        .setup_clamp()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(entries);
    let refused = |r: &std::io::Result<IoUring>| {
        r.as_ref().err().and_then(std::io::Error::raw_os_error) == Some(libc::EINVAL)
    };
    if !refused(&deferred) {
        return deferred;
    }
    // 5.19 and 6.0 know COOP_TASKRUN but not DEFER_TASKRUN.
    let coop = IoUring::builder()
        .setup_clamp()
        .setup_coop_taskrun()
        .setup_taskrun_flag()
        .build(entries);
    if !refused(&coop) {
        return coop;
    }
    IoUring::builder().setup_clamp().build(entries)
}

/// A set of reactor threads, one per core of a mask.
pub struct ReactorSet {
    handles: Vec<ReactorHandle>,
    joins: Vec<JoinHandle<()>>,
}

/// Parses an SPDK-style core mask (`0x3`, `3`, or a list `[0,1]`) into core numbers.
pub fn parse_core_mask(mask: &str) -> Result<Vec<usize>, String> {
    let m = mask.trim();
    if let Some(list) = m.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        let mut cores = Vec::new();
        for part in list.split(',') {
            let part = part.trim();
            let core = part
                .parse::<usize>()
                .map_err(|_| format!("core list `{mask}`: `{part}` is not a core number"))?;
            cores.push(core);
        }
        cores.sort_unstable();
        cores.dedup();
        return if cores.is_empty() {
            Err(format!("core list `{mask}` is empty"))
        } else {
            Ok(cores)
        };
    }
    let hex = m
        .strip_prefix("0x")
        .or_else(|| m.strip_prefix("0X"))
        .unwrap_or(m);
    let bits = u128::from_str_radix(hex, 16)
        .map_err(|_| format!("core mask `{mask}` is not a hexadecimal mask such as 0x3"))?;
    let cores: Vec<usize> = (0..128).filter(|i| bits & (1u128 << i) != 0).collect();
    if cores.is_empty() {
        return Err(format!("core mask `{mask}` selects no core"));
    }
    Ok(cores)
}

impl ReactorSet {
    /// Starts one pinned reactor thread per core; `init` runs on each reactor before its loop.
    pub fn start(
        cores: &[usize],
        config: ReactorConfig,
        init: Arc<dyn Fn(&Reactor) + Send + Sync>,
    ) -> std::io::Result<ReactorSet> {
        let available = core_affinity::get_core_ids().unwrap_or_default();
        let mut handles = Vec::new();
        let mut joins = Vec::new();
        for (index, &core) in cores.iter().enumerate() {
            let (tx, rx) = crossbeam_channel::bounded(1);
            let config = config.clone();
            let init = init.clone();
            let core_id = available.iter().copied().find(|c| c.id == core);
            let join = std::thread::Builder::new()
                .name(format!("reactor_{core}"))
                .spawn(move || {
                    let pinned = core_id.is_some_and(core_affinity::set_for_current);
                    if !pinned {
                        tracing::warn!("reactor {index}: could not pin to core {core}");
                    }
                    let pinned_core = pinned.then_some(core);
                    match Reactor::new(index, pinned_core, config) {
                        Ok(r) => {
                            let _ = tx.send(Ok(r.handle()));
                            init(&r);
                            r.run();
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                })?;
            let handle = rx
                .recv()
                .map_err(|_| std::io::Error::other("reactor thread died during start-up"))??;
            handles.push(handle);
            joins.push(join);
        }
        Ok(ReactorSet { handles, joins })
    }

    /// Handles to the reactors, in core order.
    pub fn handles(&self) -> &[ReactorHandle] {
        &self.handles
    }

    /// Stops every reactor and waits for their threads.
    pub fn shutdown(self) {
        for h in &self.handles {
            h.stop();
        }
        for j in self.joins {
            let _ = j.join();
        }
    }
}
