//! The pool's table in memory: its name, its volumes and their cluster maps. Built from a
//! checkpoint and the journal records after it ([`Table::apply`]), checked as a whole before
//! a pool opens ([`Table::validate`]), and written out whole by a checkpoint.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::format::record::{LvolHeader, Record};
use crate::format::{FormatError, MAX_POOL_CLUSTERS};

/// A volume and its allocated clusters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvolMeta {
    /// Identity, size, flags, parent.
    pub header: LvolHeader,
    /// Allocated clusters: index in the volume -> data cluster of the pool.
    pub map: BTreeMap<u64, u64>,
}

/// Everything the metadata describes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// The pool's name.
    pub lvs_name: String,
    /// Volumes by UUID.
    pub lvols: BTreeMap<Uuid, LvolMeta>,
}

impl Table {
    /// An empty table for a new pool.
    pub fn new(lvs_name: &str) -> Table {
        Table {
            lvs_name: lvs_name.to_string(),
            lvols: BTreeMap::new(),
        }
    }

    /// Applies one record. Records are assignments: one naming a missing volume, or a cluster
    /// past a volume's end, changes nothing, so that a record applied twice (once in a
    /// checkpoint, once replayed) leaves the same table.
    pub fn apply(&mut self, rec: &Record) {
        match rec {
            Record::CreateLvol(h) => {
                // A new volume starts empty (a thick one is mapped by the records after it).
                let m = LvolMeta {
                    header: h.clone(),
                    map: BTreeMap::new(),
                };
                self.lvols.insert(h.uuid, m);
            }
            Record::DeleteLvol(u) => {
                self.lvols.remove(u);
            }
            Record::RenameLvol(u, n) => {
                if let Some(m) = self.lvols.get_mut(u) {
                    m.header.name.clone_from(n);
                }
            }
            Record::ResizeLvol(u, n) => {
                if let Some(m) = self.lvols.get_mut(u) {
                    m.header.num_clusters = *n;
                    m.map.retain(|&i, _| i < *n);
                }
            }
            Record::SetFlags(u, f) => {
                if let Some(m) = self.lvols.get_mut(u) {
                    m.header.flags = *f;
                }
            }
            Record::Map { lvol, index, phys } => {
                // An index at or past the end is a cluster staged for a thick volume's growth
                // (`store/resize.rs`): its `ResizeLvol` record follows; a pool opened without
                // it drops such mappings ([`Table::drop_staged`]).
                if let Some(m) = self.lvols.get_mut(lvol) {
                    m.map.insert(*index, *phys);
                }
            }
            Record::Unmap { lvol, index } => {
                if let Some(m) = self.lvols.get_mut(lvol) {
                    m.map.remove(index);
                }
            }
            Record::RenameLvs(n) => self.lvs_name.clone_from(n),
            Record::SetParent(u, p) => {
                if let Some(m) = self.lvols.get_mut(u) {
                    m.header.parent = *p;
                }
            }
            Record::Snapshot { origin, snap } => {
                // Applied once only: a snapshot whose UUID exists already was applied (the
                // record replayed over a checkpoint that holds it).
                if self.lvols.contains_key(&snap.uuid) {
                    return;
                }
                let Some(o) = self.lvols.get_mut(origin) else {
                    return;
                };
                // Only the volume's own clusters move: a mapping at or past its end is a
                // stale staged one (a growth that never completed, dropped when the pool
                // opened), which a snapshot must not take in.
                let end = o.header.num_clusters;
                let map = std::mem::take(&mut o.map)
                    .into_iter()
                    .filter(|&(i, _)| i < end)
                    .collect();
                o.header.parent = Some(snap.uuid);
                o.header.flags |= crate::format::record::FLAG_THIN;
                let header = LvolHeader {
                    num_clusters: o.header.num_clusters,
                    ..snap.clone()
                };
                self.lvols.insert(snap.uuid, LvolMeta { header, map });
            }
            Record::MergeSnapshot { snap, clone } => {
                if self.lvols.get(clone).and_then(|c| c.header.parent) != Some(*snap) {
                    return;
                }
                let Some(s) = self.lvols.remove(snap) else {
                    return;
                };
                if let Some(c) = self.lvols.get_mut(clone) {
                    // Only the snapshot's own clusters (below its size) move, as in
                    // `merge_plan`.
                    for (i, p) in s.map.range(..s.header.num_clusters) {
                        let (i, p) = (*i, *p);
                        if i < c.header.num_clusters {
                            c.map.entry(i).or_insert(p);
                        }
                    }
                    c.header.parent = s.header.parent;
                }
            }
        }
    }

    /// What a [`Record::MergeSnapshot`] of `snap` into `clone` does to the clusters:
    /// `(moved, freed)`, each `(index, data cluster)`.
    pub fn merge_plan(&self, snap: &Uuid, clone: &Uuid) -> (Vec<(u64, u64)>, Vec<u64>) {
        let (Some(s), Some(c)) = (self.lvols.get(snap), self.lvols.get(clone)) else {
            return (Vec::new(), Vec::new());
        };
        let mut moved = Vec::new();
        let mut freed = Vec::new();
        // Mappings at or past the snapshot's end are not its own (stale staged ones): they
        // neither move nor are freed.
        for (&i, &p) in s.map.range(..s.header.num_clusters) {
            if i < c.header.num_clusters && !c.map.contains_key(&i) {
                moved.push((i, p));
            } else {
                freed.push(p);
            }
        }
        (moved, freed)
    }

    /// Drops the mappings at or past a volume's end: clusters staged by a growth whose
    /// `ResizeLvol` record never became durable (a crash in between). Their data clusters
    /// are then free once the drop is durable: their `Map` records are still in the journal,
    /// so the pool journals an `Unmap` for each before it hands them out (`store/mod.rs`).
    /// Returns the dropped mappings, `(volume, index, data cluster)`.
    pub fn drop_staged(&mut self) -> Vec<(Uuid, u64, u64)> {
        let mut out = Vec::new();
        for (u, m) in &mut self.lvols {
            let end = m.header.num_clusters;
            out.extend(m.map.range(end..).map(|(&i, &p)| (*u, i, p)));
            m.map.retain(|&i, _| i < end);
        }
        out
    }

    /// The volumes whose parent is `u`.
    pub fn children(&self, u: &Uuid) -> Vec<&LvolMeta> {
        self.lvols
            .values()
            .filter(|m| m.header.parent == Some(*u))
            .collect()
    }

    /// `u` and every volume that reads through it (its clones, their clones, ...).
    pub fn descendants(&self, u: &Uuid) -> Vec<Uuid> {
        let mut out = vec![*u];
        let mut i = 0;
        while let Some(&cur) = out.get(i) {
            for c in self.children(&cur) {
                if !out.contains(&c.header.uuid) {
                    out.push(c.header.uuid);
                }
            }
            i += 1;
        }
        out
    }

    /// Checks the table as a whole and returns which data clusters are in use.
    ///
    /// # Errors
    /// [`FormatError::Invalid`] naming the fault: a cluster mapped twice or past the pool's
    /// end, two volumes with one name, a parent that does not exist or a cycle of parents.
    pub fn validate(&self, total_clusters: u64) -> Result<Vec<bool>, FormatError> {
        let n = usize::try_from(total_clusters)
            .map_err(|_| FormatError::Invalid("too many clusters".into()))?;
        let mut used = vec![false; n];
        let mut names = std::collections::BTreeSet::new();
        let sizes = self
            .lvols
            .values()
            .try_fold(0u64, |t, m| t.checked_add(m.header.num_clusters));
        if sizes.is_none_or(|t| t > MAX_POOL_CLUSTERS) {
            return Err(FormatError::Invalid(format!(
                "the volumes have more than {MAX_POOL_CLUSTERS} clusters together"
            )));
        }
        for (u, m) in &self.lvols {
            if !names.insert(m.header.name.as_str()) {
                return Err(FormatError::Invalid(format!(
                    "two volumes are named {}",
                    m.header.name
                )));
            }
            for (&i, &p) in &m.map {
                let slot = usize::try_from(p)
                    .ok()
                    .and_then(|p| used.get_mut(p))
                    .ok_or_else(|| {
                        FormatError::Invalid(format!(
                            "volume {u} maps cluster {i} to {p}, past the pool's \
                             {total_clusters} clusters"
                        ))
                    })?;
                if std::mem::replace(slot, true) {
                    return Err(FormatError::Invalid(format!(
                        "data cluster {p} is mapped twice (again by volume {u})"
                    )));
                }
            }
            // Walk the parents: each must exist, and the walk must end.
            let mut cur = m.header.parent;
            let mut steps = 0usize;
            while let Some(p) = cur {
                let pm = self.lvols.get(&p).ok_or_else(|| {
                    FormatError::Invalid(format!("volume {u} has a missing parent {p}"))
                })?;
                steps += 1;
                if steps > self.lvols.len() {
                    return Err(FormatError::Invalid(format!(
                        "volume {u} has a cycle of parents"
                    )));
                }
                cur = pm.header.parent;
            }
        }
        Ok(used)
    }

    /// The volume named `name`.
    pub fn by_name(&self, name: &str) -> Option<&LvolMeta> {
        self.lvols.values().find(|m| m.header.name == name)
    }

    /// Allocated data clusters.
    pub fn allocated(&self) -> u64 {
        self.lvols.values().map(|m| m.map.len() as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::record::{ClearMethod, FLAG_THIN};
    use proptest::prelude::*;

    fn header(u: Uuid, name: &str, n: u64) -> LvolHeader {
        LvolHeader {
            uuid: u,
            name: name.into(),
            num_clusters: n,
            flags: FLAG_THIN,
            clear: ClearMethod::Default,
            parent: None,
        }
    }

    fn arb_record(ids: Vec<Uuid>) -> impl Strategy<Value = Record> {
        let pick = proptest::sample::select(ids);
        prop_oneof![
            (pick.clone(), 0u64..8).prop_map(|(u, n)| Record::CreateLvol(header(
                u,
                &u.to_string()[..8],
                n
            ))),
            pick.clone().prop_map(Record::DeleteLvol),
            (pick.clone(), 0u64..8).prop_map(|(u, n)| Record::ResizeLvol(u, n)),
            (pick.clone(), 0u64..8, 0u64..32).prop_map(|(lvol, index, phys)| Record::Map {
                lvol,
                index,
                phys
            }),
            (pick.clone(), 0u64..8).prop_map(|(lvol, index)| Record::Unmap { lvol, index }),
            (pick.clone(), 0u32..4).prop_map(|(u, f)| Record::SetFlags(u, f)),
            (pick.clone(), "[a-z]{1,4}").prop_map(|(u, n)| Record::RenameLvol(u, n)),
            (pick, proptest::option::of(Just(Uuid::from_u128(7))))
                .prop_map(|(u, p)| Record::SetParent(u, p)),
        ]
    }

    /// Whether the pool would queue `r` on `t`: records are made only for what they change
    /// (a create for a UUID never used, a map of a free cluster inside an existing volume,
    /// anything else for an existing volume).
    fn would_queue(t: &Table, used: &std::collections::BTreeSet<Uuid>, r: &Record) -> bool {
        match r {
            Record::CreateLvol(h) => !used.contains(&h.uuid),
            Record::Map { phys, lvol, .. } => {
                t.lvols.contains_key(lvol)
                    && !t.lvols.values().any(|o| o.map.values().any(|p| p == phys))
            }
            Record::RenameLvs(_) => true,
            Record::DeleteLvol(u)
            | Record::RenameLvol(u, _)
            | Record::ResizeLvol(u, _)
            | Record::SetFlags(u, _)
            | Record::Unmap { lvol: u, .. }
            | Record::SetParent(u, _) => t.lvols.contains_key(u),
            // Not assignments: a checkpoint holds exactly the records before its position
            // (`store/home.rs`), so they are never applied twice; not generated here.
            Record::Snapshot { .. } | Record::MergeSnapshot { .. } => false,
        }
    }

    proptest! {
        /// What lets a checkpoint include records queued after its journal position: replaying
        /// any suffix of the records again leaves the table unchanged.
        #[test]
        fn replaying_applied_records_changes_nothing(
            cands in proptest::collection::vec(
                arb_record((1..5u128).map(Uuid::from_u128).collect()), 0..60),
            split in 0usize..60,
        ) {
            let mut t = Table::new("p");
            let mut used = std::collections::BTreeSet::new();
            let mut recs = Vec::new();
            for r in cands {
                if would_queue(&t, &used, &r) {
                    if let Record::CreateLvol(h) = &r { used.insert(h.uuid); }
                    t.apply(&r);
                    recs.push(r);
                }
            }
            let once = t.clone();
            let from = split.min(recs.len());
            for r in &recs[from..] { t.apply(r); }
            prop_assert_eq!(t, once);
        }
    }

    fn map(lvol: Uuid, index: u64, phys: u64) -> Record {
        Record::Map { lvol, index, phys }
    }

    /// A thick growth cut before its `ResizeLvol` record leaves staged `Map` records in the
    /// journal; the pool opens without them, another volume takes one of their clusters, and
    /// a snapshot, a thin growth and a merge follow. Replaying the whole journal again (no
    /// checkpoint in between) must give the table the pool had, not take the stale mappings
    /// back in (a snapshot takes only its origin's clusters below its size, a merge only the
    /// snapshot's below its size).
    #[test]
    fn stale_staged_mappings_do_not_come_back_through_a_snapshot_and_a_merge() {
        let (a, b, s) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let mut thick = header(a, "a", 2);
        thick.flags = 0;
        let before_cut = [
            Record::CreateLvol(thick),
            map(a, 0, 0),
            map(a, 1, 1),
            map(a, 2, 2), // staged
            map(a, 3, 3), // staged; the cut comes before ResizeLvol(a, 4)
        ];
        let mut live = Table::new("p");
        for r in &before_cut {
            live.apply(r);
        }
        assert_eq!(live.drop_staged(), vec![(a, 2, 2), (a, 3, 3)]);
        let after_open = [
            Record::CreateLvol(header(b, "b", 4)),
            map(b, 0, 2),
            Record::Snapshot {
                origin: a,
                snap: LvolHeader {
                    flags: crate::format::record::FLAG_SNAPSHOT
                        | crate::format::record::FLAG_READ_ONLY
                        | FLAG_THIN,
                    ..header(s, "s", 0)
                },
            },
            Record::ResizeLvol(a, 4),
            Record::MergeSnapshot { snap: s, clone: a },
        ];
        for r in &after_open {
            live.apply(r);
        }
        assert!(live.validate(8).is_ok());
        let mut replay = Table::new("p");
        for r in before_cut.iter().chain(&after_open) {
            replay.apply(r);
        }
        assert!(replay.drop_staged().is_empty());
        assert_eq!(replay.validate(8), live.validate(8));
        assert_eq!(replay, live);
        assert_eq!(live.lvols[&a].map, BTreeMap::from([(0, 0), (1, 1)]));
        // A snapshot's own stale mapping (past its end) is neither moved nor freed by a
        // merge.
        let mut t = live.clone();
        t.apply(&Record::Snapshot {
            origin: a,
            snap: header(s, "s", 0),
        });
        t.apply(&map(s, 9, 7));
        assert_eq!(t.merge_plan(&s, &a), (vec![(0, 0), (1, 1)], vec![]));
        t.apply(&Record::MergeSnapshot { snap: s, clone: a });
        assert_eq!(t.lvols[&a].map, BTreeMap::from([(0, 0), (1, 1)]));
    }

    #[test]
    fn double_mapping_and_bad_parents_are_refused() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let mut t = Table::new("p");
        t.apply(&Record::CreateLvol(header(a, "a", 4)));
        t.apply(&Record::CreateLvol(header(b, "b", 4)));
        t.apply(&Record::Map {
            lvol: a,
            index: 0,
            phys: 3,
        });
        assert_eq!(t.validate(4).unwrap(), vec![false, false, false, true]);
        assert!(t.validate(3).is_err(), "past the end");
        t.apply(&Record::Map {
            lvol: b,
            index: 1,
            phys: 3,
        });
        assert!(t.validate(4).is_err(), "mapped twice");
        t.apply(&Record::Unmap { lvol: b, index: 1 });
        t.apply(&Record::SetParent(a, Some(b)));
        t.apply(&Record::SetParent(b, Some(a)));
        assert!(t.validate(4).is_err(), "a cycle");
        t.apply(&Record::SetParent(b, Some(Uuid::from_u128(9))));
        assert!(t.validate(4).is_err(), "a missing parent");
        t.apply(&Record::SetParent(b, None));
        t.apply(&Record::RenameLvol(b, "a".into()));
        assert!(t.validate(4).is_err(), "two names");
        t.apply(&Record::RenameLvol(b, "b".into()));
        assert!(t.validate(4).is_ok());
        // Volumes whose maps could not be held in memory (from a hostile disk).
        t.apply(&Record::ResizeLvol(b, MAX_POOL_CLUSTERS));
        assert!(t.validate(4).is_err(), "too many clusters");
        t.apply(&Record::ResizeLvol(b, u64::MAX));
        assert!(t.validate(4).is_err(), "too many clusters, overflowing");
    }
}
