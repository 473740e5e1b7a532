//! The volumes' records in etcd, as every volume operation reads and writes them: one volume
//! by id ([`get`], after checking the id), and a record written fenced on the leader's key
//! (`put_volume`).
//!
//! A leaf under the operations ([`crate::volume_ops`], [`crate::resize`], [`crate::snapshot`],
//! the API): it uses the shared context, the store and the records, none of them.

use crate::ctx::Ctx;
use crate::store::encode;
use crate::volume::VolumeRecord;
use crate::{Error, Result, keys};

/// Writes volume `v`'s record, fenced on `leader` (the election key).
pub(crate) async fn put_volume(ctx: &Ctx, leader: &[u8], v: &VolumeRecord) -> Result<()> {
    ctx.store
        .fenced_txn(
            leader,
            vec![],
            vec![(keys::volume(&v.id), encode(v))],
            vec![],
        )
        .await
}

/// One volume by id.
///
/// # Errors
/// [`Error::NotFound`]; etcd errors.
pub async fn get(ctx: &Ctx, id: &str) -> Result<VolumeRecord> {
    check_id(id)?;
    ctx.store
        .get::<VolumeRecord>(&keys::volume(id))
        .await?
        .map(|(v, _)| v)
        .ok_or_else(|| Error::NotFound(format!("no volume {id}")))
}

/// Checks that `id` is a volume id (a UUID).
///
/// # Errors
/// [`Error::Invalid`].
pub fn get_check_id(id: &str) -> Result<()> {
    check_id(id)
}

fn check_id(id: &str) -> Result<()> {
    uuid_ok(id).then_some(()).ok_or_else(|| Error::Invalid {
        what: "volume id",
        detail: format!("{id:?} is not a UUID"),
    })
}

fn uuid_ok(s: &str) -> bool {
    s.len() == 36
        && s.chars().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}
