//! Where a new volume's replicas go ([`place`]): pools on distinct online nodes within the
//! topology asked, with room, spread over zones. Used by volume creation
//! ([`crate::volume_ops`]), volumes made from a snapshot ([`crate::snapshot`]) and the
//! healer's replacements ([`crate::heal`]).
//!
//! A pure function of the node, pool and volume records: it reads and writes nothing.

use std::collections::{BTreeSet, HashMap};

use crate::model::{NodeView, Status};
use crate::pool::{PoolRecord, PoolState};
use crate::volume::{ReplicaRecord, VolumeRecord, VolumeSpec, VolumeState};
use crate::{Error, Result};

/// Chooses `spec.replicas` pools on distinct online nodes: within the topology, with room,
/// the most free space first, then the fewest replicas; a node in a zone not used yet is
/// preferred, so replicas spread over distinct zones as far as the zones go.
///
/// # Errors
/// [`Error::Exhausted`] saying why when there are not enough.
pub fn place(
    spec: &VolumeSpec,
    nodes: &[NodeView],
    pools: &[PoolRecord],
    volumes: &[VolumeRecord],
    exclude_nodes: &BTreeSet<String>,
) -> Result<Vec<ReplicaRecord>> {
    let mut load: HashMap<&str, usize> = HashMap::new();
    for v in volumes {
        for r in &v.replica_list {
            *load.entry(r.node.as_str()).or_default() += 1;
        }
    }
    let topo = spec.topology.clone().unwrap_or_default();
    let probe = VolumeRecord {
        id: String::new(),
        spec: spec.clone(),
        state: VolumeState::Creating,
        replica_list: vec![],
        target: None,
        created_ms: 0,
        retired: vec![],
        adopt: None,
        resizing_to: None,
    };
    // The best pool of each eligible node: (node, zone, pool, free).
    let mut cands: Vec<(&NodeView, Option<&str>, &PoolRecord)> = Vec::new();
    let mut eligible_nodes = 0;
    for n in nodes {
        let id = n.record.id.as_str();
        if n.status != Status::Online || exclude_nodes.contains(id) {
            continue;
        }
        if topo
            .nodes
            .as_ref()
            .is_some_and(|l| !l.iter().any(|x| x == id))
        {
            continue;
        }
        let zone = n.record.zone();
        if let Some(zs) = &topo.zones
            && !zone.is_some_and(|z| zs.iter().any(|x| x == z))
        {
            continue;
        }
        eligible_nodes += 1;
        let best = pools
            .iter()
            .filter(|p| p.spec.node == id && p.state == PoolState::Online)
            .filter(|p| {
                let need = probe.replica_bytes(p.cluster_bytes);
                if spec.thin {
                    p.capacity_bytes >= need && p.free_bytes >= p.cluster_bytes
                } else {
                    p.free_bytes >= need
                }
            })
            .max_by_key(|p| p.free_bytes);
        if let Some(p) = best {
            cands.push((n, zone, p));
        }
    }
    cands.sort_by(|a, b| {
        b.2.free_bytes
            .cmp(&a.2.free_bytes)
            .then_with(|| {
                let la = load.get(a.0.record.id.as_str()).copied().unwrap_or(0);
                let lb = load.get(b.0.record.id.as_str()).copied().unwrap_or(0);
                la.cmp(&lb)
            })
            .then_with(|| a.0.record.id.cmp(&b.0.record.id))
    });
    let want = spec.replicas as usize;
    if cands.len() < want {
        return Err(Error::Exhausted(format!(
            "{want} replicas of {} bytes need {want} online nodes with a pool that has room{}; {} eligible node(s), {} with room",
            spec.size_bytes,
            if topo.zones.is_some() || topo.nodes.is_some() {
                " within the topology asked"
            } else {
                ""
            },
            eligible_nodes,
            cands.len()
        )));
    }
    let mut chosen: Vec<usize> = Vec::new();
    let mut zones: BTreeSet<&str> = BTreeSet::new();
    while chosen.len() < want {
        let next = cands
            .iter()
            .enumerate()
            .filter(|(i, _)| !chosen.contains(i))
            .find(|(_, c)| c.1.is_none_or(|z| !zones.contains(z)))
            .or_else(|| cands.iter().enumerate().find(|(i, _)| !chosen.contains(i)))
            .map(|(i, _)| i);
        let Some(i) = next else { break };
        if let Some(z) = cands.get(i).and_then(|c| c.1) {
            zones.insert(z);
        }
        chosen.push(i);
    }
    Ok(chosen
        .into_iter()
        .filter_map(|i| cands.get(i))
        .map(|(n, _, p)| ReplicaRecord::planned(&n.record.id, &p.spec.name))
        .collect())
}
