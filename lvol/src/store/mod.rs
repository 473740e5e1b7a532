//! A pool (lvstore) on a bdev: its operations, in `impl Lvs` blocks here and in the
//! submodules (the struct [`Lvs`] itself is defined with its volumes' in the crate's core
//! state, `state.rs`, which uses nothing of this module; the I/O path, `channel.rs`, uses
//! this module to reach the home, never the reverse).
//!
//! Control operations (create, open, volume create/delete/rename/...) are blocking calls for
//! RPC threads (or a test thread that is a reactor: it keeps running its reactor while it
//! waits). Each runs on the pool's home reactor, where the table, the free clusters and the
//! journal live ([`home`]); the I/O path reaches the home only to allocate or free clusters
//! ([`alloc`]). Creating and opening a pool read and write the metadata on a private reactor
//! thread ([`syncio`], [`load`]).

pub(crate) mod alloc;
pub(crate) mod freeze;
pub(crate) mod home;
pub mod load;
mod ops;
#[cfg(test)]
mod race_tests;
mod resize;
mod snap;
pub mod syncio;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_bdev::{Bdev, BdevError, BdevInfo, BdevIo, IoFlags, IoType, open_channel};
use shoal_reactor::{Reactor, ReactorHandle};
use uuid::Uuid;

pub use alloc::FreeKind;
pub use ops::LvolOptions;
// The pool's struct is defined with its volumes' in the crate's core state.
pub use crate::state::Lvs;

use crate::LvolError;
use crate::format::check_name;
use crate::format::record::{FLAG_READ_ONLY, FLAG_SNAPSHOT, FLAG_THIN, Record};
use crate::format::superblock::Superblock;
use crate::state::{LvolBdev, LvolShared, PRODUCT_NAME, new_map};
use home::{Home, Journal, with_home};
use load::Loaded;

/// How long a control operation may take.
pub const OP_WAIT: Duration = Duration::from_secs(120);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What `bdev_lvol_get_lvstores` shows of a pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvsInfo {
    /// UUID.
    pub uuid: Uuid,
    /// Name.
    pub name: String,
    /// The base bdev's name.
    pub base_bdev: String,
    /// Data clusters.
    pub total_data_clusters: u64,
    /// Clusters free now.
    pub free_clusters: u64,
    /// Block size in bytes.
    pub block_size: u32,
    /// Cluster size in bytes.
    pub cluster_size: u64,
}

/// Journal and checkpoint counters, for tests and `bdev_get_bdevs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Journal pages written since the pool opened.
    pub pages_written: u64,
    /// Checkpoints written since the pool opened.
    pub checkpoints_written: u64,
    /// Journal pages replayed when it opened.
    pub replayed_pages: u64,
    /// Whether a metadata write failed (the pool then refuses every change).
    pub failed: bool,
}

/// The answer of an operation run on the home reactor.
struct Ticket<T>(crossbeam_channel::Receiver<T>);

impl<T> Ticket<T> {
    fn wait(self, timeout: Duration) -> Result<T, LvolError> {
        if let Some(r) = Reactor::current() {
            let got = RefCell::new(None);
            r.run_until(timeout, || {
                if got.borrow().is_none()
                    && let Ok(v) = self.0.try_recv()
                {
                    *got.borrow_mut() = Some(v);
                }
                got.borrow().is_some()
            });
            return got.into_inner().ok_or_else(|| in_progress(timeout));
        }
        self.0.recv_timeout(timeout).map_err(|e| match e {
            crossbeam_channel::RecvTimeoutError::Timeout => in_progress(timeout),
            crossbeam_channel::RecvTimeoutError::Disconnected => {
                LvolError::Unavailable("the home reactor dropped the request".into())
            }
        })
    }
}

fn in_progress(waited: Duration) -> LvolError {
    LvolError::InProgress(format!(
        "not complete after {} s: the operation goes on in the pool and may still complete",
        waited.as_secs()
    ))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Lvs {
    /// Makes a new pool named `name` on `base` with clusters of `cluster_size` bytes, and
    /// opens it with `home` as its home reactor. `clear`: deallocate (`Some(false)`) or zero
    /// (`Some(true)`) the data area first, or leave it (`None`).
    ///
    /// # Errors
    /// A bad name or cluster size, a device too small or without FUA, base I/O errors.
    pub fn create(
        base: Arc<dyn Bdev>,
        name: &str,
        cluster_size: u64,
        clear: Option<bool>,
        home: ReactorHandle,
    ) -> Result<Arc<Lvs>, LvolError> {
        check_name("pool", name).map_err(LvolError::Invalid)?;
        load::check_base(base.as_ref())?;
        let info = base.info();
        let sb = Superblock::layout(
            Uuid::new_v4(),
            info.block_size,
            info.num_blocks(),
            cluster_size,
        )
        .map_err(|e| LvolError::Invalid(format!("bdev {}: {e}", info.name)))?;
        let n = name.to_string();
        let clear =
            clear.filter(|_| base.supports(IoType::Unmap) && base.supports(IoType::WriteZeroes));
        syncio::with_sync_io(&base, move |io| load::format(io, &sb, &n, clear))?;
        Lvs::start(base, load::fresh(sb, name), home)
    }

    /// Opens the pool on `base` (examine), with `home` as its home reactor.
    ///
    /// # Errors
    /// [`LvolError::NotAPool`] if the device holds none; [`LvolError::Format`] if its
    /// metadata is corrupt or from a newer version; base I/O errors.
    pub fn open(base: Arc<dyn Bdev>, home: ReactorHandle) -> Result<Arc<Lvs>, LvolError> {
        Lvs::open_checked(base, home, |_, _| Ok(()))
    }

    /// Like [`Lvs::open`], but `check` sees the pool's UUID and table once they are read
    /// and before anything is written to the device or registered: its error refuses the
    /// pool (the caller's own checks, such as names or UUIDs that must be unique).
    ///
    /// # Errors
    /// As [`Lvs::open`], and `check`'s.
    pub fn open_checked(
        base: Arc<dyn Bdev>,
        home: ReactorHandle,
        check: impl FnOnce(Uuid, &crate::table::Table) -> Result<(), LvolError>,
    ) -> Result<Arc<Lvs>, LvolError> {
        load::check_base(base.as_ref())?;
        let b = base.clone();
        let loaded = syncio::with_sync_io(&base, move |io| {
            let sb = load::read_superblock(io, b.as_ref())?;
            load::load(io, b.as_ref(), sb)
        })?;
        check(loaded.sb.uuid, &loaded.table)?;
        Lvs::start(base, loaded, home)
    }

    /// Whether `base` holds a pool (reads its superblocks).
    ///
    /// # Errors
    /// Corrupt metadata or a newer format version (which must not be mistaken for no pool).
    pub fn probe(base: &Arc<dyn Bdev>) -> Result<bool, LvolError> {
        let b = base.clone();
        match syncio::with_sync_io(base, move |io| load::read_superblock(io, b.as_ref())) {
            Ok(_) => Ok(true),
            Err(LvolError::NotAPool(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn start(
        base: Arc<dyn Bdev>,
        mut l: Loaded,
        home: ReactorHandle,
    ) -> Result<Arc<Lvs>, LvolError> {
        let lvs = Arc::new(Lvs {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            sb: l.sb,
            base,
            home: home.clone(),
            name: Mutex::new(l.table.lvs_name.clone()),
            lvols: Mutex::new(BTreeMap::new()),
            free: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            replayed_pages: l.replayed_pages,
        });
        // Volumes, parents first.
        let mut built: HashMap<Uuid, Arc<LvolShared>> = HashMap::new();
        let mut left: Vec<_> = l.table.lvols.values().collect();
        while !left.is_empty() {
            let before = left.len();
            left.retain(|m| {
                let parent = match m.header.parent {
                    None => None,
                    Some(p) => match built.get(&p) {
                        Some(s) => Some(s.clone()),
                        None => return true,
                    },
                };
                let bdev = lvs.build_lvol(&m.header, parent, &m.map);
                built.insert(m.header.uuid, bdev.shared.clone());
                lock(&lvs.lvols).insert(m.header.uuid, bdev);
                false
            });
            if left.len() == before {
                return Err(LvolError::Invalid("a cycle of parents".into()));
            }
        }
        // The clusters of staged mappings dropped at load are free only once an `Unmap` for
        // each is durable: their `Map` records are still in the journal's replay window (a
        // clean close writes no checkpoint), and records replayed later (a snapshot, a merge,
        // a growth) must not take them back after another volume got them.
        let staged = std::mem::take(&mut l.staged);
        let held: BTreeSet<u64> = staged.iter().map(|&(_, _, p)| p).collect();
        let free: BTreeSet<u64> = l
            .used
            .iter()
            .enumerate()
            .filter(|(_, u)| !**u)
            .map(|(i, _)| i as u64)
            .filter(|p| !held.contains(p))
            .collect();
        lvs.free.store(free.len() as u64, Ordering::Relaxed);
        // Mapped by a volume of the table (a pool written before the drop was journaled
        // could have given one to another volume): those stay in use.
        let release: Vec<u64> = held
            .into_iter()
            .filter(|&p| usize::try_from(p).is_ok_and(|i| l.used.get(i) == Some(&false)))
            .collect();
        let (tx, rx) = crossbeam_channel::bounded::<Result<(), LvolError>>(1);
        let l2 = lvs.clone();
        let sent = home.send(move || {
            let r = (|| {
                let reactor = Reactor::current().ok_or(BdevError::NoReactor)?;
                let chan = Rc::new(open_channel(&l2.base)?);
                let h = Home {
                    lvs: l2.clone(),
                    chan,
                    reactor,
                    journaled: l.table.clone(),
                    table: l.table,
                    free,
                    frozen: HashMap::new(),
                    busy: BTreeSet::new(),
                    pending: home::Pending::default(),
                    j: Journal {
                        next_seq: l.next_seq,
                        prev_crc: l.prev_crc,
                        nonce: load::nonce(),
                        pending: Vec::new(),
                        next_rno: 0,
                        durable_rno: 0,
                        waiters: Vec::new(),
                        writing: false,
                        ckpt_gen: l.ckpt_generation,
                        ckpt_seq: l.ckpt_seq,
                        ckpt_area: l.ckpt_area,
                        ckpt_writing: false,
                        failed: None,
                        pages_written: 0,
                        checkpoints_written: 0,
                    },
                    allocating: HashMap::new(),
                    quarantine: Vec::new(),
                    quarantine_timer: false,
                };
                home::install(l2.id, h);
                Ok::<(), BdevError>(())
            })();
            if let Err(e) = r {
                let _ = tx.send(Err(LvolError::Io {
                    context: "opening the pool's base on its home reactor".into(),
                    source: e,
                }));
                return;
            }
            if staged.is_empty() {
                let _ = tx.send(Ok(()));
                return;
            }
            let id = l2.id;
            with_home(id, move |h| {
                let rno = {
                    let mut hm = h.borrow_mut();
                    let mut rno = 0;
                    for (lvol, index, _) in staged {
                        rno = hm.append(Record::Unmap { lvol, index });
                    }
                    rno
                };
                let hc = h.clone();
                h.borrow_mut().when_durable(
                    rno,
                    Box::new(move |r| {
                        if r.is_ok() {
                            let mut hm = hc.borrow_mut();
                            hm.free.extend(release);
                            hm.free_count_changed();
                        } else {
                            home::uninstall(id);
                        }
                        let _ = tx.send(r);
                    }),
                );
                home::kick(h);
            });
        });
        if !sent {
            return Err(LvolError::Unavailable(
                "the home reactor has stopped".into(),
            ));
        }
        Ticket(rx).wait(OP_WAIT)??;
        tracing::info!(
            lvs = %lvs.name(), uuid = %lvs.sb.uuid, base = %lvs.base.info().name,
            volumes = lock(&lvs.lvols).len(), replayed_pages = l.replayed_pages,
            "pool opened"
        );
        Ok(lvs)
    }

    /// A volume's bdev over `map` (index -> data cluster).
    pub(crate) fn build_lvol(
        self: &Arc<Self>,
        h: &crate::format::record::LvolHeader,
        parent: Option<Arc<LvolShared>>,
        map: &BTreeMap<u64, u64>,
    ) -> Arc<LvolBdev> {
        let bs = u64::from(self.sb.block_size);
        let cb = self.sb.cluster_size / bs;
        let n = usize::try_from(h.num_clusters).unwrap_or(0);
        let atoms = new_map(n);
        for (&i, &p) in map {
            if let Some(a) = usize::try_from(i).ok().and_then(|i| atoms.get(i)) {
                a.store(p, Ordering::Relaxed);
            }
        }
        let flags = (
            h.flags & FLAG_THIN != 0,
            h.flags & FLAG_SNAPSHOT != 0,
            h.flags & FLAG_READ_ONLY != 0,
        );
        let shared = Arc::new(LvolShared::new(
            Arc::downgrade(self),
            h.uuid,
            atoms,
            parent,
            flags,
            cb,
            self.sb.data_offset / bs,
        ));
        let (info, size_key) = BdevInfo::new_resizable(
            h.uuid.to_string(),
            Some(h.uuid),
            self.sb.block_size,
            h.num_clusters.saturating_mul(cb),
            PRODUCT_NAME,
        );
        let fua = [IoType::Read, IoType::Write, IoType::WriteZeroes]
            .iter()
            .all(|&t| self.base.supports_flags(t, IoFlags::FUA));
        Arc::new(LvolBdev {
            info,
            size_key,
            shared,
            name: Mutex::new(h.name.clone()),
            fua,
        })
    }

    /// Runs `f` on the home reactor with the home state and a reply; waits for the reply.
    fn on_home<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Rc<RefCell<Home>>, Box<dyn FnOnce(Result<T, LvolError>)>) + Send + 'static,
    ) -> Result<T, LvolError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(LvolError::NotFound(format!(
                "pool {} is closed",
                self.name()
            )));
        }
        let (tx, rx) = crossbeam_channel::bounded(1);
        let id = self.id;
        let tx2 = tx.clone();
        let sent = self.home.send(move || {
            let reply: Box<dyn FnOnce(Result<T, LvolError>)> = Box::new(move |r| {
                let _ = tx.send(r);
            });
            if with_home(id, |h| f(h, reply)).is_none() {
                let _ = tx2.send(Err(LvolError::NotFound("the pool is closed".into())));
            }
        });
        if !sent {
            return Err(LvolError::Unavailable(
                "the home reactor has stopped".into(),
            ));
        }
        Ticket(rx).wait(OP_WAIT)?
    }

    /// The pool's UUID.
    pub fn uuid(&self) -> Uuid {
        self.sb.uuid
    }

    /// The pool's name.
    pub fn name(&self) -> String {
        lock(&self.name).clone()
    }

    /// The base bdev.
    pub fn base(&self) -> &Arc<dyn Bdev> {
        &self.base
    }

    /// The geometry.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    pub(crate) fn set_free(&self, n: u64) {
        self.free.store(n, Ordering::Relaxed);
    }

    /// What `bdev_lvol_get_lvstores` shows.
    pub fn info(&self) -> LvsInfo {
        LvsInfo {
            uuid: self.sb.uuid,
            name: self.name(),
            base_bdev: self.base.info().name.clone(),
            total_data_clusters: self.sb.total_clusters,
            free_clusters: self.free.load(Ordering::Relaxed),
            block_size: self.sb.block_size,
            cluster_size: self.sb.cluster_size,
        }
    }

    /// The volumes.
    pub fn lvols(&self) -> Vec<Arc<LvolBdev>> {
        lock(&self.lvols).values().cloned().collect()
    }

    /// The volume with this UUID or name.
    pub fn lvol(&self, key: &str) -> Option<Arc<LvolBdev>> {
        let m = lock(&self.lvols);
        if let Ok(u) = Uuid::parse_str(key)
            && let Some(l) = m.get(&u)
        {
            return Some(l.clone());
        }
        m.values().find(|l| l.lvol_name() == key).cloned()
    }

    pub(crate) fn lvol_shared(&self, u: &Uuid) -> Option<Arc<LvolShared>> {
        lock(&self.lvols).get(u).map(|l| l.shared.clone())
    }

    /// Whether the pool was closed or destroyed.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Journal counters.
    pub fn journal_stats(&self) -> JournalStats {
        let replayed = self.replayed_pages;
        self.on_home(move |h, reply| {
            let hm = h.borrow();
            reply(Ok(JournalStats {
                pages_written: hm.j.pages_written,
                checkpoints_written: hm.j.checkpoints_written,
                replayed_pages: replayed,
                failed: hm.j.failed.is_some(),
            }));
        })
        .unwrap_or_default()
    }

    /// Asks the home to allocate clusters `idx` of volume `lvol`; `reply` (called on the home
    /// reactor) hears the result. False if the home reactor is gone.
    pub(crate) fn request_alloc(
        lvs: &Arc<Lvs>,
        lvol: Uuid,
        idx: Vec<u64>,
        reply: Box<dyn FnOnce(Result<(), BdevError>) + Send>,
    ) -> bool {
        let id = lvs.id;
        lvs.home.send(move || {
            let done: home::Done = Box::new(move |r| reply(r.map_err(alloc::to_bdev)));
            match with_home(id, |h| h.clone()) {
                Some(h) => alloc::alloc(&h, lvol, idx, done),
                None => done(Err(LvolError::NotFound("the pool is closed".into()))),
            }
        })
    }

    /// Asks the home to allocate cluster `index` of volume `lvol` with `io`, a write of that
    /// whole cluster, as its fill ([`alloc::alloc_write`]); `reply` gets the I/O back.
    /// `Err(io)`: the home is gone (the I/O was not started).
    pub(crate) fn request_alloc_write(
        lvs: &Arc<Lvs>,
        lvol: Uuid,
        index: u64,
        io: BdevIo,
        reply: Box<dyn FnOnce(BdevIo, Result<bool, BdevError>) + Send>,
    ) -> Result<(), BdevIo> {
        let id = lvs.id;
        // The I/O must come back if the message cannot be sent.
        let cell = Arc::new(Mutex::new(Some(io)));
        let sent_io = cell.clone();
        let sent = lvs.home.send(move || {
            let io = sent_io.lock().unwrap_or_else(|e| e.into_inner()).take();
            let Some(io) = io else { return };
            let done: alloc::WriteDone =
                Box::new(move |io, r| reply(io, r.map_err(alloc::to_bdev)));
            match with_home(id, |h| h.clone()) {
                Some(h) => alloc::alloc_write(&h, lvol, index, io, done),
                None => done(io, Err(LvolError::NotFound("the pool is closed".into()))),
            }
        });
        if sent {
            return Ok(());
        }
        let io = cell.lock().unwrap_or_else(|e| e.into_inner()).take();
        io.map_or(Ok(()), Err)
    }

    /// Asks the home to answer when volume `lvol` is no longer frozen.
    pub(crate) fn request_thaw(
        lvs: &Arc<Lvs>,
        lvol: Uuid,
        reply: Box<dyn FnOnce(Result<(), BdevError>) + Send>,
    ) -> bool {
        let id = lvs.id;
        lvs.home.send(move || {
            let done: home::Done = Box::new(move |r| reply(r.map_err(alloc::to_bdev)));
            match with_home(id, |h| h.clone()) {
                Some(h) => freeze::when_thawed(&h, lvol, done),
                None => done(Err(LvolError::NotFound("the pool is closed".into()))),
            }
        })
    }

    /// Asks the home to free clusters `idx` of volume `lvol` (see [`FreeKind`]).
    pub(crate) fn request_free(
        lvs: &Arc<Lvs>,
        lvol: Uuid,
        idx: Vec<u64>,
        kind: FreeKind,
        reply: Box<dyn FnOnce(Result<(), BdevError>) + Send>,
    ) -> bool {
        let id = lvs.id;
        lvs.home.send(move || {
            let done: home::Done = Box::new(move |r| reply(r.map_err(alloc::to_bdev)));
            match with_home(id, |h| h.clone()) {
                Some(h) => alloc::free(&h, lvol, idx, kind, done),
                None => done(Err(LvolError::NotFound("the pool is closed".into()))),
            }
        })
    }
}
