//! What every scenario uses: the example binaries, child processes that are killed
//! when dropped, /proc figures, a steady booking load, and the report.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use micro_core::registry::{MdnsRegistry, Registry};
use micro_core::transport::TcpTransport;
use micro_core::{CallOptions, Client, Request};
use micro_examples::consignment::{Consignment, Container, ShippingService};

/// The services' registry names.
pub const VESSEL: &str = "go.micro.srv.vessel";
pub const CONSIGNMENT: &str = "go.micro.srv.consignment";
/// Every call the suite makes has this timeout: a call that hangs is a failed call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a process gets to exit after SIGTERM before it is SIGKILLed (and the
/// figure reported as "more than this").
pub const EXIT_CAP: Duration = Duration::from_secs(15);
/// How long a process gets to appear in the registry after it is started.
pub const START_WAIT: Duration = Duration::from_secs(15);

/// A free loopback port (bound, then released; nothing else runs in the namespace).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Whether `MICRO_REQUIRE_CHAOS` is set: a missing binary fails instead of skipping.
pub fn required() -> bool {
    std::env::var_os("MICRO_REQUIRE_CHAOS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// A tool on `PATH` that answers `--version`.
pub fn have_tool(name: &str) -> bool {
    Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// The suite's shared state: the example binaries (copied once, so that another build
/// into the same target directory cannot swap them mid-run) and the log directory.
#[derive(Debug)]
pub struct Suite {
    pub dir: PathBuf,
    bins: BTreeMap<&'static str, PathBuf>,
}

impl Suite {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("micro-chaos-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).expect("log directory");
        let examples = examples_dir();
        let mut bins = BTreeMap::new();
        for name in ["vessel", "consignment", "consignment-cli"] {
            let from = examples.join(name);
            let to = dir.join("bin").join(name);
            if std::fs::copy(&from, &to).is_ok() {
                bins.insert(name, to);
            }
        }
        println!(
            "examples: {} (copied to {})",
            examples.display(),
            dir.join("bin").display()
        );
        Self { dir, bins }
    }

    /// The copied example binary `name`, if it was there.
    pub fn bin(&self, name: &str) -> Option<&Path> {
        self.bins.get(name).map(PathBuf::as_path)
    }

    /// A log file for a child.
    pub fn log(&self, name: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        self.dir.join(format!(
            "{:03}-{name}.log",
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// Records a skip (or, with `MICRO_REQUIRE_CHAOS`, a failure) for every one of
    /// `needs` that is missing; true when all are there.
    pub fn need(&self, report: &Report, needs: &[&str]) -> bool {
        let missing: Vec<&str> = needs
            .iter()
            .copied()
            .filter(|n| match *n {
                "etcd" | "nats-server" => !have_tool(n),
                example => self.bin(example).is_none(),
            })
            .collect();
        if missing.is_empty() {
            return true;
        }
        let why = format!(
            "missing: {} (make chaos builds the examples; scripts/deps.sh installs etcd and nats-server)",
            missing.join(", ")
        );
        if required() {
            report.fail(
                "prerequisites",
                &why,
                "everything this scenario runs is there (MICRO_REQUIRE_CHAOS=1)",
            );
        } else {
            report.skip(&why);
        }
        false
    }
}

/// Where cargo put the example binaries: `CHAOS_EXAMPLES`, else next to this bench's
/// `deps` directory (`<target>/release/examples`).
fn examples_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CHAOS_EXAMPLES") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("bench executable path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples"))
        .expect("target directory")
}

// ---------------------------------------------------------------------------------
// Child processes

/// Child pids alive, for the emergency stop (a signal to the suite itself).
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// SIGKILLs every direct child of this process, by id (etcd members included, which
/// their own guard started), and reaps what it can. For a signal or a timeout of the
/// whole suite, and as a last sweep after each scenario.
pub fn kill_all_children() -> usize {
    let me = std::process::id();
    let mut pids: Vec<u32> = lock(&CHILDREN).clone();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // pid (comm) state ppid ...: the comm may hold spaces, so read after ')'.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next());
            if ppid == Some(me) && state != Some("Z") && !pids.contains(&pid) {
                pids.push(pid);
            }
        }
    }
    let mut killed = 0;
    for pid in pids {
        if Path::new(&format!("/proc/{pid}")).exists()
            && Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        {
            killed += 1;
        }
    }
    killed
}

/// How a process ended after SIGTERM.
#[derive(Debug, Clone, Copy)]
pub struct Exit {
    /// From sending SIGTERM to the exit being seen (polled every 2 ms).
    pub took: Duration,
    /// Its status; `None` when it had to be SIGKILLed after [`EXIT_CAP`].
    pub status: Option<ExitStatus>,
}

impl Exit {
    pub fn within(&self, limit: Duration) -> bool {
        self.status.is_some() && self.took <= limit
    }

    pub fn describe(&self) -> String {
        match self.status {
            Some(s) => format!("{} ({})", ms(self.took), status_text(s)),
            None => format!("> {} (still running; SIGKILLed)", ms(EXIT_CAP)),
        }
    }
}

fn status_text(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "?".into(),
    }
}

/// A child process, SIGKILLed when dropped (also while unwinding from a panic).
#[derive(Debug)]
pub struct Proc {
    pub name: String,
    pub port: u16,
    pub log: PathBuf,
    child: Child,
}

impl Proc {
    /// Starts example `bin` listening on 127.0.0.1:`port`, mDNS on loopback only,
    /// logging warnings to its own file, with `env` on top.
    pub fn example(
        suite: &Suite,
        bin: &str,
        name: &str,
        port: u16,
        env: &[(&str, String)],
    ) -> Self {
        let path = suite.bin(bin).unwrap_or_else(|| panic!("{bin} is missing"));
        let mut command = Command::new(path);
        command
            .env("MICRO_MDNS_INTERFACES", "loopback")
            .env("RUST_LOG", "warn")
            .env("MICRO_SERVER_ADDRESS", format!("127.0.0.1:{port}"));
        for (key, value) in env {
            command.env(key, value);
        }
        Self::spawn(suite, name, port, command)
    }

    /// Starts `command` with its output in a log file.
    pub fn spawn(suite: &Suite, name: &str, port: u16, mut command: Command) -> Self {
        let log = suite.log(name);
        let file = std::fs::File::create(&log).expect("log file");
        let err = file.try_clone().expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        lock(&CHILDREN).push(child.id());
        Self {
            name: name.to_string(),
            port,
            log,
            child,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL, and reap.
    pub fn sigkill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// SIGTERM, then waits up to [`EXIT_CAP`] for the exit (SIGKILL after it).
    pub async fn terminate(&mut self) -> Exit {
        let sent = Instant::now();
        self.sigterm();
        self.wait_exit(sent).await
    }

    /// Waits for the exit of a process signalled at `sent`.
    pub async fn wait_exit(&mut self, sent: Instant) -> Exit {
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Exit {
                    took: sent.elapsed(),
                    status: Some(status),
                };
            }
            if sent.elapsed() > EXIT_CAP {
                self.sigkill();
                return Exit {
                    took: sent.elapsed(),
                    status: None,
                };
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Open file descriptors (/proc/<pid>/fd).
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// VmRSS in KiB (/proc/<pid>/status).
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let pid = self.child.id();
        lock(&CHILDREN).retain(|p| *p != pid);
    }
}

/// VmRSS of a process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------
// Registries and clients

/// An mDNS registry on loopback, as the examples use.
pub fn mdns() -> MdnsRegistry {
    MdnsRegistry::builder()
        .loopback_only()
        .build()
        .expect("mdns registry")
}

/// The consignment service's generated client, over `registry`.
pub fn shipping(registry: Arc<dyn Registry>) -> ShippingService {
    ShippingService::new(
        CONSIGNMENT,
        Client::new(registry, Arc::new(TcpTransport::default())),
    )
}

/// A booking a vessel can take.
pub fn booking(n: usize) -> Consignment {
    Consignment {
        description: format!("chaos booking {n}"),
        weight: 100,
        containers: vec![
            Container {
                customer_id: "chaos".into(),
                ..Container::default()
            };
            3
        ],
        ..Consignment::default()
    }
}

/// One booking with the suite's timeout: its latency, or the error.
pub async fn book(shipping: &ShippingService, n: usize) -> (Duration, Result<(), String>) {
    let started = Instant::now();
    let result = shipping
        .create_consignment(Request::new(
            booking(n),
            CallOptions::new().timeout(CALL_TIMEOUT),
        ))
        .await;
    let took = started.elapsed();
    let result = match result {
        Ok(r) if r.created => Ok(()),
        Ok(_) => Err("answered created=false".into()),
        Err(e) => Err(format!("{} {}", e.code, e.detail)),
    };
    (took, result)
}

/// Waits until `registry` lists a node of `service` at `proc`'s address; fails early
/// if the process exits. How long it took.
pub async fn wait_registered(
    registry: &dyn Registry,
    service: &str,
    proc: &mut Proc,
) -> Result<Duration, String> {
    let started = Instant::now();
    let address = proc.address();
    loop {
        if let Ok(found) = registry.get_service(service).await
            && found
                .iter()
                .flat_map(|s| s.nodes.iter())
                .any(|n| n.address == address)
        {
            return Ok(started.elapsed());
        }
        if !proc.alive() {
            return Err(format!(
                "{} exited before registering; its log:\n{}",
                proc.name,
                proc.log_tail(20)
            ));
        }
        if started.elapsed() > START_WAIT {
            return Err(format!(
                "{} not in the registry within {START_WAIT:?}; its log:\n{}",
                proc.name,
                proc.log_tail(20)
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Books until one booking succeeds (the path through every process works), within
/// `within`.
pub async fn warm_up(shipping: &ShippingService, within: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    let mut last = String::new();
    while started.elapsed() < within {
        match book(shipping, 0).await {
            (_, Ok(())) => return Ok(started.elapsed()),
            (_, Err(e)) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("no booking succeeded within {within:?}: {last}"))
}

// ---------------------------------------------------------------------------------
// Load

/// One call of a load.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub took: Duration,
    pub error: Option<String>,
}

/// A steady booking load: `workers` tasks, each booking, pausing, booking again,
/// until stopped or `limit` has passed.
#[derive(Debug)]
pub struct Load {
    stop: Arc<AtomicBool>,
    in_flight: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<Vec<Call>>>,
    pub workers: usize,
    pub pause: Duration,
}

impl Load {
    pub fn start(
        shipping: &ShippingService,
        workers: usize,
        pause: Duration,
        limit: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let until = Instant::now() + limit;
        let tasks = (0..workers)
            .map(|w| {
                let (shipping, stop, in_flight) =
                    (shipping.clone(), Arc::clone(&stop), Arc::clone(&in_flight));
                tokio::spawn(async move {
                    let mut calls = Vec::new();
                    let mut n = w * 1_000_000;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                        n += 1;
                        let at = Instant::now();
                        in_flight.fetch_add(1, Ordering::SeqCst);
                        let (took, result) = book(&shipping, n).await;
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        calls.push(Call {
                            at,
                            took,
                            error: result.err(),
                        });
                        tokio::time::sleep(pause).await;
                    }
                    calls
                })
            })
            .collect();
        Self {
            stop,
            in_flight,
            tasks,
            workers,
            pause,
        }
    }

    /// Calls in flight right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Stops the workers (each finishes its call) and returns every call.
    pub async fn stop(self) -> Calls {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        for task in self.tasks {
            if let Ok(calls) = task.await {
                all.extend(calls);
            }
        }
        all.sort_by_key(|c| c.at);
        Calls(all)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} workers booking back to back with {} between calls",
            self.workers,
            ms(self.pause)
        )
    }
}

/// The calls of a load, and their figures.
#[derive(Debug, Default)]
pub struct Calls(pub Vec<Call>);

impl Calls {
    pub fn count(&self) -> usize {
        self.0.len()
    }

    pub fn failed(&self) -> usize {
        self.0.iter().filter(|c| c.error.is_some()).count()
    }

    fn sorted(&self) -> Vec<Duration> {
        let mut v: Vec<Duration> = self.0.iter().map(|c| c.took).collect();
        v.sort();
        v
    }

    pub fn max(&self) -> Duration {
        self.sorted().last().copied().unwrap_or_default()
    }

    pub fn percentile(&self, p: f64) -> Duration {
        percentile(&self.sorted(), p)
    }

    /// Up to three distinct errors, with counts.
    pub fn errors(&self) -> String {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for c in &self.0 {
            if let Some(e) = &c.error {
                *counts.entry(e.as_str()).or_default() += 1;
            }
        }
        counts
            .iter()
            .take(3)
            .map(|(e, n)| format!("{n}× {}", clip(e, 160)))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// "N calls, F failed, p50 / p99 / max latency".
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} calls, {} failed, latency p50 {} p99 {} max {}",
            self.count(),
            self.failed(),
            ms(self.percentile(0.5)),
            ms(self.percentile(0.99)),
            ms(self.max())
        );
        if self.failed() > 0 {
            s.push_str(&format!(" [{}]", self.errors()));
        }
        s
    }
}

pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// A duration in milliseconds, to a tenth under 10 ms.
pub fn ms(d: Duration) -> String {
    let m = d.as_secs_f64() * 1000.0;
    if m < 10.0 {
        format!("{m:.1} ms")
    } else {
        format!("{m:.0} ms")
    }
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn clip(s: &str, n: usize) -> String {
    let one_line = s.replace('\n', " ");
    if one_line.chars().count() <= n {
        one_line
    } else {
        format!("{}…", one_line.chars().take(n).collect::<String>())
    }
}

// ---------------------------------------------------------------------------------
// Report

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail,
    Skip,
}

/// One goal checked: its figures and whether they met it.
#[derive(Debug, Clone)]
pub struct Check {
    pub scenario: String,
    pub name: String,
    pub figures: String,
    pub goal: String,
    pub outcome: Outcome,
}

/// A scenario's checks, printed as they are made; shared with the runner so that a
/// panicking scenario keeps what it measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: String,
    pub checks: Arc<Mutex<Vec<Check>>>,
}

impl Report {
    pub fn new(scenario: &str) -> Self {
        Self {
            scenario: scenario.to_string(),
            checks: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// A line of context (setup, intermediate figures).
    pub fn note(&self, text: &str) {
        println!("   {text}");
    }

    pub fn check(&self, name: &str, figures: &str, goal: &str, pass: bool) {
        self.push(
            name,
            figures,
            goal,
            if pass { Outcome::Pass } else { Outcome::Fail },
        );
    }

    pub fn fail(&self, name: &str, figures: &str, goal: &str) {
        self.push(name, figures, goal, Outcome::Fail);
    }

    pub fn skip(&self, why: &str) {
        self.push("skipped", why, "-", Outcome::Skip);
    }

    fn push(&self, name: &str, figures: &str, goal: &str, outcome: Outcome) {
        let word = match outcome {
            Outcome::Pass => "PASS",
            Outcome::Fail => "FAIL",
            Outcome::Skip => "SKIP",
        };
        println!("   [{word}] {name}: {figures}");
        println!("          goal: {goal}");
        lock(&self.checks).push(Check {
            scenario: self.scenario.clone(),
            name: name.to_string(),
            figures: figures.to_string(),
            goal: goal.to_string(),
            outcome,
        });
    }

    pub fn take(&self) -> Vec<Check> {
        lock(&self.checks).clone()
    }
}
