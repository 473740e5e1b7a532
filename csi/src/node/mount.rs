//! Mounts: `/proc/self/mountinfo` parsed (sans-IO, [`parse_mountinfo`]), and the `mount(2)`
//! calls the node plugin makes (a file system at the staging path, bind mounts into pods,
//! read-only remounts, unmounts).

use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

use rustix::mount::{MountFlags, UnmountFlags};

/// One line of `/proc/self/mountinfo` (proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// The root of the mount within its file system (`/` unless a bind of a subtree).
    pub root: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Per-mount options (`rw`, `ro`, `noatime`, ...).
    pub options: String,
    /// File system type.
    pub fstype: String,
    /// Mount source (a device path for block file systems).
    pub source: String,
}

impl MountEntry {
    /// Whether the mount is read-only.
    pub fn read_only(&self) -> bool {
        self.options.split(',').any(|o| o == "ro")
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text; lines that do not parse are skipped (the kernel writes them, but
/// nothing here may panic on them).
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    // "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw,errors=continue"
    let (head, tail) = line.split_once(" - ")?;
    let f: Vec<&str> = head.split(' ').collect();
    if f.len() < 6 {
        return None;
    }
    let (maj, min) = f[2].split_once(':')?;
    let t: Vec<&str> = tail.split(' ').collect();
    if t.len() < 2 {
        return None;
    }
    Some(MountEntry {
        major: maj.parse().ok()?,
        minor: min.parse().ok()?,
        root: unescape(f[3]),
        mount_point: PathBuf::from(unescape(f[4])),
        options: f[5].to_string(),
        fstype: unescape(t[0]),
        source: unescape(t[1]),
    })
}

/// The mount table of this process.
pub fn mounts() -> io::Result<Vec<MountEntry>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// The mount at exactly `path` (the last one: mounts over mounts hide the earlier ones).
pub fn at<'a>(table: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    table.iter().rev().find(|m| m.mount_point == path)
}

/// The mount at `path` now, if any.
pub fn mounted_at(path: &Path) -> io::Result<Option<MountEntry>> {
    let table = mounts()?;
    Ok(at(&table, path).cloned())
}

/// Splits CSI `mount_flags` into `mount(2)` flags and the file system's data string.
pub fn flags_and_data(options: &[String]) -> (MountFlags, String) {
    let mut flags = MountFlags::empty();
    let mut data: Vec<&str> = Vec::new();
    for o in options.iter().flat_map(|o| o.split(',')) {
        match o {
            "" | "rw" | "defaults" => {}
            "ro" => flags |= MountFlags::RDONLY,
            "noatime" => flags |= MountFlags::NOATIME,
            "nodiratime" => flags |= MountFlags::NODIRATIME,
            "relatime" => flags |= MountFlags::RELATIME,
            "nodev" => flags |= MountFlags::NODEV,
            "nosuid" => flags |= MountFlags::NOSUID,
            "noexec" => flags |= MountFlags::NOEXEC,
            "sync" => flags |= MountFlags::SYNCHRONOUS,
            "dirsync" => flags |= MountFlags::DIRSYNC,
            "lazytime" => flags |= MountFlags::LAZYTIME,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

/// Mounts the file system on `dev` at `target`.
pub fn mount_fs(
    dev: &Path,
    target: &Path,
    fstype: &str,
    options: &[String],
    read_only: bool,
) -> io::Result<()> {
    let (mut flags, data) = flags_and_data(options);
    if read_only {
        flags |= MountFlags::RDONLY;
    }
    let data = CString::new(data).map_err(|_| io::Error::other("NUL in mount options"))?;
    rustix::mount::mount(dev, target, fstype, flags, data.as_c_str())?;
    Ok(())
}

/// Bind-mounts `src` (a directory or a device node) at `target`, read-only when asked (a
/// second, remounting call: a bind mount ignores `MS_RDONLY` on its first call).
pub fn bind(src: &Path, target: &Path, read_only: bool) -> io::Result<()> {
    rustix::mount::mount_bind(src, target)?;
    if read_only
        && let Err(e) =
            rustix::mount::mount_remount(target, MountFlags::BIND | MountFlags::RDONLY, "")
    {
        let _ = unmount(target);
        return Err(e.into());
    }
    Ok(())
}

/// Unmounts `target` (not lazily: a busy mount is an error the CO retries).
pub fn unmount(target: &Path) -> io::Result<()> {
    rustix::mount::unmount(target, UnmountFlags::empty())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / / rw,relatime - rootfs rootfs rw
36 22 259:3 / /var/lib/kubelet/staging\\040dir rw,noatime shared:1 - ext4 /dev/nvme1n1 rw
37 22 259:3 / /var/lib/pods/a/mount ro,noatime shared:1 - ext4 /dev/nvme1n1 rw
38 22 0:5 /nvme1n1 /var/lib/pods/b/dev rw - devtmpfs devtmpfs rw
bad line
39 22 x:y / /z rw - ext4 /dev/x rw
40 22 259:3 / /var/lib/pods/a/mount rw shared:1 - ext4 /dev/nvme1n1 rw
";

    #[test]
    fn parses_mountinfo() {
        let t = parse_mountinfo(SAMPLE);
        assert_eq!(t.len(), 5);
        assert_eq!(t[1].mount_point, Path::new("/var/lib/kubelet/staging dir"));
        assert_eq!((t[1].major, t[1].minor), (259, 3));
        assert_eq!(t[1].fstype, "ext4");
        assert_eq!(t[1].source, "/dev/nvme1n1");
        assert!(t[2].read_only() && !t[1].read_only());
        assert_eq!(t[3].root, "/nvme1n1");
        // The last mount at a path is the visible one.
        let m = at(&t, Path::new("/var/lib/pods/a/mount")).unwrap();
        assert!(!m.read_only());
        assert!(at(&t, Path::new("/nowhere")).is_none());
    }

    #[test]
    fn unescapes_and_survives_garbage() {
        assert_eq!(unescape("a\\040b\\134c"), "a b\\c");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
        assert_eq!(unescape("\\999"), "\\999");
        for junk in [
            "",
            " - ",
            "1 2 3:4 - x",
            "1 2 3:4 a b c - ",
            "\u{1F980} - \u{1F980}",
        ] {
            let _ = parse_mountinfo(junk);
        }
    }

    #[test]
    fn splits_mount_flags() {
        let (f, d) = flags_and_data(&["noatime,nodev".into(), "discard".into(), "ro".into()]);
        assert!(f.contains(MountFlags::NOATIME | MountFlags::NODEV | MountFlags::RDONLY));
        assert_eq!(d, "discard");
    }
}
