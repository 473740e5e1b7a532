//! Creating a nexus, and re-creating it after a restart from its replicas' metadata.
//!
//! 1. Check the options and the children (block size, capacity, capabilities).
//! 2. Read every child's label. Children with no label are blank; a label of another volume,
//!    of another geometry, or that cannot be read stops the creation (nothing is written).
//! 3. No child labelled: a new volume, every child in sync. Otherwise the children whose label
//!    says `in_sync` at the highest such generation are current; every other child is stale
//!    (rebuilt in full). If no label says `in_sync`, creation fails: no replica is known to be
//!    current. If several children are current but one was not shut down cleanly, they may
//!    disagree on writes that were never acknowledged: one (local first) stays current and
//!    the others are resynchronised from it.
//! 4. Write a new generation: `in_sync` to the current children, not in sync to the stale
//!    ones. A child whose write fails is faulted; if no current child is left, creation fails.
//! 5. Current children come up online; stale ones rebuild before they serve reads.
//!
//! Here too: how to create one ([`NexusOptions`], the defaults and [`PRODUCT_NAME`]) and
//! [`Nexus::create`]; at the end, creation starts the nexus's control task
//! ([`crate::control`]) and its write-intent task (`intent::task`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shoal_bdev::{BdevInfo, IoType};
use shoal_reactor::ReactorHandle;
use uuid::Uuid;

use crate::NexusError;
use crate::commit::{Ctx, label_for};
use crate::control;
use crate::dirty::DirtyMap;
use crate::exec::{self, Ticket};
use crate::intent::{self, IntentError, IntentMap, OnDisk};
use crate::label::{Label, meta_blocks};
use crate::nexus::{ChildEntry, Nexus, State};
use crate::persist::{self, LabelRead};
use crate::rebuild;
use crate::routing::{ChildShared, MAX_CHILDREN, Role, Route, slot_bit};
use crate::state::{ChildState, FaultReason};
use crate::types::{ChildSpec, Geometry, check_spec};

/// Largest segment accepted, in bytes.
pub const MAX_SEGMENT_BYTES: u64 = 16 << 20;

/// The product name the nexus reports (`bdev_get_bdevs`).
pub const PRODUCT_NAME: &str = "Shoal nexus";
/// Default I/O timeout: a child I/O outstanding this long faults the child.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Default segment size: the unit of dirty tracking (and of partial rebuild).
pub const DEFAULT_SEGMENT_BYTES: u64 = 128 << 10;

/// How to create a nexus.
#[derive(Debug, Clone)]
pub struct NexusOptions {
    /// Bdev name.
    pub name: String,
    /// Volume UUID (also the bdev's). When absent: the one the children's metadata names, or
    /// a new one for blank children.
    pub uuid: Option<Uuid>,
    /// Size in bytes that the host sees (a multiple of the block size).
    pub size_bytes: u64,
    /// A child I/O outstanding this long faults the child (`Duration::ZERO`: never).
    pub io_timeout: Duration,
    /// Segment size in bytes: a multiple of the block size, and a power of two.
    pub segment_bytes: u64,
    /// Keep a write-intent bitmap on the children (default): after a crash only the regions
    /// it marks are resynchronised. Without it, every crash resynchronises the whole volume.
    pub write_intent: bool,
    /// How long a region of the bitmap must go unwritten before its bit is cleared.
    pub intent_clean: Duration,
    /// Children labelled for this volume UUID are taken as this volume's (relabelled at
    /// creation): clones of another volume's replicas, e.g. made from its snapshot.
    pub adopt: Option<Uuid>,
}

impl NexusOptions {
    /// Options with the defaults.
    pub fn new(name: impl Into<String>, size_bytes: u64) -> NexusOptions {
        NexusOptions {
            name: name.into(),
            uuid: None,
            size_bytes,
            io_timeout: DEFAULT_IO_TIMEOUT,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            write_intent: true,
            intent_clean: crate::intent::DEFAULT_CLEAN_PERIOD,
            adopt: None,
        }
    }
}

fn geometry(opts: &NexusOptions, children: &[ChildSpec]) -> Result<Geometry, NexusError> {
    let invalid = |m: String| Err(NexusError::Invalid(m));
    if opts.name.is_empty() {
        return invalid("a nexus name must not be empty".into());
    }
    let Some(first) = children.first() else {
        return invalid("a nexus needs at least one child".into());
    };
    if children.len() > MAX_CHILDREN {
        return invalid(format!("a nexus has at most {MAX_CHILDREN} children"));
    }
    let mut uris = BTreeSet::new();
    let mut bdevs = BTreeSet::new();
    for c in children {
        if !uris.insert(c.uri.to_string()) {
            return invalid(format!("child {} is listed twice", c.uri));
        }
        if !bdevs.insert(c.bdev.info().name.clone()) {
            return invalid(format!("bdev {} backs two children", c.bdev.info().name));
        }
    }
    let bs = first.bdev.info().block_size;
    let bs64 = u64::from(bs);
    if !shoal_bdev::valid_block_size(bs) {
        return invalid(format!("block size {bs} is not supported"));
    }
    if opts.size_bytes == 0 || !opts.size_bytes.is_multiple_of(bs64) {
        return invalid(format!(
            "size {} is not a non-zero multiple of the block size {bs}",
            opts.size_bytes
        ));
    }
    let seg = opts.segment_bytes;
    if !seg.is_power_of_two() || seg < bs64 || seg > MAX_SEGMENT_BYTES {
        return invalid(format!(
            "segment size {seg} must be a power of two from {bs} to {MAX_SEGMENT_BYTES}"
        ));
    }
    let data_blocks = opts.size_bytes / bs64;
    let seg_blocks = seg / bs64;
    Ok(Geometry {
        block_size: bs,
        meta_blocks: meta_blocks(bs),
        data_blocks,
        seg_blocks,
        segments: data_blocks.div_ceil(seg_blocks),
    })
}

/// Which children are current.
struct Plan {
    volume: Uuid,
    /// The generation to write (above every label seen).
    generation: u64,
    /// Per child: current, and its replica UUID.
    current: Vec<bool>,
    replicas: Vec<Uuid>,
    /// After an unclean stop: the current children resynchronised from the one kept (where
    /// the write-intent bitmaps say, or in full).
    resync: Vec<usize>,
    /// The generation of the current children's labels (0 for blank children).
    current_generation: u64,
    /// The volume UUID each current child's label carries (the adopted volume's for a
    /// clone of its replica: its write-intent bitmap is stamped with it).
    label_volume: Uuid,
}

fn describe(spec: &ChildSpec, read: &LabelRead) -> String {
    match read {
        LabelRead::Blank => format!("{} (blank)", spec.uri),
        LabelRead::Found(l) => format!(
            "{} (generation {}, {})",
            spec.uri,
            l.generation,
            if l.in_sync { "in sync" } else { "not in sync" }
        ),
        LabelRead::Unreadable(w) => format!("{} (unreadable: {w})", spec.uri),
    }
}

fn plan(
    opts: &NexusOptions,
    geo: &Geometry,
    children: &[ChildSpec],
    reads: &[LabelRead],
) -> Result<Plan, NexusError> {
    let mut labels: Vec<(usize, Label)> = Vec::new();
    for (i, (c, r)) in children.iter().zip(reads).enumerate() {
        match r {
            LabelRead::Blank => {}
            LabelRead::Found(l) => labels.push((i, *l)),
            LabelRead::Unreadable(why) => {
                return Err(NexusError::Open {
                    uri: c.uri.to_string(),
                    reason: format!("its metadata cannot be read ({why})"),
                });
            }
        }
    }
    let uri = |i: usize| {
        children
            .get(i)
            .map(|c| c.uri.to_string())
            .unwrap_or_default()
    };
    let volumes: BTreeSet<Uuid> = labels.iter().map(|(_, l)| l.volume_uuid).collect();
    let volume = match opts.uuid {
        Some(u) => {
            // A clone of another volume's replica (`adopt`) is taken as this volume's; its
            // label is rewritten below with this volume's UUID.
            let ours = |l: &Label| l.volume_uuid == u || opts.adopt == Some(l.volume_uuid);
            if let Some((i, l)) = labels.iter().find(|(_, l)| !ours(l)) {
                return Err(NexusError::ForeignChild {
                    uri: uri(*i),
                    found: l.volume_uuid,
                    expected: u,
                });
            }
            u
        }
        None if volumes.len() > 1 => {
            return Err(NexusError::Invalid(format!(
                "the children belong to different volumes ({volumes:?}); name the volume's uuid"
            )));
        }
        None => volumes.first().copied().unwrap_or_else(Uuid::new_v4),
    };
    let mut replicas_seen = BTreeSet::new();
    for (i, l) in &labels {
        // A label of a smaller volume is a growth (the replicas grew, or a nexus grew and
        // stopped before every label recorded it: no write had reached past the old end
        // then, since a nexus records its new size everywhere first); a larger one would
        // cut the volume short.
        if l.block_size != geo.block_size
            || l.data_offset_blocks != geo.meta_blocks
            || l.data_blocks > geo.data_blocks
        {
            return Err(NexusError::Invalid(format!(
                "child {} holds a volume of {} blocks of {} bytes; asked for {} blocks of {}",
                uri(*i),
                l.data_blocks,
                l.block_size,
                geo.data_blocks,
                geo.block_size
            )));
        }
        if !replicas_seen.insert(l.replica_uuid) {
            return Err(NexusError::Invalid(format!(
                "child {} is the same replica ({}) as another child",
                uri(*i),
                l.replica_uuid
            )));
        }
    }
    let mut replicas: Vec<Uuid> = (0..children.len()).map(|_| Uuid::new_v4()).collect();
    for (i, l) in &labels {
        if let Some(r) = replicas.get_mut(*i) {
            *r = l.replica_uuid;
        }
    }
    if labels.is_empty() {
        return Ok(Plan {
            volume,
            generation: 1,
            current: vec![true; children.len()],
            replicas,
            resync: Vec::new(),
            current_generation: 0,
            label_volume: volume,
        });
    }
    let Some(gmax) = labels
        .iter()
        .filter(|(_, l)| l.in_sync)
        .map(|(_, l)| l.generation)
        .max()
    else {
        let all: Vec<String> = children
            .iter()
            .zip(reads)
            .map(|(c, r)| describe(c, r))
            .collect();
        return Err(NexusError::NoCurrentChild(format!(
            "none of the children's metadata says it holds current data: {}",
            all.join(", ")
        )));
    };
    let mut current = vec![false; children.len()];
    for (i, l) in &labels {
        if l.in_sync
            && l.generation == gmax
            && let Some(c) = current.get_mut(*i)
        {
            *c = true;
        }
    }
    let cur: Vec<usize> = (0..children.len()).filter(|&i| current[i]).collect();
    let label_volume = labels
        .iter()
        .find(|(i, _)| current.get(*i) == Some(&true))
        .map_or(volume, |(_, l)| l.volume_uuid);
    let mut resync = Vec::new();
    let unclean = cur.len() >= 2
        && labels
            .iter()
            .any(|(i, l)| current.get(*i) == Some(&true) && !l.clean);
    if unclean {
        let keep = cur
            .iter()
            .copied()
            .find(|&i| children.get(i).is_some_and(|c| c.local))
            .or_else(|| cur.first().copied());
        tracing::warn!(
            nexus = %opts.name,
            "the nexus was not shut down cleanly: resynchronising the replicas from {}",
            keep.map(uri).unwrap_or_default()
        );
        for (i, c) in current.iter_mut().enumerate() {
            if *c && Some(i) != keep {
                resync.push(i);
            }
            *c = Some(i) == keep;
        }
    }
    // The next generation. Every change of the in-sync set adds one, so no real volume gets
    // near the bound; a label beyond it is corrupt or crafted, and is refused rather than
    // taken over (near the top of the range the generation could not advance).
    let newest = labels.iter().max_by_key(|(_, l)| l.generation);
    let generation = match newest {
        None => 1,
        Some((i, l)) if l.generation > crate::label::MAX_RESTART_GENERATION => {
            return Err(NexusError::Open {
                uri: uri(*i),
                reason: format!(
                    "its metadata has generation {}, beyond any a nexus writes (corrupt?)",
                    l.generation
                ),
            });
        }
        Some((_, l)) => l.generation + 1,
    };
    Ok(Plan {
        volume,
        generation,
        current,
        replicas,
        resync,
        current_generation: gmax,
        label_volume,
    })
}

impl Nexus {
    /// Creates a nexus over `children` (all must be opened), reading their metadata to tell
    /// current replicas from stale ones (see [`crate::label`]). Current children come up
    /// online, stale and new ones are rebuilt. Runs on `home`, which also runs the nexus's
    /// control path and rebuilds from then on.
    pub fn create(
        opts: NexusOptions,
        children: Vec<ChildSpec>,
        home: &ReactorHandle,
    ) -> Ticket<Result<Arc<Nexus>, NexusError>> {
        let h = home.clone();
        crate::exec::run_on(home, move || crate::create::create(opts, children, h))
    }
}

pub(crate) async fn create(
    opts: NexusOptions,
    children: Vec<ChildSpec>,
    home: ReactorHandle,
) -> Result<Arc<Nexus>, NexusError> {
    let geo = geometry(&opts, &children)?;
    let caps = (
        children
            .iter()
            .all(|c| c.bdev.supports(IoType::WriteZeroes)),
        children.iter().all(|c| c.bdev.supports(IoType::Unmap)),
    );
    for c in &children {
        check_spec(&geo, caps, c)?;
    }
    let mut reads = Vec::with_capacity(children.len());
    for c in &children {
        let open_err = |e: shoal_bdev::BdevError| NexusError::Open {
            uri: c.uri.to_string(),
            reason: e.to_string(),
        };
        let chan = shoal_bdev::open_channel(&c.bdev).map_err(open_err)?;
        reads.push(
            persist::read_label(&chan, geo.block_size, opts.io_timeout)
                .await
                .map_err(open_err)?,
        );
    }
    let plan = plan(&opts, &geo, &children, &reads)?;
    let info = BdevInfo::new_resizable(
        opts.name.clone(),
        Some(plan.volume),
        geo.block_size,
        geo.data_blocks,
        PRODUCT_NAME,
    );
    let state = State {
        volume: plan.volume,
        generation: plan.generation,
        children: Vec::new(),
        departed: Vec::new(),
        destroying: false,
    };
    let intent = IntentMap::new(&geo, opts.write_intent, opts.intent_clean);
    // After an unclean stop, the regions the write-intent bitmaps mark are all the current
    // children can disagree on: the union of their bitmaps is resynchronised (all of them
    // readable, or the whole volume).
    let mut partial: Option<Vec<OnDisk>> = None;
    if !plan.resync.is_empty() && opts.write_intent {
        let mut maps = Vec::new();
        for (i, c) in children.iter().enumerate() {
            let was_current = plan.current.get(i) == Some(&true) || plan.resync.contains(&i);
            if !was_current {
                continue;
            }
            let read = match shoal_bdev::open_channel(&c.bdev) {
                Ok(chan) => {
                    let stamp = intent::Stamp {
                        volume: plan.label_volume,
                        generation: plan.current_generation,
                    };
                    let data_bytes = geo.data_blocks.saturating_mul(u64::from(geo.block_size));
                    intent::read(&chan, geo.block_size, (stamp, data_bytes), opts.io_timeout).await
                }
                Err(e) => Err(IntentError::Invalid(e.to_string())),
            };
            match read {
                Ok(m) => maps.push(m),
                Err(e) => {
                    tracing::warn!(nexus = %opts.name, child = %c.uri,
                        "write-intent bitmap not usable ({e:?}): resynchronising in full");
                    maps.clear();
                    break;
                }
            }
        }
        if !maps.is_empty() {
            intent.preset(
                &maps,
                geo.seg_blocks.saturating_mul(u64::from(geo.block_size)),
            );
            partial = Some(maps);
        }
    }
    let nx = Arc::new(Nexus::new(
        info,
        home,
        geo,
        opts.io_timeout,
        caps,
        state,
        intent,
    ));
    let shared: Vec<Arc<ChildShared>> = children
        .iter()
        .map(|c| {
            Arc::new(ChildShared {
                id: nx.next_child_id(),
                bdev: c.bdev.clone(),
                local: c.local,
                dirty: Arc::new(DirtyMap::new(geo.segments, false)),
                abandoned: AtomicU64::new(0),
            })
        })
        .collect();
    let ctx = Ctx::new(nx.clone());
    let labels: Vec<(Arc<ChildShared>, Label)> = shared
        .iter()
        .zip(plan.current.iter().zip(&plan.replicas))
        .map(|(s, (&cur, &replica))| {
            (
                s.clone(),
                label_for(&nx, plan.volume, replica, plan.generation, cur, false),
            )
        })
        .collect();
    let results = ctx.write_labels(&labels).await;
    let mut online_mask = 0u64;
    let mut rebuilding = Vec::new();
    let mut lost_current = false;
    {
        let mut st = nx.lock_state();
        for (slot, ((c, s), r)) in children.iter().zip(&shared).zip(&results).enumerate() {
            let cur = plan.current.get(slot).copied().unwrap_or(false);
            let (state, role) = match (r, cur) {
                (Ok(()), true) => (ChildState::Online, Role::Read),
                (Ok(()), false) => (ChildState::Rebuilding, Role::Write),
                (Err(e), _) => {
                    tracing::warn!(nexus = %opts.name, child = %c.uri, "metadata write failed: {e}");
                    lost_current |= cur;
                    (ChildState::Faulted(FaultReason::MetadataError), Role::Track)
                }
            };
            match (&partial, cur) {
                (_, true) => {}
                (Some(maps), false) if plan.resync.contains(&slot) => {
                    let seg_bytes = geo.seg_blocks.saturating_mul(u64::from(geo.block_size));
                    for m in maps {
                        m.mark(&s.dirty, seg_bytes);
                    }
                }
                _ => s.dirty.set_all(),
            }
            match state {
                ChildState::Online => online_mask |= slot_bit(slot),
                ChildState::Rebuilding => rebuilding.push(slot),
                _ => {}
            }
            st.children.push(ChildEntry {
                slot,
                uri: c.uri.clone(),
                shared: s.clone(),
                state: ChildState::Init,
                replica: plan
                    .replicas
                    .get(slot)
                    .copied()
                    .unwrap_or_else(Uuid::new_v4),
                rebuild: None,
                last_rebuild: None,
            });
            st.transition(slot, state)?;
            nx.publish(|rt| {
                rt.set(
                    slot,
                    Some(Route {
                        child: s.clone(),
                        role,
                    }),
                );
            });
        }
        if online_mask == 0 {
            return Err(NexusError::NoCurrentChild(
                "the metadata of no current child could be written".into(),
            ));
        }
        nx.online_mask.store(online_mask, Ordering::SeqCst);
        for slot in rebuilding {
            rebuild::start(&nx, &mut st, slot);
        }
    }
    // A current child whose label write failed may still hold a label that says in sync at
    // this generation (the write landed, its flush failed): the others get a newer one before
    // any host write, or a restart could trust it without the writes it will miss.
    if lost_current {
        ctx.commit(None, false).await?;
    }
    exec::spawn(control::run(ctx));
    if nx.intent.enabled {
        exec::spawn(intent::task::run(nx.clone()));
    }
    tracing::info!(nexus = %opts.name, uuid = %plan.volume, generation = plan.generation,
        "nexus created");
    Ok(nx)
}
