//! HTTPS on the listener: rustls, HTTP/2 and HTTP/1.1 by ALPN, and a certificate that is
//! re-read when its files change, without a restart (a renewed certificate just appears).

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::crypto::ring::default_provider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// The certificate chain and key files (PEM) the listener serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// How often the certificate files are checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(2);

/// Serves whatever certificate was loaded last.
#[derive(Debug)]
pub struct ReloadingCert {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        )
    }
}

/// A TLS acceptor for `files`; spawns the task that reloads them (inside the Tokio runtime).
pub fn acceptor(files: &TlsFiles) -> anyhow::Result<TlsAcceptor> {
    let cert = Arc::new(ReloadingCert {
        current: RwLock::new(Arc::new(load(files)?)),
        files: files.clone(),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(cert.clone());
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tokio::spawn(reload_on_change(Arc::downgrade(&cert)));
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Whether the files hold a usable certificate and key (for `kqlgate check`).
pub fn check(files: &TlsFiles) -> anyhow::Result<()> {
    load(files).map(|_| ())
}

fn load(files: &TlsFiles) -> anyhow::Result<CertifiedKey> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("cannot read {}", files.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", files.cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "{} holds no certificate",
        files.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("{} is not a PEM private key", files.key.display()))?;
    let signing_key = default_provider()
        .key_provider
        .load_private_key(key)
        .with_context(|| format!("{}: unsupported private key", files.key.display()))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().with_context(|| {
        format!(
            "{} does not match {}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    Ok(certified)
}

fn modified(files: &TlsFiles) -> Option<(SystemTime, SystemTime)> {
    let stamp = |path: &std::path::Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    Some((stamp(&files.cert)?, stamp(&files.key)?))
}

async fn reload_on_change(cert: std::sync::Weak<ReloadingCert>) {
    let Some(files) = cert.upgrade().map(|c| c.files.clone()) else {
        return;
    };
    let mut last = modified(&files);
    loop {
        tokio::time::sleep(RELOAD_CHECK).await;
        let Some(cert) = cert.upgrade() else {
            return;
        };
        let now = modified(&files);
        if now == last {
            continue;
        }
        match load(&files) {
            Ok(fresh) => {
                *cert.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
                last = now;
                tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
            }
            // Half-written files are common mid-renewal: keep serving the old certificate and
            // try again on the next check.
            Err(error) => tracing::warn!("TLS certificate not reloaded: {error:#}"),
        }
    }
}
