//! File systems on a namespace: what is on it ([`detect`], sans-IO on the first bytes), making
//! one when it is empty, and growing one online.
//!
//! "Empty" is strict: a namespace is formatted only when its first [`PROBE_BYTES`] are all
//! zero. Anything else that is not a file system the plugin knows (a partition table, LUKS,
//! another file system) is left alone and refused, never overwritten.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use tokio::process::Command;

/// How much of a device [`detect`] looks at.
pub const PROBE_BYTES: usize = 128 * 1024;

/// What a device holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// All zero where a file system or partition table would be.
    Empty,
    /// ext2/3/4 (superblock magic 0xEF53 at byte 1080).
    Ext4,
    /// XFS (`XFSB` at byte 0).
    Xfs,
    /// Something else: not ours to format.
    Unknown,
}

/// Looks at the first bytes of a device (fewer than [`PROBE_BYTES`] when it is that small).
pub fn detect(head: &[u8]) -> Content {
    if head.starts_with(b"XFSB") {
        return Content::Xfs;
    }
    if head.get(1080..1082) == Some(&[0x53, 0xEF][..]) {
        return Content::Ext4;
    }
    if head.iter().all(|&b| b == 0) {
        Content::Empty
    } else {
        Content::Unknown
    }
}

/// Why a file-system operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The device could not be read.
    #[error("read {dev}: {source}")]
    Read {
        /// The device.
        dev: String,
        /// The error.
        source: std::io::Error,
    },
    /// A tool (`mkfs.ext4`, `resize2fs`, ...) could not be run or failed.
    #[error("{cmd}: {detail}")]
    Tool {
        /// The command line.
        cmd: String,
        /// Exit status and output, or why it did not run.
        detail: String,
    },
}

/// Reads the head of `dev` and says what is on it.
pub fn probe(dev: &Path) -> Result<Content, FsError> {
    let err = |source| FsError::Read {
        dev: dev.display().to_string(),
        source,
    };
    let f = std::fs::File::open(dev).map_err(err)?;
    let mut head = Vec::with_capacity(PROBE_BYTES);
    f.take(PROBE_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(err)?;
    Ok(detect(&head))
}

async fn tool(prog: &str, args: &[&str], timeout: Duration) -> Result<(), FsError> {
    let cmd = format!("{prog} {}", args.join(" "));
    let run = Command::new(prog).args(args).kill_on_drop(true).output();
    let out = match tokio::time::timeout(timeout, run).await {
        Err(_) => {
            return Err(FsError::Tool {
                cmd,
                detail: "timed out".into(),
            });
        }
        Ok(Err(e)) => {
            return Err(FsError::Tool {
                cmd,
                detail: e.to_string(),
            });
        }
        Ok(Ok(o)) => o,
    };
    if out.status.success() {
        return Ok(());
    }
    let mut detail = format!(
        "{}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim(),
        String::from_utf8_lossy(&out.stdout).trim()
    );
    detail.truncate(600);
    Err(FsError::Tool { cmd, detail })
}

/// Makes a file system of type `fs` (`ext4` or `xfs`) on `dev`.
pub async fn mkfs(dev: &Path, fs: &str) -> Result<(), FsError> {
    let d = dev.to_string_lossy();
    let t = Duration::from_secs(300);
    match fs {
        // -F: mke2fs asks before using a whole device otherwise (there is no terminal).
        "ext4" => tool("mkfs.ext4", &["-q", "-F", &d], t).await,
        // No -f: mkfs.xfs refuses a device with any signature it knows, a second safety.
        "xfs" => tool("mkfs.xfs", &["-q", &d], t).await,
        other => Err(FsError::Tool {
            cmd: format!("mkfs {other}"),
            detail: "unsupported".into(),
        }),
    }
}

/// Grows the mounted file system on `dev` (mounted at `mount_point`) to the device's size.
pub async fn grow(dev: &Path, mount_point: &Path, fs: &str) -> Result<(), FsError> {
    let t = Duration::from_secs(300);
    match fs {
        // resize2fs grows a mounted ext4 online (through the kernel's EXT4_IOC_RESIZE_FS).
        "ext4" | "ext3" | "ext2" => tool("resize2fs", &[&dev.to_string_lossy()], t).await,
        "xfs" => tool("xfs_growfs", &[&mount_point.to_string_lossy()], t).await,
        other => Err(FsError::Tool {
            cmd: format!("grow {other}"),
            detail: "unsupported".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_signatures() {
        let mut b = vec![0u8; PROBE_BYTES];
        assert_eq!(detect(&b), Content::Empty);
        assert_eq!(detect(&[]), Content::Empty);
        b[1080] = 0x53;
        b[1081] = 0xEF;
        assert_eq!(detect(&b), Content::Ext4);
        let mut x = vec![0u8; 4096];
        x[..4].copy_from_slice(b"XFSB");
        assert_eq!(detect(&x), Content::Xfs);
        let mut gpt = vec![0u8; 4096];
        gpt[512..520].copy_from_slice(b"EFI PART");
        assert_eq!(detect(&gpt), Content::Unknown);
        // One stray byte far in: not empty, not formatted over.
        let mut stray = vec![0u8; PROBE_BYTES];
        stray[PROBE_BYTES - 1] = 1;
        assert_eq!(detect(&stray), Content::Unknown);
        // A short device that ends inside the ext4 magic.
        assert_eq!(detect(&b[..1081]), Content::Unknown);
    }

    #[test]
    fn probes_a_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("img");
        std::fs::write(&p, vec![0u8; 1 << 20]).unwrap();
        assert_eq!(probe(&p).unwrap(), Content::Empty);
        assert!(probe(&d.path().join("missing")).is_err());
    }
}
