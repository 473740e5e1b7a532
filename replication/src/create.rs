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

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use shoal_bdev::reactor::ReactorHandle;
use shoal_bdev::{BdevInfo, IoFlags, IoType};
use uuid::Uuid;

use crate::control::{self, ChildEntry, Ctx, State, label_for};
use crate::dirty::DirtyMap;
use crate::intent::{self, IntentError, IntentMap, OnDisk};
use crate::label::{Label, meta_blocks};
use crate::nexus::{ChildSpec, Geometry, Nexus, NexusOptions, PRODUCT_NAME};
use crate::persist::{self, LabelRead};
use crate::rebuild;
use crate::routing::{ChildShared, MAX_CHILDREN, Role, Route, slot_bit};
use crate::state::{ChildState, FaultReason};
use crate::{NexusError, exec};

/// Largest segment accepted, in bytes.
pub const MAX_SEGMENT_BYTES: u64 = 16 << 20;

/// Checks a child against the nexus's geometry and capabilities.
pub(crate) fn check_spec(
    geo: &Geometry,
    caps: (bool, bool),
    spec: &ChildSpec,
) -> Result<(), NexusError> {
    let info = spec.bdev.info();
    let uri = spec.uri.to_string();
    if info.is_closed() {
        return Err(NexusError::Open {
            uri,
            reason: "the bdev is closed".into(),
        });
    }
    if info.block_size != geo.block_size {
        return Err(NexusError::Invalid(format!(
            "child {uri} has {}-byte blocks, the nexus {}-byte blocks",
            info.block_size, geo.block_size
        )));
    }
    let need = geo.meta_blocks.saturating_add(geo.data_blocks);
    if info.num_blocks() < need {
        return Err(NexusError::Invalid(format!(
            "child {uri} has {} blocks; the nexus needs {need} ({} of them for metadata)",
            info.num_blocks(),
            geo.meta_blocks
        )));
    }
    for (t, has) in [(IoType::WriteZeroes, caps.0), (IoType::Unmap, caps.1)] {
        if has && !spec.bdev.supports(t) {
            return Err(NexusError::Invalid(format!(
                "child {uri} does not support {t:?}, which the nexus offers"
            )));
        }
    }
    // The nexus answers a FUA write only when every in-sync child has made it durable, so a
    // child must honour FUA itself: it would otherwise refuse every such leg and be faulted.
    let fua = [
        (IoType::Read, true),
        (IoType::Write, true),
        (IoType::WriteZeroes, caps.0),
    ];
    for (t, has) in fua {
        if has && !spec.bdev.supports_flags(t, IoFlags::FUA) {
            return Err(NexusError::Invalid(format!(
                "child {uri} does not honour Force Unit Access on {t:?}"
            )));
        }
    }
    Ok(())
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
        if l.block_size != geo.block_size
            || l.data_offset_blocks != geo.meta_blocks
            || l.data_blocks != geo.data_blocks
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
    let info = BdevInfo::new(
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
