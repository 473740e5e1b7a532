//! Who may use the JSON-RPC over TCP: a shared token, compared in constant time.
//!
//! The Unix socket is guarded by its file mode (0600); a TCP port has no such guard, so a TCP
//! listener ([`super::tcp`]) either sits on a loopback address (reachable only from this
//! machine, as SPDK's `-r 127.0.0.1:5260` is) or has a token. [`check_listen_address`] refuses
//! anything else before a socket is opened.
//!
//! The token lives in a file readable by its owner only (as an SSH key: a file that group or
//! others can read is refused). Only a SHA-256 digest of it is kept in memory, and a presented
//! token is digested and compared with [`subtle::ConstantTimeEq`]: the time an attempt takes
//! says nothing about how many leading bytes were right, nor about the token's length.
//!
//! The token crosses the network in clear text (TLS for the control traffic is on the
//! roadmap): it keeps out whoever cannot read the traffic between the control plane and the
//! node, not whoever can.

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Shortest token accepted, in bytes (128 bits if it is random hex or base64 of 12+ bytes).
pub const MIN_TOKEN_BYTES: usize = 16;
/// Longest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 1024;

/// Why a token or a listen address was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The token file cannot be read.
    #[error("cannot read the RPC token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Group or others may read or write the token file.
    #[error(
        "RPC token file {path} has mode {mode:o}: group and others must have no access (chmod 600)"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The token is too short or too long.
    #[error(
        "the RPC token has {len} bytes (without trailing whitespace); it must have {MIN_TOKEN_BYTES} to {MAX_TOKEN_BYTES}"
    )]
    Length {
        /// Its length.
        len: usize,
    },
    /// A non-loopback address without a token.
    #[error(
        "refusing to serve JSON-RPC on {0} without authentication: it is not a loopback address; give a token file (--rpc-token-file)"
    )]
    OpenListener(SocketAddr),
}

/// A token a client must present; only its digest is kept.
#[derive(Clone)]
pub struct AuthToken {
    digest: [u8; 32],
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthToken(..)")
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl AuthToken {
    /// A token from its bytes (trailing whitespace, such as the newline of `echo > file`, is
    /// not part of it).
    ///
    /// # Errors
    /// [`AuthError::Length`] if it is shorter than [`MIN_TOKEN_BYTES`] or longer than
    /// [`MAX_TOKEN_BYTES`].
    pub fn new(bytes: &[u8]) -> Result<Self, AuthError> {
        let token = bytes.trim_ascii_end();
        if !(MIN_TOKEN_BYTES..=MAX_TOKEN_BYTES).contains(&token.len()) {
            return Err(AuthError::Length { len: token.len() });
        }
        Ok(Self {
            digest: digest(token),
        })
    }

    /// Reads the token from `path`, which group and others must not be able to access.
    ///
    /// # Errors
    /// [`AuthError::Read`], [`AuthError::Permissions`] or [`AuthError::Length`].
    pub fn from_file(path: &Path) -> Result<Self, AuthError> {
        let read_err = |source| AuthError::Read {
            path: path.to_owned(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(AuthError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
        let bytes = std::fs::read(path).map_err(read_err)?;
        Self::new(&bytes)
    }

    /// True if `presented` is the token; the time taken does not depend on where or whether
    /// they differ.
    #[must_use]
    pub fn verify(&self, presented: &[u8]) -> bool {
        digest(presented).ct_eq(&self.digest).into()
    }
}

/// Refuses a listen address that is not loopback when there is no token.
///
/// # Errors
/// [`AuthError::OpenListener`].
pub fn check_listen_address(addr: SocketAddr, token: Option<&AuthToken>) -> Result<(), AuthError> {
    if token.is_none() && !addr.ip().is_loopback() {
        return Err(AuthError::OpenListener(addr));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_accepts_only_the_token() {
        let t = AuthToken::new(b"0123456789abcdef0123\n").unwrap();
        assert!(t.verify(b"0123456789abcdef0123"));
        assert!(!t.verify(b"0123456789abcdef0124"));
        assert!(!t.verify(b"0123456789abcdef012"));
        assert!(!t.verify(b"0123456789abcdef0123\n"));
        assert!(!t.verify(b""));
    }

    #[test]
    fn short_and_long_tokens_are_refused() {
        assert!(matches!(
            AuthToken::new(b"short\n"),
            Err(AuthError::Length { len: 5 })
        ));
        assert!(AuthToken::new(&[b'a'; MAX_TOKEN_BYTES + 1]).is_err());
        assert!(AuthToken::new(&[b'a'; MIN_TOKEN_BYTES]).is_ok());
    }

    #[test]
    fn non_loopback_needs_a_token() {
        let t = AuthToken::new(&[b'x'; 32]).unwrap();
        for ok in ["127.0.0.1:1", "127.9.8.7:5260", "[::1]:5260"] {
            check_listen_address(ok.parse().unwrap(), None).unwrap();
        }
        for open in [
            "0.0.0.0:5260",
            "10.1.2.3:5260",
            "[::]:5260",
            "[::ffff:127.0.0.1]:1",
        ] {
            let addr: SocketAddr = open.parse().unwrap();
            assert!(matches!(
                check_listen_address(addr, None),
                Err(AuthError::OpenListener(_))
            ));
            check_listen_address(addr, Some(&t)).unwrap();
        }
    }

    #[test]
    fn a_token_file_others_can_read_is_refused() {
        let dir = std::env::temp_dir().join(format!("shoal-auth-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "0123456789abcdef0123\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            AuthToken::from_file(&path),
            Err(AuthError::Permissions { mode: 0o644, .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(
            AuthToken::from_file(&path)
                .unwrap()
                .verify(b"0123456789abcdef0123")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
