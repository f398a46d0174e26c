//! TLS and mutual TLS over TCP, with rustls (feature `tls`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::sync::mpsc;
use tokio_rustls::rustls::{self, RootCertStore};
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::{Accepted, BoxedIo, Listener, TcpTransport, Transport, TransportError};

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a [`TlsTransport`] presents and trusts, as PEM.
///
/// ```
/// use micro_transport::TlsOptions;
///
/// # let (cert, key, ca) = (Vec::<u8>::new(), Vec::<u8>::new(), Vec::<u8>::new());
/// let options = TlsOptions::new()
///     .identity(cert, key)   // this side's certificate chain and private key
///     .ca(ca)                // whom to trust
///     .require_client_auth(true);
/// ```
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    identity: Option<(Vec<u8>, Vec<u8>)>,
    ca: Option<Vec<u8>>,
    require_client_auth: bool,
    server_name: Option<String>,
}

impl TlsOptions {
    /// No identity, no trusted CA: set both before building.
    pub fn new() -> Self {
        Self::default()
    }

    /// This side's certificate chain and private key (PEM). Servers need one; clients
    /// need one for mutual TLS.
    #[must_use]
    pub fn identity(
        mut self,
        cert_chain_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.identity = Some((cert_chain_pem.into(), key_pem.into()));
        self
    }

    /// The CA certificates (PEM) that peers' certificates must chain to.
    #[must_use]
    pub fn ca(mut self, ca_pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(ca_pem.into());
        self
    }

    /// Servers refuse clients without a certificate signed by the CA (mutual TLS).
    #[must_use]
    pub fn require_client_auth(mut self, require: bool) -> Self {
        self.require_client_auth = require;
        self
    }

    /// The name to verify servers' certificates against. By default the dialed
    /// address's IP (registries hand out IP addresses).
    #[must_use]
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }
}

/// TCP with TLS 1.2/1.3 and ALPN `h2`; with [`TlsOptions::require_client_auth`],
/// mutual TLS: a client without a valid certificate is refused during the
/// handshake, before any request is read.
#[derive(Clone)]
pub struct TlsTransport {
    tcp: TcpTransport,
    acceptor: Option<TlsAcceptor>,
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTransport")
            .field("serves", &self.acceptor.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

fn tls_error(what: &str, e: impl std::fmt::Display) -> TransportError {
    TransportError::Tls(format!("{what}: {e}"))
}

fn certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| tls_error("reading certificates", e))?;
    if certs.is_empty() {
        return Err(TransportError::Tls("no certificate in the PEM".into()));
    }
    Ok(certs)
}

impl TlsTransport {
    /// Builds the transport. Fails with [`TransportError::Tls`] on unreadable PEM or a
    /// key that does not match its certificate.
    pub fn new(options: TlsOptions) -> Result<Self, TransportError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        if let Some(ca) = &options.ca {
            for cert in certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| tls_error("adding a CA certificate", e))?;
            }
        }
        let roots = Arc::new(roots);
        let identity = match &options.identity {
            Some((chain, key)) => Some((
                certs(chain)?,
                PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| tls_error("reading the private key", e))?,
            )),
            None => None,
        };

        let acceptor = match &identity {
            Some((chain, key)) => {
                let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
                    .with_safe_default_protocol_versions()
                    .map_err(|e| tls_error("server config", e))?;
                let builder = if options.require_client_auth {
                    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                        Arc::clone(&roots),
                        Arc::clone(&provider),
                    )
                    .build()
                    .map_err(|e| tls_error("client verifier (is a CA set?)", e))?;
                    builder.with_client_cert_verifier(verifier)
                } else {
                    builder.with_no_client_auth()
                };
                let mut config = builder
                    .with_single_cert(chain.clone(), key.clone_key())
                    .map_err(|e| tls_error("server certificate", e))?;
                config.alpn_protocols = vec![b"h2".to_vec()];
                Some(TlsAcceptor::from(Arc::new(config)))
            }
            None => None,
        };

        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_error("client config", e))?
            .with_root_certificates(Arc::clone(&roots));
        let mut client = match identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| tls_error("client certificate", e))?,
            None => builder.with_no_client_auth(),
        };
        client.alpn_protocols = vec![b"h2".to_vec()];
        let server_name = match options.server_name {
            Some(name) => {
                Some(ServerName::try_from(name).map_err(|e| tls_error("server name", e))?)
            }
            None => None,
        };
        Ok(Self {
            tcp: TcpTransport::default(),
            acceptor,
            connector: TlsConnector::from(Arc::new(client)),
            server_name,
        })
    }
}

#[derive(Debug)]
struct TlsListener {
    local: String,
    handshaken: mpsc::Receiver<Accepted>,
}

#[async_trait]
impl Listener for TlsListener {
    async fn accept(&mut self) -> Result<Accepted, TransportError> {
        self.handshaken.recv().await.ok_or_else(|| {
            TransportError::Accept(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "listener closed",
            ))
        })
    }

    fn local_addr(&self) -> String {
        self.local.clone()
    }
}

#[async_trait]
impl Transport for TlsTransport {
    async fn listen(&self, address: &str) -> Result<Box<dyn Listener>, TransportError> {
        let acceptor = self.acceptor.clone().ok_or_else(|| {
            TransportError::Tls("listening needs an identity (certificate and key)".into())
        })?;
        let mut tcp = self.tcp.listen(address).await?;
        let local = tcp.local_addr();
        let (sender, handshaken) = mpsc::channel(64);
        // Handshakes run on their own tasks, so a slow or hostile client cannot hold up
        // the others; the loop ends when the listener is dropped.
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = sender.closed() => return,
                    accepted = tcp.accept() => accepted,
                };
                let Accepted { io, remote } = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::error!(error = %e, "TLS listener: accept failed");
                        return;
                    }
                };
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                        Ok(Ok(stream)) => {
                            let _ = sender
                                .send(Accepted {
                                    io: Box::new(stream),
                                    remote,
                                })
                                .await;
                        }
                        Ok(Err(e)) => tracing::warn!(%remote, error = %e, "TLS handshake refused"),
                        Err(_) => tracing::warn!(%remote, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Box::new(TlsListener { local, handshaken }))
    }

    async fn dial(&self, address: &str) -> Result<BoxedIo, TransportError> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => {
                let host = address
                    .rsplit_once(':')
                    .map_or(address, |(host, _)| host)
                    .trim_start_matches('[')
                    .trim_end_matches(']');
                match host.parse::<IpAddr>() {
                    Ok(ip) => ServerName::IpAddress(ip.into()),
                    Err(_) => ServerName::try_from(host.to_string()).map_err(|e| {
                        TransportError::InvalidAddress {
                            address: address.to_string(),
                            reason: e.to_string(),
                        }
                    })?,
                }
            }
        };
        let tcp = self.tcp.dial(address).await?;
        let stream =
            self.connector
                .connect(name, tcp)
                .await
                .map_err(|source| TransportError::Dial {
                    address: address.to_string(),
                    source,
                })?;
        Ok(Box::new(stream))
    }

    fn name(&self) -> &'static str {
        "tls"
    }
}
