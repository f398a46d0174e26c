//! Discovery: a service nobody registered fails fast with a clear error, and a
//! register TTL that would lapse between re-registrations is refused at start.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use micro_core::{CallOptions, Request, Service};
use support::{Msg, PATH, client, msg, registry};

#[tokio::test]
async fn an_unknown_service_fails_within_50ms() {
    let client = client(&registry());
    let started = Instant::now();
    let err = client
        .call::<_, Msg>("nowhere", PATH, Request::new(msg(""), CallOptions::new()))
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_millis(50),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(err.detail, "service nowhere: not found");
}

#[tokio::test]
async fn the_register_ttl_must_exceed_the_interval() {
    let service = Service::from_config("ttl", micro_core::Config::default())
        .registry(registry())
        .register_interval(Duration::from_secs(30), Duration::from_secs(30));
    let err = service.run_until(async {}).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("must be longer than the register interval"),
        "{err}"
    );
}
