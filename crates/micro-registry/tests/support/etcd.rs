//! Real etcd members for tests: Debian's `etcd-server`, on free loopback ports, each
//! with a data directory of its own, killed and removed when dropped.
//!
//! Shared by micro-registry's etcd tests and the worked example's (`#[path]`).
//! Without `etcd` installed the tests are skipped, unless `MICRO_REQUIRE_ETCD` is
//! set (CI sets it), in which case they fail.

// Each test binary that includes this file uses a part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One member's fixed ports and data directory; its process comes and goes.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    process: Option<Child>,
}

/// An etcd cluster of one or more members on loopback.
pub(crate) struct EtcdCluster {
    members: Vec<Member>,
    token: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster has a leader. `None` when
    /// etcd is not installed (and not required).
    pub(crate) fn start(size: usize) -> Option<Self> {
        if Command::new("etcd").arg("--version").output().is_err() {
            assert!(
                std::env::var_os("MICRO_REQUIRE_ETCD").is_none(),
                "etcd is required (apt-get install etcd-server)"
            );
            eprintln!("SKIPPED: etcd is not installed (apt-get install etcd-server)");
            return None;
        }
        static CLUSTERS: AtomicUsize = AtomicUsize::new(0);
        let token = format!(
            "micro-test-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::Relaxed)
        );
        let members = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data_dir: std::env::temp_dir().join(format!("{token}-m{i}")),
                process: None,
            })
            .collect();
        let mut cluster = Self { members, token };
        for i in 0..size {
            cluster.spawn(i);
        }
        for i in 0..size {
            cluster.wait_healthy(i);
        }
        Some(cluster)
    }

    /// `127.0.0.1:port` of every member, for `MICRO_REGISTRY_ADDRESS`.
    pub(crate) fn addresses(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// The addresses joined with commas.
    pub(crate) fn address_list(&self) -> String {
        self.addresses().join(",")
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) {
        let initial_cluster = self.initial_cluster();
        let member = &mut self.members[i];
        // A restarted member with its data rejoins; one without starts over, which
        // for a one-member cluster is a brand-new, empty etcd.
        let state = "new";
        let client = format!("http://127.0.0.1:{}", member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        std::fs::create_dir_all(&member.data_dir).expect("etcd data directory");
        let log = std::fs::File::create(member.data_dir.with_extension("log")).expect("etcd log");
        let child = Command::new("etcd")
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(member.data_dir.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            // Quick elections, so that losing a member costs little test time.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting etcd");
        member.process = Some(child);
    }

    /// Waits until member `i` answers `/health` with a leader.
    pub(crate) fn wait_healthy(&mut self, i: usize) {
        let port = self.members[i].client_port;
        let log = self.members[i].data_dir.with_extension("log");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !healthy(port) {
            let exited = self.members[i]
                .process
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten());
            if exited.is_some() || Instant::now() >= deadline {
                panic!(
                    "etcd member {i} not healthy ({exited:?}); its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL member `i`, as a crash would.
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts member `i` again on its ports, with its data.
    pub(crate) fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        self.wait_healthy(i);
    }

    /// Starts member `i` again on its ports with no data: a brand-new etcd.
    pub(crate) fn restart_empty(&mut self, i: usize) {
        self.kill(i);
        let _ = std::fs::remove_dir_all(self.members[i].data_dir.join("data"));
        self.spawn(i);
        self.wait_healthy(i);
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
            let _ = std::fs::remove_dir_all(&self.members[i].data_dir);
            let _ = std::fs::remove_file(self.members[i].data_dir.with_extension("log"));
        }
    }
}

/// etcd's `/health` over plain HTTP/1.1: true once the member sees a leader.
fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.contains("\"health\":\"true\"")
}
