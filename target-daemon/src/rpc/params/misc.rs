//! Params of the framework methods (`lib/rpc/rpc.c`, `lib/init/subsystem_rpc.c`,
//! `lib/event/app_rpc.c`).
//!
//! Note on `save_config`: in SPDK it is not a server method. `rpc.py save_config` calls
//! `framework_get_subsystems`, then `framework_get_config {"name": ...}` for each subsystem,
//! and assembles `{"subsystems": [...]}` itself (`python/spdk/rpc/config.py`). Shoal serves
//! those two methods (see [`crate::config::ConfigDocument`]); [`SaveConfig`] is a Shoal
//! extension that returns the whole document in one call (for `shoalctl`).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{NoParams, params_knobs};

/// `rpc_get_methods`: list the registered methods (built into [`crate::rpc::Registry`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RpcGetMethods {
    /// Only the methods callable in the current RPC state.
    #[serde(default)]
    pub current: bool,
    /// Include deprecated aliases.
    #[serde(default)]
    pub include_aliases: bool,
}
params_knobs!(RpcGetMethods {});

/// `spdk_get_version`: no params (built into [`crate::rpc::Registry`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpdkGetVersion {}
params_knobs!(SpdkGetVersion {});

impl SpdkGetVersion {
    /// The result Shoal gives, shaped like SPDK's (`version` plus `fields`).
    #[must_use]
    pub fn shoal_version() -> Value {
        let major: u32 = env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap_or(0);
        let minor: u32 = env!("CARGO_PKG_VERSION_MINOR").parse().unwrap_or(0);
        let patch: u32 = env!("CARGO_PKG_VERSION_PATCH").parse().unwrap_or(0);
        json!({
            "version": format!("Shoal v{}", env!("CARGO_PKG_VERSION")),
            "fields": {
                "major": major,
                "minor": minor,
                "patch": patch,
                "suffix": env!("CARGO_PKG_VERSION_PRE"),
            }
        })
    }
}

/// `framework_start_init`: no params (a startup method; `rpc.py load_config` calls it).
pub type FrameworkStartInit = NoParams;
/// `framework_wait_init`: no params.
pub type FrameworkWaitInit = NoParams;
/// `framework_get_subsystems`: no params; answers `[{"subsystem": .., "depends_on": [..]}]`.
pub type FrameworkGetSubsystems = NoParams;
/// `save_config` (Shoal extension, see the module documentation): no params.
pub type SaveConfig = NoParams;

/// `framework_get_config`: the config array of one subsystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrameworkGetConfig {
    /// Subsystem name (`bdev`, `nvmf`, ...).
    pub name: String,
    /// SPDK 26: keep batch arrays in the output. Shoal never produces batches, so this has
    /// no effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_batches: Option<Value>,
}
params_knobs!(FrameworkGetConfig {});

/// `spdk_kill_instance`: ask the daemon to exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpdkKillInstance {
    /// `SIGINT`, `SIGTERM`, `SIGQUIT`, `SIGHUP` or `SIGKILL`.
    pub sig_name: String,
}
params_knobs!(SpdkKillInstance {});
