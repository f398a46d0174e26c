//! Scenario 7: the etcd member in use killed under load, in a 3-member cluster.

use std::sync::Arc;

use super::support::{Report, Suite};

/// Established TCP connections from process `pid` to each of `ports` (its sockets in
/// /proc/<pid>/fd matched against /proc/<pid>/net/tcp).
pub fn connections_to(pid: u32, ports: &[u16]) -> Vec<usize> {
    let inodes: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|target| {
                    let t = target.to_string_lossy().to_string();
                    t.strip_prefix("socket:[")
                        .and_then(|s| s.strip_suffix(']'))
                        .and_then(|s| s.parse().ok())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut counts = vec![0; ports.len()];
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 10 || fields[3] != "01" {
                continue;
            }
            let Ok(inode) = fields[9].parse::<u64>() else {
                continue;
            };
            let port = fields[2]
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if let (true, Some(port)) = (inodes.contains(&inode), port)
                && let Some(i) = ports.iter().position(|p| *p == port)
            {
                counts[i] += 1;
            }
        }
    }
    counts
}

#[cfg(feature = "etcd")]
pub async fn member_killed(suite: Arc<Suite>, report: Report) {
    use std::time::{Duration, Instant};

    use micro_core::registry::{EtcdRegistry, Registry};

    use super::faults::{pause, setup, workers};
    use super::support::{
        CONSIGNMENT, Load, Proc, VESSEL, free_port, ms, shipping, wait_registered, warm_up,
    };

    if !suite.need(&report, &["vessel", "consignment", "etcd"]) {
        return;
    }
    let Some(mut etcd) = super::etcd_support::EtcdCluster::start(3) else {
        report.skip("etcd is not installed");
        return;
    };
    let addresses = etcd.addresses();
    let ports: Vec<u16> = addresses
        .iter()
        .filter_map(|a| a.rsplit_once(':').and_then(|(_, p)| p.parse().ok()))
        .collect();
    // Short leases, so that they are renewed (through another member) during the run.
    let env = [
        ("MICRO_REGISTRY", "etcd".to_string()),
        ("MICRO_REGISTRY_ADDRESS", etcd.address_list()),
        ("MICRO_REGISTER_TTL", "6".to_string()),
        ("MICRO_REGISTER_INTERVAL", "2".to_string()),
    ];
    let registry: Arc<dyn Registry> =
        Arc::new(setup!(report, EtcdRegistry::new(addresses.clone())));
    let mut v = Proc::example(&suite, "vessel", "vessel", free_port(), &env);
    setup!(report, wait_registered(&*registry, VESSEL, &mut v).await);
    let mut c = Proc::example(&suite, "consignment", "consignment", free_port(), &env);
    setup!(
        report,
        wait_registered(&*registry, CONSIGNMENT, &mut c).await
    );
    let client = shipping(Arc::clone(&registry));
    setup!(report, warm_up(&client, Duration::from_secs(10)).await);

    let load = Load::start(&client, workers(), pause(), Duration::from_secs(60));
    report.note(&format!(
        "3 etcd members ({}); vessel and consignment on etcd, TTL 6 s, re-register every 2 s; \
         {}; after 3 s the member they use is SIGKILLed; 9 s more",
        etcd.address_list(),
        load.describe()
    ));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let by_consignment = connections_to(c.pid(), &ports);
    let by_vessel = connections_to(v.pid(), &ports);
    let by_me = connections_to(std::process::id(), &ports);
    let in_use: Vec<usize> = (0..ports.len())
        .map(|i| by_consignment[i] + by_vessel[i])
        .collect();
    let victim = (0..ports.len()).max_by_key(|i| in_use[*i]).unwrap_or(0);
    report.note(&format!(
        "connections to members m0..m2: consignment {by_consignment:?}, vessel {by_vessel:?}, \
         this client {by_me:?}; killing m{victim} ({})",
        addresses[victim]
    ));
    let killed_at = Instant::now();
    etcd.kill(victim);
    tokio::time::sleep(Duration::from_secs(9)).await;
    let calls = load.stop().await;
    let after: Vec<_> = calls.0.iter().filter(|c| c.at >= killed_at).collect();
    let failed_after = after.iter().filter(|c| c.error.is_some()).count();
    let max_after = after.iter().map(|c| c.took).max().unwrap_or_default();
    report.note(&format!(
        "after the kill: {} calls, {failed_after} failed, max latency {}; connections now: \
         consignment {:?}, vessel {:?}",
        after.len(),
        ms(max_after),
        connections_to(c.pid(), &ports),
        connections_to(v.pid(), &ports)
    ));
    let nodes = match registry.get_service(CONSIGNMENT).await {
        Ok(s) => s.iter().map(|s| s.nodes.len()).sum::<usize>().to_string(),
        Err(e) => e.to_string(),
    };
    report.check(
        "the etcd member in use SIGKILLed under load",
        &format!(
            "{}; consignment nodes in etcd afterwards: {nodes}",
            calls.summary()
        ),
        "0 failed calls",
        calls.failed() == 0 && calls.count() > 0,
    );
}

#[cfg(not(feature = "etcd"))]
pub async fn member_killed(_suite: Arc<Suite>, report: Report) {
    super::shutdown::not_built(&report);
}
