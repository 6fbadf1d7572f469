//! TLS termination with rustls: TLS 1.2 and 1.3 only, ALPN for HTTP/2 and
//! HTTP/1.1, and certificate reloading without a restart.
//!
//! The certificate and key are PEM files. `Tls::reload_if_changed` (called on
//! SIGHUP and every few seconds) swaps in a new configuration when either file
//! changed; connections already open keep the one they started with. A renewed
//! certificate that fails to load is logged and the old one stays in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    config: RwLock<Arc<ServerConfig>>,
    modified: RwLock<(Option<SystemTime>, Option<SystemTime>)>,
}

fn mtime(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

/// Builds a server configuration from PEM files.
pub fn load(cert: &Path, key: &Path) -> Result<ServerConfig, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("tls_cert {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("tls_cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("tls_cert {}: no certificate found", cert.display()));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("tls_key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("tls: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("tls: certificate and key do not match or are unsupported: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

impl Tls {
    pub fn new(cert: &Path, key: &Path) -> Result<Tls, String> {
        let config = load(cert, key)?;
        Ok(Tls {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            config: RwLock::new(Arc::new(config)),
            modified: RwLock::new((mtime(cert), mtime(key))),
        })
    }

    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        // A poisoned lock only means a writer panicked while swapping an Arc.
        TlsAcceptor::from(
            self.config
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    /// Reloads the certificate and key if either file changed (or if `force`).
    /// Returns true if and only if a new certificate is now in use.
    pub fn reload_if_changed(&self, force: bool) -> bool {
        let now = (mtime(&self.cert), mtime(&self.key));
        let before = *self.modified.read().unwrap_or_else(|p| p.into_inner());
        if !force && now == before {
            return false;
        }
        *self.modified.write().unwrap_or_else(|p| p.into_inner()) = now;
        match load(&self.cert, &self.key) {
            Ok(c) => {
                *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(c);
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate changed but cannot be loaded; keeping the old one");
                false
            }
        }
    }
}
