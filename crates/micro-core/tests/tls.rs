//! RPC over TLS and mutual TLS, with certificates made for the test.
#![cfg(feature = "tls")]
// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use micro_core::registry::Registry;
use micro_core::server::Handler;
use micro_core::transport::{TlsOptions, TlsTransport};
use micro_core::{CallOptions, Client, Context, Error, Request};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};

#[derive(
    Clone, PartialEq, prost::Message, micro_core::serde::Serialize, micro_core::serde::Deserialize,
)]
#[serde(crate = "micro_core::serde")]
struct Ping {
    #[prost(string, tag = "1")]
    msg: String,
}
micro_core::json_message!(Ping);

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
    stranger: (String, String),
}

fn leaf(issuer: &CertifiedIssuer<'_, KeyPair>, name: &str) -> (String, String) {
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn new_ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn pki() -> Pki {
    let ca = new_ca();
    let other_ca = new_ca();
    Pki {
        ca: ca.pem(),
        server: leaf(&ca, "localhost"),
        client: leaf(&ca, "client"),
        stranger: leaf(&other_ca, "stranger"),
    }
}

async fn serve(
    transport: TlsTransport,
    calls: Arc<AtomicUsize>,
) -> (
    Arc<dyn Registry>,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), micro_core::ServiceError>>,
) {
    let registry = support::registry();
    let handler = Handler::new("test.tls", "Echo").unary(
        "Say",
        "Ping",
        "Ping",
        move |_: Context, req: Ping| {
            let calls = Arc::clone(&calls);
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok(req)
            }
        },
    );
    let support::Running { stop, task } =
        support::start_on("test.tls", &registry, Arc::new(transport), |s| {
            s.handle(handler).unwrap()
        })
        .await;
    (registry, stop, task)
}

async fn call(registry: &Arc<dyn Registry>, transport: TlsTransport) -> Result<Ping, Error> {
    let client = Client::new(Arc::clone(registry), Arc::new(transport));
    client
        .call(
            "test.tls",
            "/test.tls.Echo/Say",
            Request::new(
                Ping {
                    msg: "secret".into(),
                },
                CallOptions::new()
                    .timeout(Duration::from_secs(3))
                    .retries(1),
            ),
        )
        .await
}

#[tokio::test]
async fn mutual_tls_admits_certified_clients_and_refuses_others() {
    let pki = pki();
    let calls = Arc::new(AtomicUsize::new(0));
    let server = TlsTransport::new(
        TlsOptions::new()
            .identity(pki.server.0.clone(), pki.server.1.clone())
            .ca(pki.ca.clone())
            .require_client_auth(true),
    )
    .unwrap();
    let (registry, stop, task) = serve(server, Arc::clone(&calls)).await;

    let good = TlsTransport::new(
        TlsOptions::new()
            .identity(pki.client.0.clone(), pki.client.1.clone())
            .ca(pki.ca.clone()),
    )
    .unwrap();
    assert_eq!(call(&registry, good).await.unwrap().msg, "secret");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // No client certificate: refused in the handshake, no handler runs.
    let anonymous = TlsTransport::new(TlsOptions::new().ca(pki.ca.clone())).unwrap();
    assert!(call(&registry, anonymous).await.is_err());
    // A certificate from a CA the server does not trust: refused too.
    let stranger = TlsTransport::new(
        TlsOptions::new()
            .identity(pki.stranger.0.clone(), pki.stranger.1.clone())
            .ca(pki.ca.clone()),
    )
    .unwrap();
    assert!(call(&registry, stranger).await.is_err());
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn clients_refuse_servers_they_do_not_trust() {
    let pki = pki();
    let calls = Arc::new(AtomicUsize::new(0));
    let server =
        TlsTransport::new(TlsOptions::new().identity(pki.server.0.clone(), pki.server.1.clone()))
            .unwrap();
    let (registry, stop, task) = serve(server, Arc::clone(&calls)).await;
    // Trusts the server's CA: works without a client certificate (plain TLS).
    let trusting = TlsTransport::new(TlsOptions::new().ca(pki.ca.clone())).unwrap();
    assert_eq!(call(&registry, trusting).await.unwrap().msg, "secret");
    // Trusts another CA: the client refuses the server.
    let other = TlsTransport::new(TlsOptions::new().ca(leaf(&new_ca(), "x").0)).unwrap();
    let err = call(&registry, other).await.unwrap_err();
    assert!(
        err.detail.contains("unreachable") || err.code == 503,
        "{err}"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[test]
fn bad_pem_is_a_clear_error() {
    let err = TlsTransport::new(TlsOptions::new().identity("not pem", "nor this")).unwrap_err();
    assert!(err.to_string().starts_with("tls:"), "{err}");
}
