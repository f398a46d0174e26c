//! `Service::run` and signals, in a real process: this test binary runs itself as a
//! child (the ignored `child_service` test, told so by an environment variable)
//! serving a handler that never returns, and the tests signal it.
//!
//! One SIGTERM starts a graceful shutdown (the listener closes once the registry has
//! forgotten the node; the call in flight has the grace period, a minute here); a
//! second SIGTERM or SIGINT ends the process at once, with 143 or 130.

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod raw;
mod support;

use std::io::BufRead;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use micro_core::broker::MemoryBroker;
use micro_core::registry::MemoryRegistry;
use micro_core::{Config, Service};
use prost::Message as _;
use support::{Msg, PATH, handler, msg};

/// Set in the child's environment: the port to serve on.
const CHILD_PORT: &str = "MICRO_TEST_SIGNALS_CHILD_PORT";
/// The child's grace period: far longer than any test waits.
const CHILD_GRACE: Duration = Duration::from_secs(60);
/// Upper bound on any wait here; only a broken service reaches it.
const PATIENCE: Duration = Duration::from_secs(10);

/// The child: a service whose handler never returns, stopped by signals only.
#[test]
#[ignore = "the child process of the other tests in this file"]
fn child_service() {
    let Ok(port) = std::env::var(CHILD_PORT) else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let result = runtime.block_on(async move {
        Service::from_config("signals", Config::default())
            .address(format!("127.0.0.1:{port}"))
            .registry(Arc::new(MemoryRegistry::new()))
            .broker(Arc::new(MemoryBroker::new()))
            .grace_period(CHILD_GRACE)
            .handle(handler("Svc", |_, _: Msg| async move {
                println!("handling");
                std::future::pending::<Result<Msg, micro_core::Error>>().await
            }))
            .unwrap()
            .run()
            .await
    });
    println!("run returned: {result:?}");
    std::process::exit(if result.is_ok() { 0 } else { 1 });
}

/// The child, serving on its own port, and its output lines.
struct Running {
    child: Child,
    address: String,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["child_service", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_PORT, port.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let address = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(Instant::now() < deadline, "the child never listened");
            std::thread::sleep(Duration::from_millis(10));
        }
        Self {
            child,
            address,
            lines,
        }
    }

    fn wait_for_line(&self, expected: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(expected) => return,
                Ok(_) => {}
                Err(e) => panic!("no {expected:?} from the child: {e}"),
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name} failed");
    }

    /// The exit status, if the child exits within `wait`.
    fn exited_within(&mut self, wait: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + wait;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until the listener is closed: shutdown has begun and the registry has
    /// been told.
    fn wait_until_not_listening(&self) {
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(&self.address).is_ok() {
            assert!(Instant::now() < deadline, "still listening");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Never leave a child behind, whatever the test did.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the child, puts a call in flight, sends `first`, checks the child is
/// draining, sends `second`, and returns how the child exited and how fast.
fn two_signals(first: &str, second: &str) -> (ExitStatus, Duration) {
    let mut child = Running::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let address = child.address.clone();
    let in_flight = runtime.spawn(async move {
        let channel = raw::channel(&address).await;
        raw::unary(channel, PATH, msg("").encode_to_vec()).await
    });
    child.wait_for_line("handling");

    child.signal(first);
    child.wait_until_not_listening();
    // Draining: the call has a minute; the process waits for it.
    assert!(
        child.exited_within(Duration::from_millis(300)).is_none(),
        "exited on the first signal"
    );

    let sent = Instant::now();
    child.signal(second);
    let status = child
        .exited_within(PATIENCE)
        .expect("the second signal did not end the process");
    let took = sent.elapsed();
    eprintln!("{first} then {second}: {status} within {took:?}");
    // The call in flight was cut off with the process.
    assert!(runtime.block_on(in_flight).unwrap().is_err());
    (status, took)
}

#[test]
fn a_second_sigint_while_stopping_exits_at_once_with_130() {
    let (status, took) = two_signals("TERM", "INT");
    assert_eq!(status.code(), Some(130), "{status}");
    assert!(took < CHILD_GRACE / 2, "took {took:?}");
}

#[test]
fn a_second_sigterm_while_stopping_exits_at_once_with_143() {
    let (status, took) = two_signals("TERM", "TERM");
    assert_eq!(status.code(), Some(143), "{status}");
    assert!(took < CHILD_GRACE / 2, "took {took:?}");
}

#[test]
fn one_sigterm_with_nothing_in_flight_stops_cleanly() {
    let mut child = Running::start();
    let sent = Instant::now();
    child.signal("TERM");
    let status = child
        .exited_within(PATIENCE)
        .expect("SIGTERM did not stop the service");
    let took = sent.elapsed();
    eprintln!("TERM: {status} within {took:?}");
    assert_eq!(status.code(), Some(0), "{status}");
    child.wait_for_line("run returned: Ok(())");
}
