//! TLS for `cairn serve`: a rustls (ring) acceptor from a PEM certificate
//! chain and key, and a listener that hands axum only connections whose
//! handshake completed. Never serves plaintext on a TLS listener, and
//! never lets one slow or failed handshake stop the others' accepts for
//! long (each has a deadline).

use anyhow::{Context as _, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take over its handshake.
const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

pub fn acceptor(certificate: &Path, key: &Path) -> Result<TlsAcceptor> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certificate)
        .and_then(|certificates| certificates.collect())
        .with_context(|| {
            format!(
                "--tls-cert {}: not a PEM certificate chain",
                certificate.display()
            )
        })?;
    if chain.is_empty() {
        anyhow::bail!("--tls-cert {}: holds no certificate", certificate.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("--tls-key {}: not a PEM private key", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .context("--tls-cert and --tls-key do not make a TLS identity")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> Self {
        TlsListener { tcp, acceptor }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, address) = match self.tcp.accept().await {
                Ok(accepted) => accepted,
                // Out of descriptors and the like: wait rather than spin.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            match tokio::time::timeout(HANDSHAKE_DEADLINE, self.acceptor.accept(stream)).await {
                Ok(Ok(tls)) => return (tls, address),
                // A failed handshake is the client's problem; serve on.
                _ => continue,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
