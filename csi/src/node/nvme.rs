//! The Linux NVMe over Fabrics host as the node plugin uses it: controllers and namespaces
//! found in sysfs (`/sys/class/nvme`, `/sys/class/nvme-subsystem`), connections made and
//! ended with `nvme-cli` (`nvme connect` / `nvme disconnect`), which write the options to
//! `/dev/nvme-fabrics` as the kernel expects them.
//!
//! Reconnecting controllers: with `ctrl-loss-tmo` the kernel keeps a controller whose
//! connection broke in state `connecting` and retries every `reconnect-delay` seconds; its
//! namespace stays (I/O waits, then fails after the timeout). So a controller for the NQN in
//! any state but `deleting` counts as connected: connecting again would make a second one
//! (or fail with "already connected"). NVMe-oF 1.1 section 3.3 (Connect), and the Linux host's
//! `nvmf_ctlr_matches_baseopts()`: one controller per (transport, address, host NQN, subsystem).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;

/// A connection target: what the publish context carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Subsystem NQN.
    pub nqn: String,
    /// NVMe/TCP address.
    pub traddr: String,
    /// NVMe/TCP port.
    pub trsvcid: String,
}

/// How the host keeps a broken connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectOpts {
    /// Seconds the host keeps reconnecting before it gives the controller up (`-l`).
    pub ctrl_loss_tmo: i64,
    /// Seconds between reconnect attempts (`-c`).
    pub reconnect_delay: u32,
}

/// A controller of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    /// `nvme3`.
    pub name: String,
    /// `live`, `connecting`, `resetting`, `deleting`, ...
    pub state: String,
    /// Transport (`tcp`).
    pub transport: String,
    /// Its `address` attribute, e.g. `traddr=10.0.2.2,trsvcid=4420,src_addr=10.0.2.15`.
    pub address: String,
}

/// Why an NVMe host operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NvmeError {
    /// `nvme` could not be run.
    #[error("cannot run nvme-cli: {0}")]
    Spawn(std::io::Error),
    /// `nvme` ran and failed.
    #[error("{cmd} failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        cmd: String,
        /// Its exit status.
        status: String,
        /// What it printed.
        stderr: String,
    },
    /// It took too long.
    #[error("{0} timed out")]
    Timeout(String),
}

/// One value of a sysfs `address` attribute (`traddr=...,trsvcid=...`).
pub fn address_field<'a>(address: &'a str, key: &str) -> Option<&'a str> {
    address.trim().split(',').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k.trim() == key).then_some(v.trim())
    })
}

/// Whether a controller's address is the target's.
pub fn same_address(c: &Controller, t: &Target) -> bool {
    address_field(&c.address, "traddr") == Some(t.traddr.as_str())
        && address_field(&c.address, "trsvcid") == Some(t.trsvcid.as_str())
}

fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

fn is_ns_name(n: &str) -> bool {
    // nvme<digits>n<digits> (a multipath head or a single-path namespace), not nvme0c0n1.
    let Some(rest) = n.strip_prefix("nvme") else {
        return false;
    };
    let Some((a, b)) = rest.split_once('n') else {
        return false;
    };
    !a.is_empty()
        && !b.is_empty()
        && a.bytes().all(|c| c.is_ascii_digit())
        && b.bytes().all(|c| c.is_ascii_digit())
}

/// sysfs, at `/sys` (tests point it at a directory tree of their own).
#[derive(Debug, Clone)]
pub struct Sysfs(pub PathBuf);

impl Default for Sysfs {
    fn default() -> Self {
        Self(PathBuf::from("/sys"))
    }
}

impl Sysfs {
    fn entries(&self, rel: &str) -> Vec<(String, PathBuf)> {
        let Ok(rd) = std::fs::read_dir(self.0.join(rel)) else {
            return Vec::new();
        };
        let mut v: Vec<(String, PathBuf)> = rd
            .flatten()
            .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
            .collect();
        v.sort();
        v
    }

    /// The controllers of subsystem `nqn`.
    pub fn controllers(&self, nqn: &str) -> Vec<Controller> {
        self.entries("class/nvme")
            .into_iter()
            .filter(|(_, p)| read(&p.join("subsysnqn")).as_deref() == Some(nqn))
            .map(|(name, p)| Controller {
                name,
                state: read(&p.join("state")).unwrap_or_default(),
                transport: read(&p.join("transport")).unwrap_or_default(),
                address: read(&p.join("address")).unwrap_or_default(),
            })
            .collect()
    }

    /// The block device name (`nvme1n1`) of the namespace of subsystem `nqn`: the one whose
    /// UUID or NGUID is `uuid` when given, else namespace 1. Looks at the multipath heads of
    /// the subsystem and, without native multipath, at the namespaces of its controllers.
    pub fn namespace(&self, nqn: &str, uuid: Option<&str>) -> Option<String> {
        let mut candidates: Vec<(String, PathBuf)> = Vec::new();
        for (_, sub) in self.entries("class/nvme-subsystem") {
            if read(&sub.join("subsysnqn")).as_deref() != Some(nqn) {
                continue;
            }
            for (n, p) in self.entries(&format!("class/nvme-subsystem/{}", file_name(&sub))) {
                if is_ns_name(&n) {
                    candidates.push((n, p));
                }
            }
        }
        for c in self.controllers(nqn) {
            for (n, p) in self.entries(&format!("class/nvme/{}", c.name)) {
                if is_ns_name(&n) {
                    candidates.push((n, p));
                }
            }
        }
        let hex = |s: &str| -> String {
            s.chars()
                .filter(|c| c.is_ascii_hexdigit())
                .collect::<String>()
                .to_ascii_lowercase()
        };
        candidates.into_iter().find_map(|(n, p)| {
            let ok = match uuid {
                Some(u) => {
                    let want = hex(u);
                    ["uuid", "nguid"]
                        .iter()
                        .any(|a| read(&p.join(a)).map(|v| hex(&v)) == Some(want.clone()))
                }
                None => read(&p.join("nsid")).as_deref() == Some("1"),
            };
            ok.then_some(n)
        })
    }

    /// The subsystem NQN of block device `dev` (`nvme1n1`), for a device found in the mount
    /// table when the plugin's own record of the volume is gone.
    pub fn nqn_of_block(&self, major: u32, minor: u32) -> Option<String> {
        read(
            &self
                .0
                .join(format!("dev/block/{major}:{minor}/device/subsysnqn")),
        )
    }

    /// Size in bytes of block device `dev` (`/sys/class/block/<dev>/size` is in 512-byte units).
    pub fn block_size_bytes(&self, major: u32, minor: u32) -> Option<u64> {
        let sectors: u64 = read(&self.0.join(format!("dev/block/{major}:{minor}/size")))?
            .parse()
            .ok()?;
        sectors.checked_mul(512)
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

async fn run(args: &[&str], timeout: Duration) -> Result<String, NvmeError> {
    let cmd = format!("nvme {}", args.join(" "));
    let child = Command::new("nvme").args(args).kill_on_drop(true).output();
    let out = match tokio::time::timeout(timeout, child).await {
        Err(_) => return Err(NvmeError::Timeout(cmd)),
        Ok(Err(e)) => return Err(NvmeError::Spawn(e)),
        Ok(Ok(o)) => o,
    };
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let mut stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
        stderr.truncate(500);
        Err(NvmeError::Failed {
            cmd,
            status: out.status.to_string(),
            stderr,
        })
    }
}

/// Connects to `t` unless a controller of the host already serves that subsystem from that
/// address (in any state but `deleting`: a reconnecting one comes back by itself).
/// Returns whether it made a new connection.
pub async fn connect(sys: &Sysfs, t: &Target, o: ConnectOpts) -> Result<bool, NvmeError> {
    let existing = |sys: &Sysfs| {
        sys.controllers(&t.nqn)
            .into_iter()
            .any(|c| c.state != "deleting" && same_address(&c, t))
    };
    if existing(sys) {
        return Ok(false);
    }
    let (l, c) = (o.ctrl_loss_tmo.to_string(), o.reconnect_delay.to_string());
    let args = [
        "connect",
        "-t",
        "tcp",
        "-a",
        &t.traddr,
        "-s",
        &t.trsvcid,
        "-n",
        &t.nqn,
        "--ctrl-loss-tmo",
        &l,
        "--reconnect-delay",
        &c,
    ];
    match run(&args, Duration::from_secs(60)).await {
        Ok(_) => Ok(true),
        // Raced with another connect (or nvme-cli's "already connected"): fine if it is there.
        Err(e) if existing(sys) => {
            tracing::info!(nqn = %t.nqn, "connect: {e}; a controller is there now");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Disconnects every controller of subsystem `nqn` (none: nothing to do).
pub async fn disconnect(sys: &Sysfs, nqn: &str) -> Result<(), NvmeError> {
    if sys.controllers(nqn).is_empty() {
        return Ok(());
    }
    run(&["disconnect", "-n", nqn], Duration::from_secs(60))
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(root: &Path, rel: &str, v: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, format!("{v}\n")).unwrap();
    }

    #[test]
    fn finds_controllers_and_namespaces_in_a_sysfs_tree() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let nqn = "nqn.2026-11.io.shoal:vol-a";
        put(r, "class/nvme/nvme0/subsysnqn", nqn);
        put(r, "class/nvme/nvme0/state", "connecting");
        put(r, "class/nvme/nvme0/transport", "tcp");
        put(
            r,
            "class/nvme/nvme0/address",
            "traddr=10.0.2.2,trsvcid=4420,src_addr=10.0.2.15",
        );
        put(r, "class/nvme/nvme1/subsysnqn", "nqn.other");
        put(r, "class/nvme-subsystem/nvme-subsys3/subsysnqn", nqn);
        put(r, "class/nvme-subsystem/nvme-subsys3/nvme3n1/nsid", "1");
        put(
            r,
            "class/nvme-subsystem/nvme-subsys3/nvme3n1/uuid",
            "0b5c7e1e-6b1a-4a8e-9d59-2f5f3b0f6f11",
        );
        put(r, "class/nvme-subsystem/nvme-subsys3/nvme3n2/nsid", "2");
        put(r, "class/nvme-subsystem/nvme-subsys3/nvme3c0n1/nsid", "1");
        let sys = Sysfs(r.to_path_buf());
        let c = sys.controllers(nqn);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].state, "connecting");
        let t = Target {
            nqn: nqn.into(),
            traddr: "10.0.2.2".into(),
            trsvcid: "4420".into(),
        };
        assert!(same_address(&c[0], &t));
        let other = Target {
            trsvcid: "4421".into(),
            ..t.clone()
        };
        assert!(!same_address(&c[0], &other));
        assert_eq!(sys.namespace(nqn, None).as_deref(), Some("nvme3n1"));
        assert_eq!(
            sys.namespace(nqn, Some("0B5C7E1E6B1A4A8E9D592F5F3B0F6F11"))
                .as_deref(),
            Some("nvme3n1")
        );
        assert_eq!(
            sys.namespace(nqn, Some("00000000-0000-0000-0000-000000000000")),
            None
        );
        assert_eq!(sys.namespace("nqn.none", None), None);
        assert!(sys.controllers("nqn.none").is_empty());
    }

    #[test]
    fn names_and_addresses() {
        assert!(is_ns_name("nvme0n1") && is_ns_name("nvme12n34"));
        for n in [
            "nvme0c0n1",
            "nvme0",
            "nvmen1",
            "nvme0n",
            "nvme-subsys0",
            "sda",
        ] {
            assert!(!is_ns_name(n), "{n}");
        }
        assert_eq!(address_field("traddr=a, trsvcid=1", "trsvcid"), Some("1"));
        assert_eq!(address_field("garbage", "traddr"), None);
    }
}
