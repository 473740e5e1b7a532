//! NVMe/TCP mode (`-r`): load on remote namespaces through Shoal's host library.
//!
//! One controller per `-r` (per subsystem found, without `subnqn`), its admin queue on the
//! first core's reactor. Every core of `-c` gets one job per namespace, and each job opens
//! `-P` I/O queue pairs of its own on its reactor, spreading its `-q` I/Os over them, as
//! `spdk_nvme_perf` does. The controllers reconnect when the target goes away (every
//! `--reconnect-delay-ms`, for up to `--ctrl-loss-tmo` seconds): I/Os are held meanwhile and
//! reissued after the reconnect.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use shoal_bdev::{BdevIo, IoSink};
use shoal_nvmf::host::{
    ConnectOptions, Controller, HostError, IoQueuePair, NamespaceInfo, QueueState, discover,
};
use shoal_nvmf::wire::spec::StatusCodeType;
use shoal_nvmf::wire::spec::log::discovery;
use shoal_reactor::{Reactor, ReactorSet, parse_core_mask};

use super::job::{IoTarget, JobConfig, Progress};
use super::report::Report;
use super::runner::{self, Setup};
use super::trid::TransportId;
use super::verify::VerifyMap;
use super::{Args, cpu, job_seed, run_id};

/// A one-line description of a host error, for the user.
pub fn describe(e: &HostError) -> String {
    match e {
        // NVMe-oF 1.1 section 3.3 (Connect response) and NVMe Base 2.0 Figure 103 (Fabrics
        // command status values).
        HostError::ConnectRefused { status, dw0 }
            if status.sct == StatusCodeType::COMMAND_SPECIFIC =>
        {
            let why = match status.sc {
                0x80 => "incompatible format",
                0x81 => "controller busy",
                0x82 => "invalid parameters (unknown subsystem NQN?)",
                0x83 => "restart discovery",
                0x84 => "this host is not allowed on the subsystem (Connect Invalid Host)",
                _ => "refused",
            };
            format!(
                "the target refused the connection: {why} (status {:#x}/{:#x}, DW0 {dw0:#x})",
                status.sct.0, status.sc
            )
        }
        HostError::ConnectRefused { status, dw0 } => format!(
            "the target refused the connection (status {:#x}/{:#x}, DW0 {dw0:#x})",
            status.sct.0, status.sc
        ),
        other => other.to_string(),
    }
}

/// One namespace to load, on one controller.
struct Target {
    ctrl: Arc<Controller>,
    ns: NamespaceInfo,
    name: String,
    verify: Option<Arc<VerifyMap>>,
}

/// A job's queue pairs to its namespace: I/O `tag` goes to queue pair `tag % P`.
struct QueuePairs {
    ns: NamespaceInfo,
    qps: Vec<IoQueuePair>,
    ctrl: Arc<Controller>,
}

impl IoTarget for QueuePairs {
    #[inline]
    fn submit(&self, io: BdevIo, sink: Rc<dyn IoSink>, tag: u64) {
        let n = u64::try_from(self.qps.len()).unwrap_or(1).max(1);
        let i = usize::try_from(tag % n).unwrap_or(0);
        if let Some(qp) = self.qps.get(i) {
            qp.submit(&self.ns, io, sink, tag);
        }
    }

    fn ready(&self) -> Result<bool, String> {
        let mut all = true;
        for qp in &self.qps {
            match qp.state() {
                QueueState::Connected => {}
                QueueState::Connecting | QueueState::Disconnected => all = false,
                QueueState::Failed | QueueState::Closed => {
                    let why = self
                        .ctrl
                        .last_error()
                        .map_or_else(|| "failed".to_string(), |e| describe(&e));
                    return Err(format!("I/O queue {} did not connect: {why}", qp.qid()));
                }
            }
        }
        Ok(all)
    }
}

struct NvmeSetup {
    targets: Vec<Target>,
    args: Args,
    blocks_per_io: Vec<u64>,
    progress: Vec<Vec<Arc<Progress>>>,
}

impl Setup for NvmeSetup {
    fn jobs(
        &self,
        index: usize,
        core: usize,
    ) -> Result<Vec<(JobConfig, Box<dyn IoTarget>)>, String> {
        if Reactor::current().is_none() {
            return Err("not on a reactor".into());
        }
        let mut jobs: Vec<(JobConfig, Box<dyn IoTarget>)> = Vec::new();
        for (t_idx, t) in self.targets.iter().enumerate() {
            let mut qps = Vec::new();
            for _ in 0..self.args.connections {
                let qp = IoQueuePair::open(&t.ctrl).map_err(|e| {
                    format!("{}: cannot open an I/O queue: {}", t.name, describe(&e))
                })?;
                qps.push(qp);
            }
            let bpi = self.blocks_per_io.get(t_idx).copied().unwrap_or(1);
            let cfg = JobConfig {
                label: format!("{} NSID {} from core {core:>2}", t.name, t.ns.nsid),
                core,
                nsid: Some(t.ns.nsid),
                block_size: t.ns.block_size,
                blocks_per_io: bpi,
                slots: t.ns.num_blocks / bpi,
                queue_depth: self.args.queue_depth,
                read_percent: self.args.workload.read_percent(self.args.rwmixread),
                random: self.args.workload.random(),
                seed: job_seed(core, t_idx),
                verify: t.verify.clone(),
                progress: self
                    .progress
                    .get(index)
                    .and_then(|p| p.get(t_idx))
                    .cloned()
                    .unwrap_or_default(),
            };
            let target = QueuePairs {
                ns: t.ns.clone(),
                qps,
                ctrl: t.ctrl.clone(),
            };
            jobs.push((cfg, Box::new(target)));
        }
        Ok(jobs)
    }
}

fn options(args: &Args, id: &TransportId, subnqn: &str, cores: usize) -> ConnectOptions {
    let mut o = ConnectOptions::new(&id.traddr, id.trsvcid, subnqn);
    if let Some(h) = id.hostnqn.as_ref().or(args.hostnqn.as_ref()) {
        o.hostnqn.clone_from(h);
    }
    o.header_digest = args.header_digest;
    o.data_digest = args.data_digest;
    let per_core = u64::from(args.connections) * if id.nsid.is_some() { 1 } else { 8 };
    let queues = per_core * u64::try_from(cores).unwrap_or(1);
    o.io_queues = u16::try_from(queues.max(64)).unwrap_or(u16::MAX - 1);
    let per_qp = u64::from(args.queue_depth).div_ceil(u64::from(args.connections.max(1))) + 1;
    o.io_queue_depth = u16::try_from(per_qp.max(2)).unwrap_or(u16::MAX);
    o.reconnect_delay = Duration::from_millis(args.reconnect_delay_ms);
    o.ctrl_loss_tmo = Duration::from_secs(args.ctrl_loss_tmo);
    o
}

/// The `-r` entries with their subsystems: as given, or from the discovery log.
fn resolve(
    admin: &shoal_reactor::ReactorHandle,
    args: &Args,
    ids: Vec<TransportId>,
) -> Result<Vec<TransportId>, String> {
    let mut out = Vec::new();
    for id in ids {
        if id.subnqn.is_some() {
            out.push(id);
            continue;
        }
        let mut o = options(args, &id, discovery::DISCOVERY_NQN, 1);
        o.kato = Duration::ZERO;
        let entries = discover(admin, o).map_err(|e| {
            format!(
                "discovery at {}:{}: {}",
                id.traddr,
                id.trsvcid,
                describe(&e)
            )
        })?;
        let before = out.len();
        for e in entries {
            if e.subtype != discovery::SUBTYPE_NVME || e.trtype != discovery::TRTYPE_TCP {
                continue;
            }
            out.push(TransportId {
                traddr: e.traddr,
                trsvcid: e.trsvcid.parse().unwrap_or(id.trsvcid),
                subnqn: Some(e.subnqn),
                nsid: None,
                hostnqn: id.hostnqn.clone(),
            });
        }
        if out.len() == before {
            return Err(format!(
                "discovery at {}:{} lists no NVMe/TCP subsystem",
                id.traddr, id.trsvcid
            ));
        }
    }
    Ok(out)
}

fn connect(
    set: &ReactorSet,
    args: &Args,
    cores: usize,
) -> Result<(Vec<Arc<Controller>>, Vec<Target>), String> {
    let admin = set.handles().first().ok_or("no reactor")?;
    let ids = args
        .transport_ids
        .iter()
        .map(|s| s.parse::<TransportId>())
        .collect::<Result<Vec<_>, _>>()?;
    let ids = resolve(admin, args, ids)?;
    let run = run_id();
    let in_flight = u64::from(args.queue_depth) * u64::try_from(cores).unwrap_or(1);
    let mut ctrls = Vec::new();
    let mut targets: Vec<Target> = Vec::new();
    for id in ids {
        let subnqn = id.subnqn.clone().unwrap_or_default();
        let ctrl = Controller::connect(admin, options(args, &id, &subnqn, cores))
            .map_err(|e| format!("cannot connect to {id}: {}", describe(&e)))?;
        ctrls.push(ctrl.clone());
        let namespaces = match id.nsid {
            Some(n) => vec![ctrl.namespace(n).ok_or_else(|| {
                format!("{id}: namespace {n} is not active (or not usable: metadata?)")
            })?],
            None => ctrl.namespaces(),
        };
        if namespaces.is_empty() {
            return Err(format!("{id}: no active namespace"));
        }
        for ns in namespaces {
            let dup = targets
                .iter()
                .any(|t| t.name == id.to_string() && t.ns.nsid == ns.nsid);
            if dup {
                continue;
            }
            if !args.io_size.is_multiple_of(ns.block_size) {
                return Err(format!(
                    "{id} NSID {}: -o {} is not a multiple of its {}-byte block",
                    ns.nsid, args.io_size, ns.block_size
                ));
            }
            let bpi = u64::from(args.io_size / ns.block_size);
            let slots = ns.num_blocks / bpi;
            if slots == 0 {
                return Err(format!("{id} NSID {}: -o is larger than it", ns.nsid));
            }
            let verify = if args.verify {
                if slots <= in_flight {
                    return Err(format!(
                        "{id} NSID {}: -V needs more I/O slots ({slots}) than I/Os in flight ({in_flight})",
                        ns.nsid
                    ));
                }
                Some(Arc::new(VerifyMap::new(run, ns.block_size, bpi, slots)?))
            } else {
                None
            };
            targets.push(Target {
                ctrl: ctrl.clone(),
                ns,
                name: id.to_string(),
                verify,
            });
        }
    }
    Ok((ctrls, targets))
}

/// Runs the load of `args` on the namespaces of its `-r` entries.
pub fn run(args: &Args) -> Result<Report, String> {
    args.validate()?;
    let cores = parse_core_mask(&args.core_mask)?;
    let set = ReactorSet::start(&cores, args.reactor_config(), Arc::new(|_: &Reactor| {}))
        .map_err(|e| format!("cannot start reactors: {e}"))?;
    let cpu0 = cpu::process();
    let result = connect(&set, args, cores.len()).and_then(|(ctrls, targets)| {
        let r = run_connected(&set, args, &cores, targets);
        for c in &ctrls {
            let _ = c.disconnect();
        }
        r
    });
    set.shutdown();
    let (header, measured) = result?;
    Ok(Report::new(
        header,
        args,
        measured,
        cpu::process().since(cpu0),
    ))
}

fn run_connected(
    set: &ReactorSet,
    args: &Args,
    cores: &[usize],
    targets: Vec<Target>,
) -> Result<(String, runner::Measured), String> {
    let blocks_per_io = targets
        .iter()
        .map(|t| u64::from(args.io_size / t.ns.block_size))
        .collect();
    let progress: Vec<Vec<Arc<Progress>>> = cores
        .iter()
        .map(|_| targets.iter().map(|_| Arc::default()).collect())
        .collect();
    let flat: Vec<Arc<Progress>> = progress.iter().flatten().cloned().collect();
    let digests = match (args.header_digest, args.data_digest) {
        (false, false) => "no digests",
        (true, false) => "header digest",
        (false, true) => "data digest",
        (true, true) => "header and data digests",
    };
    let header = format!(
        "shoal-perf: {} namespace(s) over NVMe/TCP, {:?}, {} B, qd {}, {} queue pair(s) per namespace per core, {digests}, {} s, cores {cores:?}, {}{}",
        targets.len(),
        args.workload,
        args.io_size,
        args.queue_depth,
        args.connections,
        args.time_secs,
        args.polling_mode(),
        if args.verify { ", verify" } else { "" },
    );
    let setup = Arc::new(NvmeSetup {
        targets,
        args: args.clone(),
        blocks_per_io,
        progress,
    });
    let measured = runner::run(set, cores, setup, &flat, args.run_options())?;
    Ok((header, measured))
}
