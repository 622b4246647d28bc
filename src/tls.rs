//! HTTPS without a proxy: the certificate chain and key named by `server.tls_cert` /
//! `server.tls_key` (`STARSYNC_TLS_CERT` / `STARSYNC_TLS_KEY`), served with rustls (the `ring`
//! provider). The certificate lives behind a lock in [`ReloadableCert`], the server's
//! certificate resolver, so `SIGHUP` can swap in a renewed one without a restart: new
//! handshakes get the new certificate, open connections keep the one they started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS certificate {path} (STARSYNC_TLS_CERT / server.tls_cert): {message}")]
    Cert { path: PathBuf, message: String },
    #[error("TLS private key {path} (STARSYNC_TLS_KEY / server.tls_key): {message}")]
    Key { path: PathBuf, message: String },
}

/// The files a certificate is (re)loaded from.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Reads and checks both files: a chain of at least one certificate, a key rustls can sign
    /// with, and a key that belongs to the first certificate (a renewed certificate installed
    /// beside the old key is caught here, not at the first handshake).
    pub fn load(&self) -> Result<CertifiedKey, TlsError> {
        let cert_err = |message: String| TlsError::Cert {
            path: self.cert.clone(),
            message,
        };
        let key_err = |message: String| TlsError::Key {
            path: self.key.clone(),
            message,
        };
        let cert_pem = read(&self.cert).map_err(cert_err)?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| cert_err(format!("not a PEM certificate file: {e}")))?;
        if chain.is_empty() {
            return Err(cert_err(
                "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        let key_pem = read(&self.key).map_err(key_err)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| key_err(format!("no PEM private key found: {e}")))?;
        let provider = rustls::crypto::ring::default_provider();
        let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| {
            key_err(format!(
                "unusable, or not the key of the certificate in {}: {e}",
                self.cert.display()
            ))
        })?;
        Ok(certified)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read: {e}"))
}

/// The server's certificate resolver: the current certificate, replaced by [`reload`].
///
/// [`reload`]: ReloadableCert::reload
#[derive(Debug)]
pub struct ReloadableCert {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    /// Loads the certificate once; an error here stops the start (it names the file).
    pub fn open(files: TlsFiles) -> Result<Arc<ReloadableCert>, TlsError> {
        let current = RwLock::new(Arc::new(files.load()?));
        Ok(Arc::new(ReloadableCert { files, current }))
    }

    /// Reads the files again and serves what they hold from the next handshake on. On an
    /// error the certificate in use stays (a half-written renewal must not take the hub
    /// offline); the caller logs it.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = self.files.load()?;
        *self.current.write() = Arc::new(fresh);
        Ok(())
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The rustls configuration of the listener: TLS 1.2 and 1.3 with the ring provider, no
    /// client certificates (nodes authenticate with their bearer token).
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, rustls::Error> {
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(self.clone());
        Ok(cfg)
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}
