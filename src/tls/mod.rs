//! TLS for `wss://` and `https://` without a proxy, with the `tls` feature:
//! [rustls], whose unbuffered connection is sans-IO like the rest of the
//! core.
//!
//! TLS is a layer of each connection's session, not of its socket. Record
//! bytes read from the socket go to a [`ServerTls`], which hands the
//! plaintext on to the [`Session`](crate::session::Session) as if it had
//! been read; the session's output is sealed into records on its way to
//! the socket. Neither layer owns a buffer while the connection is idle:
//! records are read into the worker's read buffer, and sealed into a
//! buffer each worker thread shares. A connection keeps bytes of its own
//! only for a record cut short by a read, or for records the socket
//! refused, and only until they are dealt with.
//!
//! The certificate and key come from PEM files ([`TlsConfig::from_pem_files`])
//! and can be read again while the server runs ([`TlsReload::reload`]), so
//! that a renewed certificate needs no restart: handshakes after the reload
//! present the new one, and connections made before keep theirs.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use wsloop::tls::TlsConfig;
//!
//! let tls = TlsConfig::from_pem_files("cert.pem", "key.pem")?;
//! let reload = tls.reload_handle();
//! let config = wsloop::Config::default().tls(Some(tls));
//! // ... bind a Server with `config`; on SIGHUP:
//! reload.reload()?;
//! # Ok(()) }
//! ```

/// The rustls this module is built on, for clients in tests and tools
/// that must match its version.
pub use rustls;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, UnbufferedServerConnection};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

mod layer;

pub use layer::{Records, ServerTls, TlsFailure, SEAL_BATCH};

/// TLS settings: the certificate chain and key, and the limit on what a
/// connection may hold of a record or handshake message in progress.
#[derive(Clone)]
pub struct TlsConfig {
    server: Arc<ServerConfig>,
    certs: Arc<Certs>,
    /// Most bytes of records one connection may hold between reads: a
    /// record, or a handshake message spread over several, that has not
    /// all arrived. Default 80 KiB: the largest handshake message rustls
    /// takes (64 KiB) plus a full record. A peer past it is dropped.
    pub max_pending_input: usize,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert", &self.certs.cert)
            .field("key", &self.certs.key)
            .field("max_pending_input", &self.max_pending_input)
            .finish()
    }
}

impl TlsConfig {
    /// Reads a certificate chain (the server's certificate first) and its
    /// private key (PKCS#8, PKCS#1 or SEC1) from PEM files, and checks
    /// that they belong together. The server offers TLS 1.3 and 1.2, and
    /// ALPN `http/1.1`. An error names the file it is about.
    pub fn from_pem_files(
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsConfig, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = Certs {
            cert: cert.as_ref().to_path_buf(),
            key: key.as_ref().to_path_buf(),
            current: RwLock::new(Arc::new(load(cert.as_ref(), key.as_ref(), &provider)?)),
            provider: provider.clone(),
        };
        let certs = Arc::new(certs);
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Rustls)?
            .with_no_client_auth()
            .with_cert_resolver(certs.clone());
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        // No session tickets: each costs a seal per handshake, and a
        // WebSocket is made to last, so resumption saves little.
        server.send_tls13_tickets = 0;
        Ok(TlsConfig {
            server: Arc::new(server),
            certs,
            max_pending_input: 80 * 1024,
        })
    }

    /// A handle that reads the certificate and key files again.
    pub fn reload_handle(&self) -> TlsReload {
        TlsReload {
            certs: self.certs.clone(),
        }
    }

    /// A server side TLS session for a new connection.
    pub fn accept(&self) -> Result<ServerTls, TlsError> {
        let conn =
            UnbufferedServerConnection::new(self.server.clone()).map_err(TlsError::Rustls)?;
        Ok(ServerTls::new(conn))
    }
}

/// A rustls client config that trusts the CA certificates in a PEM file
/// and offers ALPN `http/1.1`, with the provider the server uses: for the
/// tests, tools and load generators that talk to a wsloop TLS port with a
/// test CA (`scripts/tls-cert.sh` makes one).
pub fn client_config(ca: impl AsRef<Path>) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let path = ca.as_ref();
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| TlsError::Pem {
            path: path.to_path_buf(),
            reason: pem_reason(e),
        })?;
        roots.add(cert).map_err(TlsError::Rustls)?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reads the certificate and key files again, from any thread.
#[derive(Debug, Clone)]
pub struct TlsReload {
    certs: Arc<Certs>,
}

impl TlsReload {
    /// Reads the files named in [`TlsConfig::from_pem_files`] again. If
    /// both read and match, handshakes from now on present the new
    /// certificate; connections already made are not touched. If not, the
    /// old certificate stays in use and the error says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = load(&self.certs.cert, &self.certs.key, &self.certs.provider)?;
        *self
            .certs
            .current
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(fresh);
        Ok(())
    }
}

/// The certificate in use, and where it came from.
struct Certs {
    cert: PathBuf,
    key: PathBuf,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for Certs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Certs")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .finish()
    }
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        )
    }
}

/// Reads and checks a certificate chain and its key.
fn load(cert: &Path, key: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    let pem = read(cert)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert.to_path_buf(),
            reason: pem_reason(e),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.to_path_buf(),
        });
    }
    let pem = read(key)?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::NoKey {
            path: key.to_path_buf(),
        },
        e => TlsError::Pem {
            path: key.to_path_buf(),
            reason: pem_reason(e),
        },
    })?;
    CertifiedKey::from_der(chain, der, provider).map_err(|source| TlsError::Key {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    })
}

/// Why PEM text did not parse, in words: the section markers as text,
/// not as the bytes rustls reports them in.
fn pem_reason(e: rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::MissingSectionEnd { end_marker } => format!(
            "a section has no end line (-----END {}-----): is the file cut short?",
            String::from_utf8_lossy(&end_marker)
        ),
        Error::IllegalSectionStart { line } => format!(
            "a malformed -----BEGIN line: {}",
            String::from_utf8_lossy(&line)
        ),
        e => e.to_string(),
    }
}

/// What went wrong setting TLS up.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file is not valid PEM.
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate file holds no certificate.
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key.
    NoKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is of a kind rustls cannot use, or is not the
    /// certificate's.
    Key {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// rustls refused the settings.
    Rustls(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::Read { path, source } => {
                write!(f, "cannot read {}: {source}", path.display())
            }
            TlsError::Pem { path, reason } => {
                write!(f, "{} is not valid PEM: {reason}", path.display())
            }
            TlsError::NoCertificate { path } => {
                write!(
                    f,
                    "{} holds no certificate (no CERTIFICATE block)",
                    path.display()
                )
            }
            TlsError::NoKey { path } => write!(f, "{} holds no private key", path.display()),
            TlsError::Key { cert, key, source } => write!(
                f,
                "the key in {} cannot serve the certificate in {}: {source}",
                key.display(),
                cert.display()
            ),
            TlsError::Rustls(e) => write!(f, "TLS setup failed: {e}"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Read { source, .. } => Some(source),
            TlsError::Key { source, .. } => Some(source),
            TlsError::Rustls(e) => Some(e),
            _ => None,
        }
    }
}
