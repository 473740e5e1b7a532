//! CPU time of a thread or of the whole process (`getrusage`), split into user and system.

use std::time::Duration;

/// User and system CPU time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// Time in user mode.
    pub user: Duration,
    /// Time in the kernel.
    pub sys: Duration,
}

impl CpuTime {
    /// The time spent since `earlier`.
    pub fn since(self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            sys: self.sys.saturating_sub(earlier.sys),
        }
    }

    /// User + system.
    pub fn total(self) -> Duration {
        self.user + self.sys
    }
}

fn rusage(who: libc::c_int) -> CpuTime {
    // SAFETY: `rusage` is a plain C struct; all-zero bytes are a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only into `ru`, a live local of the right type.
    if unsafe { libc::getrusage(who, &raw mut ru) } != 0 {
        return CpuTime::default();
    }
    let tv = |t: libc::timeval| {
        let secs = u64::try_from(t.tv_sec).unwrap_or(0);
        let micros = u64::try_from(t.tv_usec).unwrap_or(0);
        Duration::from_secs(secs) + Duration::from_micros(micros)
    };
    CpuTime {
        user: tv(ru.ru_utime),
        sys: tv(ru.ru_stime),
    }
}

/// CPU time of the calling thread.
pub fn thread() -> CpuTime {
    rusage(libc::RUSAGE_THREAD)
}

/// CPU time of the whole process (every thread, live or ended).
pub fn process() -> CpuTime {
    rusage(libc::RUSAGE_SELF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spinning_shows_up_as_user_time() {
        let t0 = thread();
        let p0 = process();
        let start = std::time::Instant::now();
        let mut x = 0u64;
        // Spin until the thread has had 40 ms of CPU (or 10 s passed: a loaded machine may
        // give it little), so the check does not depend on how busy the machine is.
        while thread().since(t0).total() < Duration::from_millis(40)
            && start.elapsed() < Duration::from_secs(10)
        {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        let spent = thread().since(t0);
        assert!(spent.total() >= Duration::from_millis(20), "{spent:?}");
        // The process's user/system split is scaled from its total by the kernel
        // (`cputime_adjust`), so it may trail a thread's own figure by a tick.
        let proc = process().since(p0).total();
        assert!(
            proc + Duration::from_millis(10) >= spent.total(),
            "{proc:?} {spent:?}"
        );
    }
}
