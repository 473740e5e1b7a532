//! A minimal executor for the nexus's control path on a reactor.
//!
//! The I/O path is hand-written state machines (no futures, no allocation per I/O). The
//! control path (metadata writes, barriers, rebuild copies) is much easier to get right as
//! sequential code, so it runs as `async` tasks on the nexus's home reactor:
//!
//! * [`spawn`] puts a task in a per-thread table and polls it from the reactor loop;
//! * a task's waker re-polls it on a later pass (from another thread: through the reactor's
//!   message channel), never from inside `wake`;
//! * leaf futures: [`io`] (one block I/O on a channel), [`sleep`] (a reactor timer),
//!   [`Signal`] (a wake-up any thread may send) and [`join_all`];
//! * [`Ticket`] carries a result back to the thread that asked for the work; waiting on it
//!   from a reactor thread drives that reactor, so tests on one thread do not deadlock.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::ThreadId;
use std::time::Duration;

use shoal_bdev::{BdevError, BdevIo, IoChannel, IoSink};
use shoal_reactor::{Reactor, ReactorHandle};

use crate::NexusError;
use crate::routing::ChildShared;

/// A task's future.
pub(crate) type LocalFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

struct Task {
    fut: RefCell<Option<LocalFuture<'static, ()>>>,
}

thread_local! {
    static TASKS: RefCell<HashMap<u64, Rc<Task>>> = RefCell::new(HashMap::new());
    static NEXT_TASK: Cell<u64> = const { Cell::new(0) };
}

struct TaskWaker {
    id: u64,
    handle: ReactorHandle,
    thread: ThreadId,
    scheduled: AtomicBool,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        if std::thread::current().id() == self.thread
            && let Some(r) = Reactor::current()
        {
            r.defer(move || run(&me));
            return;
        }
        let me = self.clone();
        // A stopped reactor drops the task with its thread; nothing to wake then.
        let _ = self.handle.send(move || run(&me));
    }
}

fn run(w: &Arc<TaskWaker>) {
    w.scheduled.store(false, Ordering::Release);
    let Some(task) = TASKS.with(|t| t.borrow().get(&w.id).cloned()) else {
        return;
    };
    let waker = Waker::from(w.clone());
    let mut cx = Context::from_waker(&waker);
    let done = {
        let mut slot = task.fut.borrow_mut();
        match slot.as_mut() {
            Some(f) => f.as_mut().poll(&mut cx).is_ready(),
            None => true,
        }
    };
    if done {
        TASKS.with(|t| t.borrow_mut().remove(&w.id));
    }
}

/// Runs `fut` on the current thread's reactor. Panics only if called off a reactor thread
/// (an internal bug: every caller is a message or task on the home reactor).
pub(crate) fn spawn(fut: impl Future<Output = ()> + 'static) {
    let reactor = Reactor::current().expect("exec::spawn off a reactor thread");
    let id = NEXT_TASK.with(|n| {
        let id = n.get() + 1;
        n.set(id);
        id
    });
    let task = Rc::new(Task {
        fut: RefCell::new(Some(Box::pin(fut))),
    });
    TASKS.with(|t| t.borrow_mut().insert(id, task));
    let w = Arc::new(TaskWaker {
        id,
        handle: reactor.handle(),
        thread: std::thread::current().id(),
        scheduled: AtomicBool::new(false),
    });
    Waker::from(w).wake();
}

/// Where one control-path I/O completes.
#[derive(Default)]
struct IoSlot {
    done: RefCell<Option<(BdevIo, Result<(), BdevError>)>>,
    waker: RefCell<Option<Waker>>,
    /// A write given up after its timeout, counted in this child's `abandoned` until it
    /// really completes.
    late: RefCell<Option<Arc<ChildShared>>>,
}

impl IoSink for IoSlot {
    fn io_done(&self, _tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        if let Some(c) = self.late.borrow_mut().take() {
            c.abandoned.fetch_sub(1, Ordering::AcqRel);
        }
        *self.done.borrow_mut() = Some((io, result));
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// Submits `io` on `chan` and waits for its completion, or for `timeout` (not zero): then the
/// I/O is given up and the answer is [`BdevError::TimedOut`] with a `BdevIo` without buffers
/// (the device keeps the real one until it completes).
pub(crate) async fn io(
    chan: &IoChannel,
    io: BdevIo,
    timeout: Duration,
) -> (BdevIo, Result<(), BdevError>) {
    io_on(chan, io, timeout, None).await
}

/// [`io`] for a write to `child` (a rebuild's copy, a label): given up after its timeout, it
/// counts in the child's `abandoned` until it really completes, as a host write's leg does,
/// so that the child is not added back (and rebuilt, and put online) while its old data may
/// still land on it.
pub(crate) async fn write_to(
    child: &Arc<ChildShared>,
    chan: &IoChannel,
    io: BdevIo,
    timeout: Duration,
) -> (BdevIo, Result<(), BdevError>) {
    io_on(chan, io, timeout, Some(child.clone())).await
}

async fn io_on(
    chan: &IoChannel,
    io: BdevIo,
    timeout: Duration,
    child: Option<Arc<ChildShared>>,
) -> (BdevIo, Result<(), BdevError>) {
    let (io_type, offset, blocks) = (io.io_type, io.offset_blocks, io.num_blocks);
    let slot = Rc::new(IoSlot::default());
    chan.submit(io, slot.clone(), 0);
    let expired = Rc::new(Cell::new(false));
    let timer = match Reactor::current() {
        Some(r) if !timeout.is_zero() => {
            let (e, s) = (expired.clone(), slot.clone());
            let id = r.call_after(timeout, move || {
                e.set(true);
                if let Some(c) = child
                    && s.done.borrow().is_none()
                {
                    c.abandoned.fetch_add(1, Ordering::AcqRel);
                    *s.late.borrow_mut() = Some(c);
                }
                if let Some(w) = s.waker.borrow_mut().take() {
                    w.wake();
                }
            });
            Some((r, id))
        }
        _ => None,
    };
    let out = poll_fn(|cx| {
        if let Some(r) = slot.done.borrow_mut().take() {
            return Poll::Ready(r);
        }
        if expired.get() {
            let empty = BdevIo {
                io_type,
                flags: shoal_bdev::IoFlags::NONE,
                offset_blocks: offset,
                num_blocks: blocks,
                bufs: shoal_bdev::SgList::new(),
            };
            return Poll::Ready((empty, Err(BdevError::TimedOut)));
        }
        *slot.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    })
    .await;
    if let Some((r, id)) = timer {
        r.cancel_timer(id);
    }
    out
}

/// Waits for `d` on the current reactor.
pub(crate) async fn sleep(d: Duration) {
    let Some(reactor) = Reactor::current() else {
        return;
    };
    let state: Rc<(Cell<bool>, RefCell<Option<Waker>>)> = Rc::default();
    let s = state.clone();
    reactor.call_after(d, move || {
        s.0.set(true);
        if let Some(w) = s.1.borrow_mut().take() {
            w.wake();
        }
    });
    poll_fn(|cx| {
        if state.0.get() {
            return Poll::Ready(());
        }
        *state.1.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    })
    .await;
}

/// Runs futures concurrently; their outputs in order.
pub(crate) async fn join_all<'a, T>(futs: Vec<LocalFuture<'a, T>>) -> Vec<T> {
    let mut futs: Vec<Option<LocalFuture<'a, T>>> = futs.into_iter().map(Some).collect();
    let mut out: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    poll_fn(move |cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if let Some(fut) = f {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *o = Some(v);
                        *f = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(out.iter_mut().filter_map(Option::take).collect())
        }
    })
    .await
}

/// A wake-up that any thread may send to one waiting task.
#[derive(Default)]
pub(crate) struct Signal {
    set: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Signal {
    /// Wakes the waiting task (or the next one to wait).
    pub(crate) fn notify(&self) {
        self.set.store(true, Ordering::Release);
        let w = self.waker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(w) = w {
            w.wake();
        }
    }

    /// Waits for a notification (one sent before the wait counts).
    pub(crate) async fn wait(&self) {
        poll_fn(|cx| {
            if self.set.swap(false, Ordering::AcqRel) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
            if self.set.swap(false, Ordering::AcqRel) {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await;
    }
}

/// The answer to a request run on the nexus's home reactor.
#[must_use = "a ticket does nothing unless waited on"]
pub struct Ticket<T> {
    rx: crossbeam_channel::Receiver<T>,
}

/// The sending side of a [`Ticket`].
pub(crate) struct Reply<T>(crossbeam_channel::Sender<T>);

impl<T> Reply<T> {
    /// Sends the answer (nobody may be waiting any more: then it is dropped).
    pub(crate) fn send(self, v: T) {
        let _ = self.0.send(v);
    }
}

/// A new ticket and the reply that answers it.
pub(crate) fn ticket<T>() -> (Reply<T>, Ticket<T>) {
    let (tx, rx) = crossbeam_channel::bounded(1);
    (Reply(tx), Ticket { rx })
}

impl<T> Ticket<T> {
    /// A ticket that is already answered.
    pub fn ready(v: T) -> Ticket<T> {
        let (reply, t) = ticket();
        reply.send(v);
        t
    }

    /// Waits up to `timeout` for the answer. On a reactor thread, the reactor runs meanwhile
    /// (so a test driving the nexus's home reactor on its own thread can wait); elsewhere the
    /// thread blocks.
    pub fn wait(self, timeout: Duration) -> Result<T, NexusError> {
        if let Some(reactor) = Reactor::current() {
            let got: RefCell<Option<Result<T, NexusError>>> = RefCell::new(None);
            reactor.run_until(timeout, || {
                if got.borrow().is_none() {
                    match self.rx.try_recv() {
                        Ok(v) => *got.borrow_mut() = Some(Ok(v)),
                        Err(crossbeam_channel::TryRecvError::Disconnected) => {
                            *got.borrow_mut() = Some(Err(NexusError::ReactorGone));
                        }
                        Err(crossbeam_channel::TryRecvError::Empty) => {}
                    }
                }
                got.borrow().is_some()
            });
            return got.into_inner().unwrap_or(Err(NexusError::Timeout));
        }
        self.rx.recv_timeout(timeout).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Timeout => NexusError::Timeout,
            crossbeam_channel::RecvTimeoutError::Disconnected => NexusError::ReactorGone,
        })
    }

    /// The answer, if it has arrived (without waiting or running anything).
    pub fn try_take(&self) -> Option<T> {
        self.rx.try_recv().ok()
    }
}

/// Runs `make()`'s future on the reactor of `home` and answers through the returned ticket.
/// `make` runs on the reactor thread (the future it returns need not be `Send`).
pub(crate) fn run_on<T, F, Fut>(home: &ReactorHandle, make: F) -> Ticket<Result<T, NexusError>>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, NexusError>> + 'static,
{
    let (reply, t) = ticket();
    let sent = home.send(move || {
        let fut = make();
        spawn(async move { reply.send(fut.await) });
    });
    if !sent {
        return Ticket::ready(Err(NexusError::ReactorGone));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_reactor::ReactorConfig;

    #[test]
    fn tasks_sleep_join_and_answer() {
        let reactor = Reactor::new(0, None, ReactorConfig::default()).unwrap();
        let t = run_on(&reactor.handle(), || async {
            let a: LocalFuture<'_, u32> = Box::pin(async {
                sleep(Duration::from_millis(5)).await;
                1
            });
            let b: LocalFuture<'_, u32> = Box::pin(async { 2 });
            let v = join_all(vec![a, b]).await;
            Ok(v.iter().sum::<u32>())
        });
        assert_eq!(t.wait(Duration::from_secs(5)).unwrap().unwrap(), 3);
    }

    #[test]
    fn signal_from_another_thread() {
        let reactor = Reactor::new(0, None, ReactorConfig::default()).unwrap();
        let sig = Arc::new(Signal::default());
        let s = sig.clone();
        let t = run_on(&reactor.handle(), move || async move {
            s.wait().await;
            Ok(7)
        });
        let s2 = sig.clone();
        let th = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(10));
            s2.notify();
        });
        assert_eq!(t.wait(Duration::from_secs(5)).unwrap().unwrap(), 7);
        th.join().unwrap();
    }
}
