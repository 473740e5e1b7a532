//! Capsule PDUs: CapsuleCmd (72-byte header: common header + SQE, then optional in-capsule
//! data) and CapsuleResp (24-byte header: common header + CQE).

use crate::wire::codec::{BufferTooSmall, Reader, Writer};
use crate::wire::spec::cqe::{CQE_SIZE, Cqe};
use crate::wire::spec::sqe::{SQE_SIZE, Sqe};
use zerocopy::IntoBytes;

/// CapsuleCmd: a command capsule (host to controller).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapsuleCmd {
    /// The submission queue entry.
    pub sqe: Sqe,
}

impl CapsuleCmd {
    pub(crate) fn decode_psh(r: &mut Reader<'_>) -> Option<Self> {
        let bytes: [u8; SQE_SIZE] = r.array()?;
        Some(Self {
            sqe: Sqe::from_array(&bytes),
        })
    }

    pub(crate) fn encode_psh(&self, w: &mut Writer<'_>) -> Result<(), BufferTooSmall> {
        w.put_slice(self.sqe.as_bytes())
    }
}

/// CapsuleResp: a response capsule (controller to host).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapsuleResp {
    /// The completion queue entry.
    pub cqe: Cqe,
}

impl CapsuleResp {
    pub(crate) fn decode_psh(r: &mut Reader<'_>) -> Option<Self> {
        let bytes: [u8; CQE_SIZE] = r.array()?;
        Some(Self {
            cqe: Cqe::from_array(&bytes),
        })
    }

    pub(crate) fn encode_psh(&self, w: &mut Writer<'_>) -> Result<(), BufferTooSmall> {
        w.put_slice(self.cqe.as_bytes())
    }
}
