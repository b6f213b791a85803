//! Where `cairn serve` listens: binding the address and, when a
//! certificate is given, TLS through rustls with ring. Shared by every
//! server `cairn serve` runs (the API and the repository server). Owns the
//! certificate loading and the TLS handshakes; never looks at a request.

use axum::serve::Listener;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client may take over its TLS handshake: a client that
/// stalls holds only its own task, never the listener.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections that finished their handshake and wait to be served.
const READY_QUEUE: usize = 64;

/// The server's certificate chain and key, from PEM files.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|error| format!("--tls-cert {}: {error}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "--tls-cert {}: no certificate in the file",
            cert.display()
        ));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|error| format!("--tls-key {}: {error}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| format!("TLS: {error}"))?
        .with_no_client_auth()
        .with_single_cert(certs, private)
        .map_err(|error| {
            format!(
                "--tls-cert {} and --tls-key {}: {error}",
                cert.display(),
                key.display()
            )
        })?;
    Ok(Arc::new(config))
}

/// A listener whose connections are TLS streams: a task accepts TCP
/// connections and does each handshake in a task of its own, so one slow
/// or failing client never holds up the others.
pub struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(config);
        let (sender, ready) = tokio::sync::mpsc::channel(READY_QUEUE);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: wait, as
                        // axum's own listener does, rather than spin.
                        eprintln!("cairn serve: accepting a connection: {error}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, peer)).await;
                        }
                        Ok(Err(error)) => {
                            eprintln!("cairn serve: TLS handshake with {peer} failed: {error}")
                        }
                        Err(_) => eprintln!("cairn serve: TLS handshake with {peer} timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accepting task never ends while the listener lives.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Binds `address` (HOST:PORT; port 0 picks a free one).
pub async fn bind(address: &str) -> Result<TcpListener, String> {
    TcpListener::bind(address)
        .await
        .map_err(|error| format!("--listen {address}: {error}"))
}

/// Serves `router` on `listener`, over TLS when `tls` is given, until the
/// process ends. Prints the address it listens on (`listening on URL`) first,
/// for scripts and tests that bind port 0.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: axum::Router,
) -> Result<(), String> {
    let local = listener
        .local_addr()
        .map_err(|error| format!("listening: {error}"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Said on stdout and flushed: a supervisor or test waits for it.
    {
        use std::io::Write as _;
        let mut stdout = std::io::stdout();
        let _ = writeln!(stdout, "listening on {scheme}://{local}");
        let _ = stdout.flush();
    }
    let result = match tls {
        None => axum::serve(listener, router).await,
        Some(config) => {
            let listener = TlsListener::new(listener, config)
                .map_err(|error| format!("listening: {error}"))?;
            axum::serve(listener, router).await
        }
    };
    result.map_err(|error| format!("serving: {error}"))
}
