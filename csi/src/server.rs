//! Serving CSI over a Unix socket (what kubelet and the CSI sidecars connect to), and
//! connecting to one (the test client).

use std::path::{Path, PathBuf};

use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint, Server, Uri};

use crate::controller::ControllerService;
use crate::csi::controller_server::ControllerServer;
use crate::csi::identity_server::IdentityServer;
use crate::csi::node_server::NodeServer;
use crate::identity::IdentityService;
use crate::node::NodeService;

/// Why serving failed.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The endpoint is not `unix:///path` or an absolute path.
    #[error("endpoint {0:?}: expected unix:///path/to/csi.sock")]
    Endpoint(String),
    /// The socket could not be made.
    #[error("socket {path}: {source}")]
    Socket {
        /// Its path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// gRPC.
    #[error("grpc: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// The socket path of a CSI endpoint (`unix:///csi/csi.sock`, `unix:/csi/csi.sock`, or a path).
pub fn socket_path(endpoint: &str) -> Result<PathBuf, ServeError> {
    let p = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    let p = PathBuf::from(p);
    if p.is_absolute() {
        Ok(p)
    } else {
        Err(ServeError::Endpoint(endpoint.to_string()))
    }
}

/// What to serve besides Identity.
pub enum Role {
    /// The Controller service.
    Controller(ControllerService),
    /// The Node service.
    Node(NodeService),
}

/// Binds the socket (a stale one from a previous run is removed) and serves until `shutdown`.
pub async fn serve(
    path: &Path,
    identity: IdentityService,
    role: Role,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    let sock_err = |source| ServeError::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(sock_err)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(sock_err(e)),
        _ => {}
    }
    let listener = UnixListener::bind(path).map_err(sock_err)?;
    let incoming = UnixListenerStream::new(listener);
    let mut b = Server::builder();
    let router = b.add_service(IdentityServer::new(identity));
    let router = match role {
        Role::Controller(c) => router.add_service(ControllerServer::new(c)),
        Role::Node(n) => router.add_service(NodeServer::new(n)),
    };
    router
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// A gRPC channel to the CSI socket at `path`.
pub async fn connect(path: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = path.to_path_buf();
    // The URI is required by the API and unused: the connector dials the socket.
    Endpoint::from_static("http://[::1]:50051")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            UnixStream::connect(path.clone())
        }))
        .await
}
