//! Blocking metadata I/O for the control path (creating and opening a pool): a private
//! reactor on a thread of its own, so that no reactor of the daemon blocks, and a test thread
//! that is itself a reactor can open a pool too.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use shoal_bdev::{
    Bdev, BdevError, BdevIo, IoBuf, IoChannel, IoFlags, IoSink, SgList, open_channel,
};
use shoal_reactor::{Reactor, ReactorConfig};

use crate::LvolError;

/// How long one metadata I/O may take.
const IO_WAIT: Duration = Duration::from_secs(60);

#[derive(Default)]
struct One(RefCell<Option<(BdevIo, Result<(), BdevError>)>>);

impl IoSink for One {
    fn io_done(&self, _tag: u64, io: BdevIo, result: Result<(), BdevError>) {
        *self.0.borrow_mut() = Some((io, result));
    }
}

/// A channel to the base on a private reactor, used one request at a time.
pub struct SyncIo {
    reactor: Reactor,
    chan: IoChannel,
    bs: u64,
    name: String,
}

fn io_err(ctx: &str, e: BdevError) -> LvolError {
    LvolError::Io {
        context: ctx.to_string(),
        source: e,
    }
}

impl SyncIo {
    fn run(&self, io: BdevIo, ctx: &str) -> Result<BdevIo, LvolError> {
        let sink = Rc::new(One::default());
        self.chan.submit(io, sink.clone(), 0);
        let ok = self
            .reactor
            .run_until(IO_WAIT, || sink.0.borrow().is_some());
        if !ok {
            return Err(io_err(ctx, BdevError::TimedOut));
        }
        let (io, r) = sink
            .0
            .borrow_mut()
            .take()
            .ok_or_else(|| io_err(ctx, BdevError::TimedOut))?;
        r.map_err(|e| io_err(&format!("{ctx} on {}", self.name), e))?;
        Ok(io)
    }

    fn blocks(&self, bytes: u64, ctx: &str) -> Result<u64, LvolError> {
        if !bytes.is_multiple_of(self.bs) {
            return Err(LvolError::Invalid(format!(
                "{ctx}: {bytes} bytes is not a whole number of blocks"
            )));
        }
        Ok(bytes / self.bs)
    }

    /// Reads `len` bytes at byte `offset`.
    pub fn read(&self, offset: u64, len: u64, ctx: &str) -> Result<Vec<u8>, LvolError> {
        let n =
            usize::try_from(len).map_err(|_| LvolError::Invalid(format!("{ctx}: too large")))?;
        let io = BdevIo::read(
            self.blocks(offset, ctx)?,
            self.blocks(len, ctx)?,
            SgList::from_buf([IoBuf::zeroed(n)]),
        );
        let io = self.run(io, ctx)?;
        let mut out = Vec::with_capacity(n);
        for b in &io.bufs {
            out.extend_from_slice(b.as_slice());
        }
        Ok(out)
    }

    /// Writes `data` at byte `offset`, durably (FUA).
    pub fn write(&self, offset: u64, data: &[u8], ctx: &str) -> Result<(), LvolError> {
        let io = BdevIo::write(
            self.blocks(offset, ctx)?,
            self.blocks(data.len() as u64, ctx)?,
            SgList::from_buf([IoBuf::copy_from(data)]),
        )
        .with_flags(IoFlags::FUA);
        self.run(io, ctx).map(|_| ())
    }

    /// Deallocates or zeroes `len` bytes at byte `offset` (best effort for deallocate).
    pub fn clear(&self, offset: u64, len: u64, zeroes: bool, ctx: &str) -> Result<(), LvolError> {
        let (o, n) = (self.blocks(offset, ctx)?, self.blocks(len, ctx)?);
        if n == 0 {
            return Ok(());
        }
        let io = if zeroes {
            BdevIo::write_zeroes(o, n)
        } else {
            BdevIo::unmap(o, n)
        };
        self.run(io, ctx).map(|_| ())
    }
}

/// Runs `f` with blocking I/O to `base` on a private reactor thread.
///
/// # Errors
/// What `f` returns, or a failure to start the thread or open the base.
pub fn with_sync_io<T: Send + 'static>(
    base: &Arc<dyn Bdev>,
    f: impl FnOnce(&SyncIo) -> Result<T, LvolError> + Send + 'static,
) -> Result<T, LvolError> {
    let base = base.clone();
    let t = std::thread::Builder::new()
        .name("lvol-md".into())
        .spawn(move || {
            let reactor = Reactor::new(0, None, ReactorConfig::default())
                .map_err(|e| io_err("starting a metadata reactor", BdevError::Os(e)))?;
            let chan = open_channel(&base).map_err(|e| io_err("opening the base", e))?;
            let io = SyncIo {
                reactor,
                chan,
                bs: u64::from(base.info().block_size),
                name: base.info().name.clone(),
            };
            f(&io)
        })
        .map_err(|e| io_err("starting a metadata thread", BdevError::Os(e)))?;
    t.join()
        .map_err(|_| LvolError::Unavailable("the metadata thread panicked".into()))?
}
