//! A process-wide memory barrier (Linux `membarrier(2)`), for asymmetric synchronisation: a
//! fast path that runs all the time on one thread needs no barrier instruction of its own if
//! the rare path on another thread makes every thread of the process pass a full barrier
//! instead. The nexus's write order uses it (`shoal_replication`, module `order`): a reactor
//! that is the only one writing to a volume claims blocks without a locked instruction, and a
//! second reactor that starts writing to it runs [`process_barrier`] first.

use std::sync::OnceLock;

/// `MEMBARRIER_CMD_PRIVATE_EXPEDITED` (linux/membarrier.h).
const CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
/// `MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED` (linux/membarrier.h).
const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

fn membarrier(cmd: libc::c_long) -> bool {
    // SAFETY: membarrier(2) takes two integers and a CPU id (unused without the CPU flag) and
    // touches no memory of the caller; an unknown command only fails with EINVAL.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            cmd,
            0 as libc::c_long,
            0 as libc::c_long,
        ) == 0
    }
}

/// Whether [`process_barrier`] works in this process (the first call registers the process
/// for it; kernels before 4.14, or a seccomp filter, say no).
pub fn process_barrier_available() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| membarrier(CMD_REGISTER_PRIVATE_EXPEDITED))
}

/// Makes every running thread of this process execute a full memory barrier before it returns:
/// a store any of them made before is visible to the caller's later loads, and their loads
/// after it see the caller's earlier stores. Costs a system call and an interrupt to each CPU
/// that runs one of the threads: for rare events only. False if it is not available.
pub fn process_barrier() -> bool {
    process_barrier_available() && membarrier(CMD_PRIVATE_EXPEDITED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_barrier_runs_once_registered() {
        if process_barrier_available() {
            assert!(process_barrier());
        }
    }
}
