//! A program that installs its own `tracing` subscriber keeps it: the service's
//! start-up, registration and shutdown go to that subscriber, and micro installs no
//! other. (That a program with none gets micro's plain log on stderr is run as a real
//! process by `make readme`, scripts/readme.sh.)

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use micro_core::config::BrokerKind;
use micro_core::registry::RegistryKind;
use micro_core::{Config, Service};

/// Everything the program's own subscriber wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        let bytes = self.0.lock().map(|b| b.clone()).unwrap_or_default();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut all) = self.0.lock() {
            all.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn wait_for(captured: &Captured, line: &str) -> bool {
    for _ in 0..100 {
        if captured.text().contains(line) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn a_programs_own_subscriber_is_kept_and_gets_the_services_log() {
    let captured = Captured::default();
    let writer = captured.clone();
    let installed = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init();
    assert!(installed.is_ok(), "this test's subscriber is the first");

    let mut config = Config::default();
    config.registry.kind = RegistryKind::Memory;
    config.broker.kind = BrokerKind::Memory;
    config.server_address = "127.0.0.1:0".into();
    let service = Service::from_config("go.micro.srv.logged", config);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(service.run_until(async move {
        let _ = stopped.await;
    }));

    assert!(
        wait_for(&captured, "registered").await,
        "no registration line: {}",
        captured.text()
    );
    let log = captured.text();
    for expected in [
        "service started",
        "go.micro.srv.logged",
        "registry=\"memory\"",
    ] {
        assert!(log.contains(expected), "{expected:?} missing from: {log}");
    }

    let _ = stop.send(());
    let result = tokio::time::timeout(Duration::from_secs(10), running).await;
    assert!(matches!(result, Ok(Ok(Ok(())))), "{result:?}");
    assert!(
        wait_for(&captured, "deregistered").await,
        "no deregistration line: {}",
        captured.text()
    );
}
