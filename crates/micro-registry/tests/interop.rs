//! A standard DNS-SD client (python-zeroconf) reads what the mDNS registry announces.
//!
//! Needs `python3` with the `zeroconf` package (`pip install zeroconf`; `.ci/run`
//! installs it). Without it the test says so and passes, unless
//! `MICRO_REQUIRE_INTEROP=1` (set in CI), where a missing tool is a failure.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use micro_registry::{MdnsRegistry, Node, RegisterOptions, Registry, Service};

fn zeroconf_available() -> bool {
    Command::new("python3")
        .args(["-c", "import zeroconf"])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread")]
async fn python_zeroconf_sees_service_name_and_address() {
    if !zeroconf_available() {
        assert!(
            std::env::var("MICRO_REQUIRE_INTEROP").is_err(),
            "python3 with zeroconf is required (pip install zeroconf)"
        );
        eprintln!("SKIPPED: python3 with zeroconf is not installed (pip install zeroconf)");
        return;
    }
    let registry = MdnsRegistry::builder().loopback_only().build().unwrap();
    let mut node = Node::new(
        "go.micro.srv.interop-1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        "127.0.0.1:4567",
    );
    node.metadata.insert("protocol".into(), "grpc".into());
    let service = Service::new("go.micro.srv.interop")
        .version("latest")
        .node(node);
    registry
        .register(&service, RegisterOptions::default())
        .await
        .unwrap();

    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/zeroconf-browse.py"
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .args([script, "2", "127.0.0.1"])
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.contains("go.micro.srv.interop-1b4e28ba"))
        .unwrap_or_else(|| panic!("zeroconf did not list the instance:\n{stdout}"));
    assert!(line.contains("service=go.micro.srv.interop"), "{line}");
    assert!(line.contains("address=127.0.0.1:4567"), "{line}");
    registry.deregister(&service).await.unwrap();
}
