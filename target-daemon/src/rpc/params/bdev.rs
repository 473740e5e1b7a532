//! Params of the bdev methods (`module/bdev/{malloc,null,uring,error,delay}/*_rpc.c`,
//! `lib/bdev/bdev_rpc.c`).

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::params_knobs;
use crate::rpc::RpcError;

/// Refuses metadata/protection-information formats, which Shoal's bdevs do not implement.
///
/// SPDK's malloc and null bdevs can expose per-block metadata (`md_size`) and T10 DIF
/// (`dif_type`); accepting these silently would give a host a different format than it asked
/// for, so a non-zero value is `-95` (`ENOTSUP`).
///
/// # Errors
/// `-95` naming the method and the field.
pub fn refuse_metadata(
    method: &str,
    md_size: Option<u32>,
    dif_type: Option<i32>,
) -> Result<(), RpcError> {
    if md_size.is_some_and(|m| m != 0) {
        return Err(RpcError::not_supported(format!(
            "{method}: per-block metadata (`md_size`) is not supported by Shoal"
        )));
    }
    if dif_type.is_some_and(|d| d != 0) {
        return Err(RpcError::not_supported(format!(
            "{method}: protection information (`dif_type`) is not supported by Shoal"
        )));
    }
    Ok(())
}

/// `bdev_malloc_create`. Answers the bdev name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevMallocCreate {
    /// Size in blocks (`rpc.py` computes it from the size in MiB).
    pub num_blocks: u64,
    /// Data block size in bytes.
    pub block_size: u32,
    /// Bdev name; SPDK generates `MallocN` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Bdev UUID; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
    /// Physical block size in bytes (reported to hosts as the preferred write granularity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_block_size: Option<u32>,
    /// Split I/O on this boundary, in blocks (0: disabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimal_io_boundary: Option<u32>,
    /// Metadata bytes per block; must be 0 (see [`refuse_metadata`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md_size: Option<u32>,
    /// Protection information type; must be 0 (see [`refuse_metadata`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dif_type: Option<i32>,
    /// Knob: metadata interleaved with data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md_interleave: Option<Value>,
    /// Knob: PI in the first bytes of metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dif_is_head_of_md: Option<Value>,
    /// Knob: PI format (16/32/64-bit guard).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dif_pi_format: Option<Value>,
}
params_knobs!(BdevMallocCreate {
    md_interleave,
    dif_is_head_of_md,
    dif_pi_format
});

/// `bdev_malloc_delete`, `bdev_null_delete`, `bdev_uring_delete`, `bdev_error_delete`,
/// `bdev_delay_delete`: `{"name": ...}`. Answers `true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevDelete {
    /// Name of the bdev to delete.
    pub name: String,
}
params_knobs!(BdevDelete {});

/// `bdev_malloc_delete`.
pub type BdevMallocDelete = BdevDelete;
/// `bdev_null_delete`.
pub type BdevNullDelete = BdevDelete;
/// `bdev_uring_delete`.
pub type BdevUringDelete = BdevDelete;
/// `bdev_error_delete` (the name is the error bdev's, `EE_<base>`).
pub type BdevErrorDelete = BdevDelete;
/// `bdev_delay_delete`.
pub type BdevDelayDelete = BdevDelete;

/// `bdev_null_create`. Answers the bdev name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevNullCreate {
    /// Bdev name (required for null bdevs).
    pub name: String,
    /// Size in blocks.
    pub num_blocks: u64,
    /// Block size in bytes.
    pub block_size: u32,
    /// Bdev UUID; generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
    /// Physical block size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub physical_block_size: Option<u32>,
    /// Metadata bytes per block; must be 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md_size: Option<u32>,
    /// Protection information type; must be 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dif_type: Option<i32>,
    /// Knob: PI in the first bytes of metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dif_is_head_of_md: Option<Value>,
    /// Knob: PI format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dif_pi_format: Option<Value>,
    /// Knob: preferred write alignment, in blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_write_alignment: Option<Value>,
    /// Knob: preferred write granularity, in blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_write_granularity: Option<Value>,
    /// Knob: optimal write size, in blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimal_write_size: Option<Value>,
    /// Knob: preferred unmap alignment, in blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_unmap_alignment: Option<Value>,
    /// Knob: preferred unmap granularity, in blocks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_unmap_granularity: Option<Value>,
}
params_knobs!(BdevNullCreate {
    dif_is_head_of_md,
    dif_pi_format,
    preferred_write_alignment,
    preferred_write_granularity,
    optimal_write_size,
    preferred_unmap_alignment,
    preferred_unmap_granularity
});

/// `bdev_uring_create`. Answers the bdev name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevUringCreate {
    /// Bdev name.
    pub name: String,
    /// Path of the file or block device.
    pub filename: String,
    /// Block size in bytes; detected from the device when absent or 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_size: Option<u32>,
    /// Bdev UUID (SPDK v24+); generated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
}
params_knobs!(BdevUringCreate {});

/// `bdev_get_bdevs`. Answers an array of bdev descriptions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevGetBdevs {
    /// Only this bdev (by name or alias); `-19` if it does not appear in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Milliseconds to wait for `name` to appear (0: answer at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}
params_knobs!(BdevGetBdevs {});

/// How `bdev_get_iostat` resets counters after reading them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IostatResetMode {
    /// Reset every counter.
    All,
    /// Reset only the min/max latency trackers.
    Maxmin,
    /// Reset only the error counters (SPDK v26).
    Error,
    /// Do not reset.
    None,
}

/// `bdev_get_iostat`. Answers `{"tick_rate": .., "ticks": .., "bdevs": [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevGetIostat {
    /// Only this bdev.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Only these bdevs (SPDK v25+; exclusive with `name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub names: Option<Vec<String>>,
    /// Per-channel (per-reactor) statistics of one bdev.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_channel: Option<bool>,
    /// Reset after reading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_mode: Option<IostatResetMode>,
}
params_knobs!(BdevGetIostat {});

/// `bdev_error_create`: wraps `base_name` in an error-injecting bdev named `EE_<base_name>`.
/// Answers `true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevErrorCreate {
    /// The bdev to wrap.
    pub base_name: String,
    /// UUID of the new bdev.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
}
params_knobs!(BdevErrorCreate {});

/// Which I/O an injected error applies to (`bdev_error_inject_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ErrorIoType {
    /// Remove every injected error.
    Clear,
    /// Reads.
    Read,
    /// Writes.
    Write,
    /// Unmaps (deallocate).
    Unmap,
    /// Flushes.
    Flush,
    /// Every I/O type.
    All,
}

/// What an injected error does (`bdev_error_inject_error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Complete the I/O with a failure.
    Failure,
    /// Hold the I/O until `bdev_error_resume_pending` (or forever).
    Pending,
    /// Complete successfully but XOR `corrupt_value` into the data at `corrupt_offset`.
    CorruptData,
    /// Complete with "no memory" (the caller retries).
    Nomem,
}

/// `bdev_error_inject_error`. Answers `true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevErrorInjectError {
    /// The error bdev (`EE_<base>`).
    pub name: String,
    /// Which I/O to affect.
    pub io_type: ErrorIoType,
    /// What to do to it.
    pub error_type: ErrorKind,
    /// How many I/Os to affect (SPDK default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num: Option<u32>,
    /// Only when the bdev's queue depth reaches this value (SPDK v24+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_depth: Option<u64>,
    /// Byte offset for `corrupt_data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt_offset: Option<u64>,
    /// XOR value for `corrupt_data` (1..=255).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt_value: Option<u8>,
    /// Knob: NVMe status code type for NVMe-status injection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvme_sct: Option<Value>,
    /// Knob: NVMe status code for NVMe-status injection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvme_sc: Option<Value>,
}
params_knobs!(BdevErrorInjectError { nvme_sct, nvme_sc });

impl BdevErrorInjectError {
    /// The number of I/Os to affect, with SPDK's default of 1.
    #[must_use]
    pub fn count(&self) -> u32 {
        self.num.unwrap_or(1)
    }
}

/// `bdev_delay_create`: a bdev adding latency to `base_bdev_name`. Latencies are in
/// microseconds. Answers the bdev name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevDelayCreate {
    /// The bdev to wrap.
    pub base_bdev_name: String,
    /// Name of the delay bdev.
    pub name: String,
    /// Latency added to 99% of reads.
    pub avg_read_latency: u64,
    /// Latency added to 1% of reads.
    pub p99_read_latency: u64,
    /// Latency added to 99% of writes.
    pub avg_write_latency: u64,
    /// Latency added to 1% of writes.
    pub p99_write_latency: u64,
    /// UUID of the new bdev.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<Uuid>,
}
params_knobs!(BdevDelayCreate {});

/// Which latency `bdev_delay_update_latency` changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DelayLatencyType {
    /// `avg_read_latency`.
    AvgRead,
    /// `p99_read_latency`.
    P99Read,
    /// `avg_write_latency`.
    AvgWrite,
    /// `p99_write_latency`.
    P99Write,
}

/// `bdev_delay_update_latency`. Answers `true`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevDelayUpdateLatency {
    /// The delay bdev.
    pub delay_bdev_name: String,
    /// Which latency.
    pub latency_type: DelayLatencyType,
    /// New value in microseconds.
    pub latency_us: u64,
}
params_knobs!(BdevDelayUpdateLatency {});

/// `bdev_pfail_create`: a bdev with a volatile write cache over `base_bdev_name`, for crash
/// tests (Shoal's own method). Answers the bdev name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevPfailCreate {
    /// Name of the new bdev.
    pub name: String,
    /// The bdev it caches writes for (claimed).
    pub base_bdev_name: String,
}
params_knobs!(BdevPfailCreate {});

/// What `bdev_pfail_cut` keeps of the writes that were not durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PfailKeep {
    /// Nothing.
    None,
    /// Everything.
    All,
    /// A seeded random subset, per block.
    Random,
}

/// `bdev_pfail_cut`: power loss. Answers `{"dirty_blocks", "kept_blocks", "seed"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BdevPfailCut {
    /// The pfail bdev.
    pub name: String,
    /// What the cache keeps.
    pub keep: PfailKeep,
    /// Seed of `random` (drawn from the clock when absent; the answer gives it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}
params_knobs!(BdevPfailCut {});
