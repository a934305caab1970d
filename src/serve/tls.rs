//! HTTPS: a rustls server configuration from PEM files, ALPN `h2` and `http/1.1`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

/// The server's certificate and key, for [`ServerBuilder::tls`](super::ServerBuilder::tls).
///
/// TLS 1.2 and 1.3 with rustls' safe defaults (ring provider); ALPN offers `h2` then `http/1.1`,
/// so browsers speak HTTP/2 (no six-connection limit per host for event streams) and WebSockets
/// still open over HTTP/1.1.
///
/// ```no_run
/// use sandbox_gateway::serve::TlsConfig;
///
/// # fn run() -> Result<(), sandbox_gateway::serve::TlsError> {
/// let tls = TlsConfig::from_pem_files("/etc/gateway/fullchain.pem", "/etc/gateway/key.pem")?;
/// # let _ = tls; Ok(()) }
/// ```
#[derive(Clone)]
pub struct TlsConfig {
    acceptor: TlsAcceptor,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig").finish_non_exhaustive()
    }
}

/// Why a [`TlsConfig`] could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The certificate PEM holds no certificate, or a block that does not parse.
    #[error("the certificate file holds no valid PEM certificate")]
    NoCertificate,
    /// The key PEM holds no private key (PKCS#8, PKCS#1 or SEC1).
    #[error("the key file holds no valid PEM private key")]
    NoKey,
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("the certificate and key were refused: {0}")]
    Rustls(#[from] rustls::Error),
}

impl TlsConfig {
    /// Reads a certificate chain (leaf first) and a private key, both PEM.
    ///
    /// # Errors
    /// A file that cannot be read, holds no certificate or key, or a key that does not match.
    pub fn from_pem_files(cert: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, TlsError> {
        let read = |p: &Path| {
            std::fs::read(p).map_err(|source| TlsError::Read {
                path: p.to_owned(),
                source,
            })
        };
        Self::from_pem(&read(cert.as_ref())?, &read(key.as_ref())?)
    }

    /// A certificate chain and a private key given as PEM text.
    ///
    /// # Errors
    /// No certificate or key in the text, or a key that does not match.
    pub fn from_pem(cert: &[u8], key: &[u8]) -> Result<Self, TlsError> {
        let chain = CertificateDer::pem_slice_iter(cert)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| TlsError::NoCertificate)?;
        if chain.is_empty() {
            return Err(TlsError::NoCertificate);
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| TlsError::NoKey)?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
        Ok(Self::from_rustls(config))
    }

    /// A rustls configuration of your own (client certificates, several certificates by SNI).
    /// When it names no ALPN protocols, `h2` and `http/1.1` are offered.
    pub fn from_rustls(mut config: rustls::ServerConfig) -> Self {
        if config.alpn_protocols.is_empty() {
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        }
        TlsConfig {
            acceptor: TlsAcceptor::from(Arc::new(config)),
        }
    }

    pub(super) fn accept(&self, stream: TcpStream) -> tokio_rustls::Accept<TcpStream> {
        self.acceptor.accept(stream)
    }
}
