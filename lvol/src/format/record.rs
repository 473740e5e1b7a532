//! Journal records: one change to the pool's table each.
//!
//! A record is a type byte, a little-endian u16 body length and the body. A record that names
//! a volume that does not exist, or a cluster index past a volume's end, changes nothing.
//! Every record but `Snapshot` and `MergeSnapshot` is an assignment (it sets or removes keys
//! of the table); those two move clusters between volumes. A checkpoint holds exactly the
//! records of the journal pages before its position (`store/home.rs`), so replay applies each
//! record once.

use uuid::Uuid;

use super::FormatError;
use super::codec::{Reader, Writer};

/// A volume is thin provisioned: clusters are allocated on first write.
pub const FLAG_THIN: u32 = 1;
/// A volume is read-only.
pub const FLAG_READ_ONLY: u32 = 2;
/// A volume is a snapshot (read-only, may have clones).
pub const FLAG_SNAPSHOT: u32 = 4;
/// Every flag this version knows.
pub const FLAGS_KNOWN: u32 = FLAG_THIN | FLAG_READ_ONLY | FLAG_SNAPSHOT;

/// How a volume's clusters are cleared (SPDK's `clear_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClearMethod {
    /// SPDK's default: `unmap` (Shoal writes zeroes: see ARCHITECTURE.md).
    Default,
    /// Nothing is cleared.
    None,
    /// Clusters are deallocated.
    Unmap,
    /// Clusters are zeroed.
    WriteZeroes,
}

impl ClearMethod {
    fn code(self) -> u8 {
        match self {
            ClearMethod::Default => 0,
            ClearMethod::None => 1,
            ClearMethod::Unmap => 2,
            ClearMethod::WriteZeroes => 3,
        }
    }

    fn from_code(c: u8) -> Result<ClearMethod, FormatError> {
        Ok(match c {
            0 => ClearMethod::Default,
            1 => ClearMethod::None,
            2 => ClearMethod::Unmap,
            3 => ClearMethod::WriteZeroes,
            _ => return Err(FormatError::Invalid(format!("clear method {c}"))),
        })
    }

    /// SPDK's name for it.
    pub fn name(self) -> &'static str {
        match self {
            ClearMethod::Default => "default",
            ClearMethod::None => "none",
            ClearMethod::Unmap => "unmap",
            ClearMethod::WriteZeroes => "write_zeroes",
        }
    }
}

/// What a volume is, as the journal and the checkpoints record it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvolHeader {
    /// Its UUID (also its bdev name).
    pub uuid: Uuid,
    /// Its name in the pool.
    pub name: String,
    /// Its size in clusters.
    pub num_clusters: u64,
    /// `FLAG_*`.
    pub flags: u32,
    /// How its clusters are cleared.
    pub clear: ClearMethod,
    /// The snapshot it was cloned from (unallocated clusters read from it), if any.
    pub parent: Option<Uuid>,
}

impl LvolHeader {
    /// Encodes the header.
    pub fn encode(&self, w: &mut Writer) {
        w.uuid(&self.uuid);
        w.name(&self.name);
        w.u64(self.num_clusters);
        w.u32(self.flags);
        w.u8(self.clear.code());
        w.uuid(&self.parent.unwrap_or_else(Uuid::nil));
    }

    /// Decodes a header.
    ///
    /// # Errors
    /// Truncated input, a bad name, unknown flags or clear method.
    pub fn decode(r: &mut Reader<'_>) -> Result<LvolHeader, FormatError> {
        let uuid = r.uuid()?;
        let name = r.name()?;
        let num_clusters = r.u64()?;
        let flags = r.u32()?;
        if flags & !FLAGS_KNOWN != 0 {
            return Err(FormatError::Invalid(format!("volume flags {flags:#x}")));
        }
        let clear = ClearMethod::from_code(r.u8()?)?;
        let parent = Some(r.uuid()?).filter(|p| !p.is_nil());
        if uuid.is_nil() || parent == Some(uuid) {
            return Err(FormatError::Invalid(
                "a volume with a nil or self UUID".into(),
            ));
        }
        Ok(LvolHeader {
            uuid,
            name,
            num_clusters,
            flags,
            clear,
            parent,
        })
    }
}

/// One change to the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A volume is created (or its header replaced).
    CreateLvol(LvolHeader),
    /// A volume and its cluster map are removed.
    DeleteLvol(Uuid),
    /// A volume is renamed.
    RenameLvol(Uuid, String),
    /// A volume's size changes; clusters at or past the new end are unmapped.
    ResizeLvol(Uuid, u64),
    /// A volume's flags are set.
    SetFlags(Uuid, u32),
    /// A volume's cluster `index` is at data cluster `phys`.
    Map {
        /// The volume.
        lvol: Uuid,
        /// Cluster index in the volume.
        index: u64,
        /// Data cluster in the pool.
        phys: u64,
    },
    /// A volume's cluster `index` is no longer allocated.
    Unmap {
        /// The volume.
        lvol: Uuid,
        /// Cluster index in the volume.
        index: u64,
    },
    /// The pool is renamed.
    RenameLvs(String),
    /// A volume's parent changes (none: decoupled).
    SetParent(Uuid, Option<Uuid>),
    /// A snapshot `snap` of volume `origin` is taken: the snapshot is created with the
    /// origin's cluster map (it takes the origin's clusters), and the origin becomes its thin
    /// clone (its map empty, its parent the snapshot). One record, so that a crash leaves
    /// either no snapshot or the whole of it.
    Snapshot {
        /// The volume snapshotted.
        origin: Uuid,
        /// The snapshot's header (its parent is the origin's former parent).
        snap: LvolHeader,
    },
    /// Snapshot `snap` is deleted into its only clone `clone`: each cluster of the snapshot
    /// that the clone does not own moves to the clone, the clone's parent becomes the
    /// snapshot's parent, and the snapshot is removed (its other clusters are free).
    MergeSnapshot {
        /// The snapshot removed.
        snap: Uuid,
        /// Its only clone.
        clone: Uuid,
    },
}

const T_CREATE: u8 = 1;
const T_DELETE: u8 = 2;
const T_RENAME: u8 = 3;
const T_RESIZE: u8 = 4;
const T_FLAGS: u8 = 5;
const T_MAP: u8 = 6;
const T_UNMAP: u8 = 7;
const T_RENAME_LVS: u8 = 8;
const T_PARENT: u8 = 9;
const T_SNAPSHOT: u8 = 10;
const T_MERGE: u8 = 11;

/// The largest encoded record (a `Snapshot` with the longest name).
pub const MAX_RECORD: usize = 3 + 16 + (16 + 1 + super::NAME_MAX + 8 + 4 + 1 + 16);

impl Record {
    /// Appends the encoded record to `w`.
    pub fn encode(&self, w: &mut Writer) {
        let mut body = Writer::new();
        let t = match self {
            Record::CreateLvol(h) => {
                h.encode(&mut body);
                T_CREATE
            }
            Record::DeleteLvol(u) => {
                body.uuid(u);
                T_DELETE
            }
            Record::RenameLvol(u, n) => {
                body.uuid(u);
                body.name(n);
                T_RENAME
            }
            Record::ResizeLvol(u, n) => {
                body.uuid(u);
                body.u64(*n);
                T_RESIZE
            }
            Record::SetFlags(u, f) => {
                body.uuid(u);
                body.u32(*f);
                T_FLAGS
            }
            Record::Map { lvol, index, phys } => {
                body.uuid(lvol);
                body.u64(*index);
                body.u64(*phys);
                T_MAP
            }
            Record::Unmap { lvol, index } => {
                body.uuid(lvol);
                body.u64(*index);
                T_UNMAP
            }
            Record::RenameLvs(n) => {
                body.name(n);
                T_RENAME_LVS
            }
            Record::SetParent(u, p) => {
                body.uuid(u);
                body.uuid(&p.unwrap_or_else(Uuid::nil));
                T_PARENT
            }
            Record::Snapshot { origin, snap } => {
                body.uuid(origin);
                snap.encode(&mut body);
                T_SNAPSHOT
            }
            Record::MergeSnapshot { snap, clone } => {
                body.uuid(snap);
                body.uuid(clone);
                T_MERGE
            }
        };
        w.u8(t);
        w.u16(u16::try_from(body.buf.len()).unwrap_or(u16::MAX));
        w.bytes(&body.buf);
    }

    /// The encoded length.
    pub fn encoded_len(&self) -> usize {
        let mut w = Writer::new();
        self.encode(&mut w);
        w.buf.len()
    }

    /// Decodes one record.
    ///
    /// # Errors
    /// Truncated input, an unknown type, a body whose length does not match its type.
    pub fn decode(r: &mut Reader<'_>) -> Result<Record, FormatError> {
        let t = r.u8()?;
        let len = usize::from(r.u16()?);
        let body = r.take(len)?;
        let mut b = Reader::new(body, "journal record");
        let rec = match t {
            T_CREATE => Record::CreateLvol(LvolHeader::decode(&mut b)?),
            T_DELETE => Record::DeleteLvol(b.uuid()?),
            T_RENAME => Record::RenameLvol(b.uuid()?, b.name()?),
            T_RESIZE => Record::ResizeLvol(b.uuid()?, b.u64()?),
            T_FLAGS => {
                let u = b.uuid()?;
                let f = b.u32()?;
                if f & !FLAGS_KNOWN != 0 {
                    return Err(FormatError::Invalid(format!("volume flags {f:#x}")));
                }
                Record::SetFlags(u, f)
            }
            T_MAP => Record::Map {
                lvol: b.uuid()?,
                index: b.u64()?,
                phys: b.u64()?,
            },
            T_UNMAP => Record::Unmap {
                lvol: b.uuid()?,
                index: b.u64()?,
            },
            T_RENAME_LVS => Record::RenameLvs(b.name()?),
            T_PARENT => Record::SetParent(b.uuid()?, Some(b.uuid()?).filter(|p| !p.is_nil())),
            T_SNAPSHOT => {
                let origin = b.uuid()?;
                let snap = LvolHeader::decode(&mut b)?;
                if snap.uuid == origin {
                    return Err(FormatError::Invalid(
                        "a snapshot record whose snapshot is its origin".into(),
                    ));
                }
                Record::Snapshot { origin, snap }
            }
            T_MERGE => {
                let snap = b.uuid()?;
                let clone = b.uuid()?;
                if snap == clone {
                    return Err(FormatError::Invalid(
                        "a merge record of a snapshot into itself".into(),
                    ));
                }
                Record::MergeSnapshot { snap, clone }
            }
            other => return Err(FormatError::Invalid(format!("journal record type {other}"))),
        };
        if b.remaining() != 0 {
            return Err(FormatError::Invalid(format!(
                "journal record type {t}: {} bytes left over",
                b.remaining()
            )));
        }
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_record_round_trips() {
        let u = Uuid::new_v4();
        let recs = [
            Record::CreateLvol(LvolHeader {
                uuid: u,
                name: "x".repeat(super::super::NAME_MAX),
                num_clusters: 7,
                flags: FLAG_THIN,
                clear: ClearMethod::WriteZeroes,
                parent: Some(Uuid::new_v4()),
            }),
            Record::DeleteLvol(u),
            Record::RenameLvol(u, "b".into()),
            Record::ResizeLvol(u, 9),
            Record::SetFlags(u, FLAG_READ_ONLY),
            Record::Map {
                lvol: u,
                index: 3,
                phys: 4,
            },
            Record::Unmap { lvol: u, index: 3 },
            Record::RenameLvs("pool".into()),
            Record::SetParent(u, None),
            Record::Snapshot {
                origin: Uuid::new_v4(),
                snap: LvolHeader {
                    uuid: u,
                    name: "s".repeat(super::super::NAME_MAX),
                    num_clusters: 7,
                    flags: FLAG_THIN | FLAG_READ_ONLY | FLAG_SNAPSHOT,
                    clear: ClearMethod::Default,
                    parent: Some(Uuid::new_v4()),
                },
            },
            Record::MergeSnapshot {
                snap: u,
                clone: Uuid::new_v4(),
            },
        ];
        let mut w = Writer::new();
        for r in &recs {
            r.encode(&mut w);
            assert!(r.encoded_len() <= MAX_RECORD);
        }
        let mut rd = Reader::new(&w.buf, "t");
        for r in &recs {
            assert_eq!(&Record::decode(&mut rd).unwrap(), r);
        }
        assert_eq!(rd.remaining(), 0);
    }

    #[test]
    fn unknown_type_and_bad_length_are_errors() {
        let mut rd = Reader::new(&[99, 0, 0], "t");
        assert!(Record::decode(&mut rd).is_err());
        // A delete with a body one byte too long.
        let mut b = vec![T_DELETE, 17, 0];
        b.extend_from_slice(&[1; 17]);
        assert!(Record::decode(&mut Reader::new(&b, "t")).is_err());
    }
}
