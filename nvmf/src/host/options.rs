//! How to reach and talk to a remote controller.

use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

/// The state of a remote controller (its admin queue and association).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ControllerState {
    /// The first connection is being set up.
    Connecting,
    /// Connected and enabled; I/O queues may connect.
    Connected,
    /// The connection dropped (or a command timed out); reconnecting within the
    /// controller-loss timeout. I/O is held, not failed.
    Reconnecting,
    /// The controller-loss timeout passed (or the first connect failed): I/O fails.
    Failed,
    /// Disconnected by its user.
    Closed,
}

/// Called on every state change, on the admin reactor's thread.
pub type StateCallback = Arc<dyn Fn(ControllerState) + Send + Sync>;

/// Well-known NVMe/TCP port for I/O controllers (IANA-assigned, as NVMe/TCP 1.0a names it).
pub const DEFAULT_PORT: u16 = 4420;

/// Options of a connection to a remote controller. [`ConnectOptions::new`] fills in
/// defaults in the manner of Linux `nvme connect`.
#[derive(Clone)]
pub struct ConnectOptions {
    /// Host name or IP address of the target.
    pub host: String,
    /// TCP port (4420 for I/O controllers, 8009 for discovery).
    pub port: u16,
    /// NQN of the subsystem.
    pub subnqn: String,
    /// This host's NQN.
    pub hostnqn: String,
    /// This host's identifier (Connect data HOSTID).
    pub hostid: [u8; 16],
    /// Ask for PDU header digests.
    pub header_digest: bool,
    /// Ask for PDU data digests.
    pub data_digest: bool,
    /// Keep-alive timeout sent in Connect; Keep Alive goes out every half of it. Zero
    /// disables keep-alive (discovery).
    pub kato: Duration,
    /// I/O queues to ask for (Set Features Number of Queues).
    pub io_queues: u16,
    /// Entries per I/O queue (limited by CAP.MQES + 1 and MAXCMD).
    pub io_queue_depth: u16,
    /// Entries of the admin queue.
    pub admin_queue_depth: u16,
    /// Largest data transfer of one command, before the controller's MDTS limit. Larger
    /// block I/Os are split.
    pub max_io_size: u32,
    /// Limit on TCP connect + IC exchange + Fabrics Connect of one queue.
    pub connect_timeout: Duration,
    /// Timeout of an I/O command; on expiry the command fails with `TimedOut` and the
    /// controller reconnects (its other commands are issued again).
    pub io_timeout: Duration,
    /// Timeout of an admin command (including Keep Alive).
    pub admin_timeout: Duration,
    /// Wait between reconnect attempts (the first one is immediate).
    pub reconnect_delay: Duration,
    /// How long to keep reconnecting before failing every I/O (Linux `ctrl_loss_tmo`).
    pub ctrl_loss_tmo: Duration,
    /// Observer of state changes.
    pub on_state: Option<StateCallback>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("subnqn", &self.subnqn)
            .field("hostnqn", &self.hostnqn)
            .field("header_digest", &self.header_digest)
            .field("data_digest", &self.data_digest)
            .field("kato", &self.kato)
            .field("io_queues", &self.io_queues)
            .field("io_queue_depth", &self.io_queue_depth)
            .field("reconnect_delay", &self.reconnect_delay)
            .field("ctrl_loss_tmo", &self.ctrl_loss_tmo)
            .finish_non_exhaustive()
    }
}

impl ConnectOptions {
    /// Options for subsystem `subnqn` at `host:port`, with a random host identifier and the
    /// host NQN derived from it (`nqn.2014-08.org.nvmexpress:uuid:<hostid>`, NVMe Base 2.0
    /// section 4.5), no digests, KATO 5 s, reconnect every 1 s for up to 10 s.
    pub fn new(host: &str, port: u16, subnqn: &str) -> ConnectOptions {
        let id = Uuid::new_v4();
        ConnectOptions {
            host: host.to_string(),
            port,
            subnqn: subnqn.to_string(),
            hostnqn: format!("nqn.2014-08.org.nvmexpress:uuid:{id}"),
            hostid: *id.as_bytes(),
            header_digest: false,
            data_digest: false,
            kato: Duration::from_secs(5),
            io_queues: 64,
            io_queue_depth: 128,
            admin_queue_depth: 32,
            max_io_size: 1 << 20,
            connect_timeout: Duration::from_secs(3),
            io_timeout: Duration::from_secs(30),
            admin_timeout: Duration::from_secs(10),
            reconnect_delay: Duration::from_secs(1),
            ctrl_loss_tmo: Duration::from_secs(10),
            on_state: None,
        }
    }

    /// Checks the options before connecting.
    pub fn validate(&self) -> Result<(), super::HostError> {
        let bad = |m: &str| Err(super::HostError::Invalid(m.to_string()));
        if self.subnqn.is_empty() || self.subnqn.len() > crate::wire::spec::fabrics::NQN_MAX_LEN {
            return bad("subsystem NQN must be 1 to 223 bytes");
        }
        if self.hostnqn.is_empty() || self.hostnqn.len() > crate::wire::spec::fabrics::NQN_MAX_LEN {
            return bad("host NQN must be 1 to 223 bytes");
        }
        if self.io_queue_depth < 2 || self.admin_queue_depth < 2 {
            return bad("queue depths must be at least 2");
        }
        if self.max_io_size < 4096 {
            return bad("max_io_size must be at least 4096");
        }
        if self.io_timeout.is_zero() || self.admin_timeout.is_zero() {
            return bad("command timeouts must not be zero");
        }
        if u32::try_from(self.kato.as_millis()).is_err() {
            return bad("KATO does not fit in 32 bits of milliseconds");
        }
        Ok(())
    }
}
