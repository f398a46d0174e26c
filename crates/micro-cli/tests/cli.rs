//! The `micro` command as a real process, against the worked example's services
//! (vessel, consignment) and a streaming service, all found over mDNS on loopback.
//!
//! Run inside a private network namespace (`make test` does); every process is told
//! `MICRO_MDNS_INTERFACES=loopback`. The example binaries must be built
//! (`cargo build --examples`; `make test` builds them).

// Panicking is how a test fails.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use micro_core::registry::{MdnsRegistry, Node, RegisterOptions, Registry};
use micro_core::server::Handler;
use micro_core::stream::{Receiver, Sender};
use micro_core::{Context, Error, Service};

/// The example services have fixed names: tests that start them take turns (nextest
/// runs this crate's tests one at a time too: `.config/nextest.toml`).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The turn of a test that is not async.
fn turn() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.blocking_lock()
}

/// How long any one `micro` run may take.
const CLI_LIMIT: Duration = Duration::from_secs(30);

/// Where cargo put the example binaries: next to this test's `deps` directory.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory")
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: build the examples first (cargo build --examples)",
        path.display()
    );
    path
}

/// A child process, stopped (SIGTERM, then SIGKILL) when dropped.
struct Running {
    child: Child,
}

impl Running {
    /// An example service, its log (at `info`) written to `log` when given.
    fn example(name: &str, log: Option<&Path>) -> Self {
        let stderr = match log {
            Some(path) => Stdio::from(std::fs::File::create(path).expect("log file")),
            None => Stdio::null(),
        };
        let child = Command::new(example(name))
            .env("MICRO_MDNS_INTERFACES", "loopback")
            .env("RUST_LOG", if log.is_some() { "info" } else { "warn" })
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Self { child }
    }

    /// SIGTERM, then waits (at most 10 s) for it to exit.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) {
            assert!(Instant::now() < deadline, "did not stop within 10s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn micro() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_micro"));
    command
        .env("MICRO_MDNS_INTERFACES", "loopback")
        .env("RUST_LOG", "warn")
        .env_remove("MICRO_REGISTRY")
        .env_remove("MICRO_BROKER")
        .env("NO_COLOR", "1");
    command
}

/// `micro args`, with `stdin` as its input, killed past [`CLI_LIMIT`].
fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = micro()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting micro");
    let mut input = child.stdin.take().expect("stdin");
    let text = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(text.as_bytes());
    });
    let pid = child.id();
    let (done_tx, done_rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let out = child.wait_with_output();
        let _ = done_tx.send(());
        out
    });
    if done_rx.recv_timeout(CLI_LIMIT).is_err() {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
        panic!("micro {args:?} did not finish within {CLI_LIMIT:?}");
    }
    let _ = writer.join();
    waiter.join().expect("waiter").expect("micro output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// Polls `micro services -o json` until every name in `names` is listed (or none is,
/// when `present` is false), at most 15 s.
fn wait_listed(names: &[&str], present: bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let out = run(&["services", "-o", "json"], "");
        let listed: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let has = |name: &str| {
            listed.as_array().is_some_and(|list| {
                list.iter()
                    .any(|s| s["name"] == name && s["nodes"].as_u64().unwrap_or(0) > 0)
            })
        };
        if names.iter().all(|n| has(n) == present) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{names:?} present={present} not reached in 15s: {}",
            show(&out)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

const VESSEL: &str = "go.micro.srv.vessel";
const CONSIGNMENT: &str = "go.micro.srv.consignment";
const SPEC: &str = r#"{"capacity": 500, "max_weight": 200000}"#;

#[test]
fn services_and_describe_show_both_services() {
    let _turn = turn();
    let _vessel = Running::example("vessel", None);
    let _consignment = Running::example("consignment", None);
    wait_listed(&[VESSEL, CONSIGNMENT], true);

    let out = run(&["services"], "");
    assert!(out.status.success(), "{}", show(&out));
    let stdout = text(&out.stdout);
    let header = stdout.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("SERVICE") && header.contains("NODES"),
        "{stdout}"
    );
    for name in [VESSEL, CONSIGNMENT] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{stdout}"));
        assert!(row.contains("latest"), "{row}");
        assert!(row.trim_end().ends_with('1'), "one node: {row}");
    }

    let out = run(&["describe", VESSEL], "");
    assert!(out.status.success(), "{}", show(&out));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("VesselService.FindAvailable"), "{stdout}");
    assert!(stdout.contains("Specification"), "{stdout}");
    assert!(stdout.contains("protocol=grpc"), "{stdout}");
    assert!(stdout.contains("127.0.0.1:"), "{stdout}");

    let out = run(&["describe", CONSIGNMENT, "-o", "json"], "");
    assert!(out.status.success(), "{}", show(&out));
    let versions: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let endpoints: Vec<&str> = versions[0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(
        endpoints.contains(&"ShippingService.CreateConsignment"),
        "{endpoints:?}"
    );
    assert_eq!(versions[0]["nodes"].as_array().map(Vec::len), Some(1));

    let out = run(&["describe", "go.micro.srv.nothing"], "");
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
}

#[test]
fn call_returns_vessel001_and_bad_input_gets_its_exit_code() {
    let _turn = turn();
    let _vessel = Running::example("vessel", None);
    wait_listed(&[VESSEL], true);

    let out = run(&["call", VESSEL, "VesselService.FindAvailable", SPEC], "");
    assert!(out.status.success(), "{}", show(&out));
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON reply");
    assert_eq!(reply["vessel"]["id"], "vessel001", "{reply}");

    // The body from stdin, a full gRPC path, metadata and a timeout.
    let out = run(
        &[
            "call",
            VESSEL,
            "/go.micro.srv.vessel.VesselService/FindAvailable",
            "-m",
            "x-user=alice",
            "--timeout",
            "5s",
        ],
        SPEC,
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(text(&out.stdout).contains("vessel001"), "{}", show(&out));

    // Malformed JSON: a clear 400 before any call, exit 3.
    let out = run(
        &[
            "call",
            VESSEL,
            "VesselService.FindAvailable",
            r#"{"capacity": 500,"#,
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let err: serde_json::Value = serde_json::from_slice(&out.stderr).expect("error JSON");
    assert_eq!(err["code"], 400, "{err}");
    assert_eq!(err["status"], "Bad Request", "{err}");
    assert!(
        err["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("not valid JSON"),
        "{err}"
    );
    assert!(out.stdout.is_empty());

    // The service's own 404, exit 4.
    let out = run(
        &[
            "call",
            VESSEL,
            "VesselService.FindAvailable",
            r#"{"capacity": 9999}"#,
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));
    let err: serde_json::Value = serde_json::from_slice(&out.stderr).expect("error JSON");
    assert_eq!(err["id"], VESSEL);
    assert_eq!(err["code"], 404);

    // No such service: exit 4 too.
    let out = run(&["call", "go.micro.srv.nothing", "X.Y", "{}"], "");
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));

    // A node that does not exist: unavailable, exit 6.
    let out = run(
        &[
            "call",
            VESSEL,
            "VesselService.FindAvailable",
            SPEC,
            "--node",
            "no-such-node",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(6), "{}", show(&out));

    // One address, without the registry.
    let out = run(&["describe", VESSEL, "-o", "json"], "");
    let versions: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let address = versions[0]["nodes"][0]["address"]
        .as_str()
        .expect("address")
        .to_string();
    let out = run(
        &[
            "call",
            VESSEL,
            "VesselService.FindAvailable",
            SPEC,
            "--address",
            &address,
        ],
        "",
    );
    assert!(out.status.success(), "{}", show(&out));
    assert!(text(&out.stdout).contains("vessel001"));

    // Nothing listens there: unavailable, exit 6.
    let out = run(
        &[
            "call",
            VESSEL,
            "VesselService.FindAvailable",
            SPEC,
            "--address",
            "127.0.0.1:1",
            "--timeout",
            "3s",
        ],
        "",
    );
    assert_eq!(out.status.code(), Some(6), "{}", show(&out));

    // A bad registry flag: a configuration error, exit 2.
    let out = run(&["--registry", "zookeeper", "services"], "");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(text(&out.stderr).contains("zookeeper"), "{}", show(&out));
}

#[tokio::test(flavor = "multi_thread")]
async fn health_is_serving_and_fails_for_a_dead_node_or_an_unknown_service() {
    let _turn = SERIAL.lock().await;
    let _vessel = Running::example("vessel", None);
    wait_listed(&[VESSEL], true);

    let out = run(&["health", VESSEL], "");
    assert!(out.status.success(), "{}", show(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("SERVING") && stdout.contains("ms"),
        "{stdout}"
    );

    let out = run(&["health", VESSEL, "-o", "json"], "");
    assert!(out.status.success(), "{}", show(&out));
    let nodes: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(nodes[0]["status"], "SERVING", "{nodes}");
    assert!(nodes[0]["latency_ms"].as_f64().is_some(), "{nodes}");

    let out = run(&["health", "go.micro.srv.nothing"], "");
    assert_eq!(out.status.code(), Some(4), "{}", show(&out));

    // A node in the registry that nothing serves.
    let registry = MdnsRegistry::builder()
        .loopback_only()
        .build()
        .expect("mdns");
    let ghost = micro_core::registry::Service::new("go.micro.srv.ghost")
        .version("latest")
        .node(Node::new("go.micro.srv.ghost-1", "127.0.0.1:1"));
    registry
        .register(&ghost, RegisterOptions::default())
        .await
        .expect("register");
    wait_listed(&["go.micro.srv.ghost"], true);
    let out = run(&["health", "go.micro.srv.ghost", "--timeout", "2s"], "");
    assert_eq!(out.status.code(), Some(7), "{}", show(&out));
    assert!(text(&out.stdout).contains("UNREACHABLE"), "{}", show(&out));
    registry.deregister(&ghost).await.expect("deregister");
}

/// Lines of a child's stdout, as they come.
fn lines_of(child: &mut Child) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (at most 15 s) for a line for which `wanted` holds; returns it.
fn expect_line(
    lines: &mpsc::Receiver<String>,
    what: &str,
    wanted: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let value: serde_json::Value =
                    serde_json::from_str(&line).unwrap_or(serde_json::Value::Null);
                if wanted(&value) {
                    return value;
                }
                seen.push(line);
            }
            Err(_) => panic!("no {what} within 15s; saw:\n{}", seen.join("\n")),
        }
    }
}

#[test]
fn watch_sees_a_vessel_start_and_stop() {
    let _turn = turn();
    let watch = micro()
        .args(["watch", VESSEL, "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("micro watch");
    let mut watch = Running { child: watch };
    let lines = lines_of(&mut watch.child);
    // Let the watch start before the vessel does.
    std::thread::sleep(Duration::from_millis(500));
    let vessel = Running::example("vessel", None);
    let created = expect_line(&lines, "create event", |v| {
        v["action"] == "create" && v["service"] == VESSEL
    });
    let node = created["node"].as_str().expect("node id").to_string();
    assert!(node.starts_with(VESSEL), "{created}");
    assert!(
        created["address"]
            .as_str()
            .unwrap_or_default()
            .contains(':'),
        "{created}"
    );
    vessel.stop();
    let deleted = expect_line(&lines, "delete event", |v| {
        v["action"] == "delete" && v["node"] == node.as_str()
    });
    assert_eq!(deleted["service"], VESSEL);
}

#[test]
fn publish_reaches_the_vessel_subscriber() {
    let _turn = turn();
    let log = std::env::temp_dir().join(format!("micro-cli-vessel-{}.log", std::process::id()));
    let _vessel = Running::example("vessel", Some(&log));
    // The vessel's subscription is a registry entry of the registry broker.
    wait_listed(&[VESSEL, "micro.broker"], true);
    let id = format!("cli-{}", std::process::id());
    let message = format!(r#"{{"id": "{id}", "vessel_id": "vessel001", "weight": 7}}"#);
    let out = run(&["publish", "consignment.created", &message], "");
    assert!(out.status.success(), "{}", show(&out));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("booking received")) {
            assert!(line.contains(&format!("consignment={id}")), "{line}");
            assert!(line.contains("weight=7"), "{line}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the vessel never got the event:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&log);

    // Not JSON: a bad request, nothing published.
    let out = run(&["publish", "consignment.created", "{nope"], "");
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
}

/// The streaming sample's messages, JSON and protobuf.
#[derive(
    Clone, PartialEq, prost::Message, micro_core::serde::Serialize, micro_core::serde::Deserialize,
)]
#[serde(crate = "micro_core::serde", default)]
struct Note {
    #[prost(string, tag = "1")]
    text: String,
    #[prost(int32, tag = "2")]
    count: i32,
}
micro_core::json_message!(Note);

/// A service with every streaming shape: `Shapes.List` (server), `Shapes.Collect`
/// (client), `Shapes.Chat` (bidirectional).
fn shapes() -> Handler {
    Handler::new("demo.shapes", "Shapes")
        .server_streaming(
            "List",
            "Note",
            "Note",
            |_ctx: Context, note: Note, out: Sender<Note>| async move {
                for i in 0..note.count {
                    out.send(Note {
                        text: format!("{}-{i}", note.text),
                        count: i,
                    })
                    .await?;
                }
                Ok::<(), Error>(())
            },
        )
        .client_streaming(
            "Collect",
            "Note",
            "Note",
            |_ctx: Context, mut notes: Receiver<Note>| async move {
                let mut texts = Vec::new();
                while let Some(note) = notes.recv().await {
                    texts.push(note?.text);
                }
                Ok::<_, Error>(Note {
                    count: i32::try_from(texts.len()).unwrap_or(i32::MAX),
                    text: texts.join(","),
                })
            },
        )
        .streaming(
            "Chat",
            "Note",
            "Note",
            |_ctx: Context, mut notes: Receiver<Note>, out: Sender<Note>| async move {
                while let Some(note) = notes.recv().await {
                    let note = note?;
                    out.send(Note {
                        text: format!("re: {}", note.text),
                        count: note.count,
                    })
                    .await?;
                }
                Ok::<(), Error>(())
            },
        )
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_round_trips_every_shape() {
    let _turn = SERIAL.lock().await;
    let registry: Arc<dyn Registry> = Arc::new(
        MdnsRegistry::builder()
            .loopback_only()
            .build()
            .expect("mdns"),
    );
    let service = Service::new("demo.shapes")
        .expect("service")
        .registry(registry)
        .address("127.0.0.1:0")
        .handle(shapes())
        .expect("handler");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(service.run_until(async move {
        let _ = stopped.await;
    }));
    let listed = tokio::task::spawn_blocking(|| wait_listed(&["demo.shapes"], true)).await;
    listed.expect("listed");

    let stream = |endpoint: &'static str, input: &'static str| {
        tokio::task::spawn_blocking(move || run(&["stream", "demo.shapes", endpoint], input))
    };

    // Server stream: one request, three replies as JSON lines.
    let out = stream("Shapes.List", "{\"text\": \"n\", \"count\": 3}\n")
        .await
        .expect("run");
    assert!(out.status.success(), "{}", show(&out));
    let replies: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    let texts: Vec<&str> = replies.iter().filter_map(|r| r["text"].as_str()).collect();
    assert_eq!(texts, ["n-0", "n-1", "n-2"]);

    // Client stream: three requests, one reply.
    let out = stream(
        "Shapes.Collect",
        "{\"text\":\"a\"}\n{\"text\":\"b\"}\n\n{\"text\":\"c\"}\n",
    )
    .await
    .expect("run");
    assert!(out.status.success(), "{}", show(&out));
    let reply: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).expect("JSON");
    assert_eq!(reply["text"], "a,b,c");
    assert_eq!(reply["count"], 3);

    // Bidirectional, by its full gRPC path.
    let out = tokio::task::spawn_blocking(|| {
        run(
            &["stream", "demo.shapes", "/demo.shapes.Shapes/Chat"],
            "{\"text\":\"hi\"}\n{\"text\":\"there\",\"count\":2}\n",
        )
    })
    .await
    .expect("run");
    assert!(out.status.success(), "{}", show(&out));
    let lines: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{}", show(&out));
    assert!(lines[0].contains("re: hi"), "{lines:?}");
    assert!(lines[1].contains("re: there"), "{lines:?}");

    // A line that is not JSON: the requests end there, exit 3.
    let out = stream(
        "Shapes.Chat",
        "{\"text\":\"ok\"}\nnot json\n{\"text\":\"never\"}\n",
    )
    .await
    .expect("run");
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(text(&out.stderr).contains("line 2"), "{}", show(&out));
    assert!(!text(&out.stdout).contains("never"), "{}", show(&out));

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), served).await;
}

#[test]
fn subscribe_prints_what_publish_sends() {
    let _turn = turn();
    let subscribe = micro()
        .args(["subscribe", "micro.cli.test", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("micro subscribe");
    let mut subscribe = Running { child: subscribe };
    let lines = lines_of(&mut subscribe.child);
    // The subscription is a registry entry of the registry broker.
    wait_listed(&["micro.broker"], true);
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = r#"{"n": 1}"#;
    // Published until delivered: the publisher may not see the subscription at once.
    let got = loop {
        let out = run(&["publish", "micro.cli.test", body], "");
        if out.status.success() {
            if let Ok(line) = lines.recv_timeout(Duration::from_secs(2)) {
                break line;
            }
        }
        assert!(Instant::now() < deadline, "never delivered: {}", show(&out));
        std::thread::sleep(Duration::from_millis(200));
    };
    let event: serde_json::Value = serde_json::from_str(&got).expect("a JSON line");
    assert_eq!(event["topic"], "micro.cli.test", "{event}");
    assert_eq!(event["body"]["n"], 1, "{event}");
    assert_eq!(
        event["header"]["Content-Type"], "application/json",
        "{event}"
    );
}
