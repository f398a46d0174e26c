//! One watch of the whole registry prefix per registry, turned into go-micro's
//! Create/Update/Delete events.
//!
//! The task keeps what it last saw of every key. Each time it (re)connects it reads
//! the prefix and reports the difference, then watches from just after that read:
//! so nothing is lost across a broken stream, a compacted history or an etcd that
//! came back empty, and a value written again unchanged is not reported at all.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{EventType, WatchOptions as EtcdWatchOptions};
use tokio::sync::watch;

use super::endpoints::{Endpoints, is_unreachable};
use super::layout::{PREFIX, decode};
use crate::Action;
use crate::registry::WatchHub;

/// Whether the watch is established, and the last reason it was not.
#[derive(Debug, Clone, Default)]
pub(crate) struct WatchStatus {
    pub(crate) ready: bool,
    pub(crate) error: Option<String>,
}

/// Raw values by key, as last seen.
type Seen = HashMap<Vec<u8>, Vec<u8>>;

/// Runs until aborted: read, report the difference, watch; again on any failure.
pub(crate) async fn run(
    endpoints: Arc<Endpoints>,
    hub: WatchHub,
    status: watch::Sender<WatchStatus>,
) {
    let mut seen: Option<Seen> = None;
    let retry_after = Duration::from_millis(200);
    loop {
        let snapshot = super::read::prefix(&endpoints, PREFIX).await;
        let (revision, kvs) = match snapshot {
            Ok(read) => read,
            Err(e) => {
                tracing::warn!(error = %e, "etcd registry unreachable; watching again shortly");
                status.send_modify(|s| s.error = Some(e.to_string()));
                tokio::time::sleep(retry_after).await;
                continue;
            }
        };
        let now: Seen = kvs.into_iter().collect();
        // The first read is the baseline: watchers want what changes after it.
        if let Some(before) = seen.take() {
            report_difference(&hub, &before, &now);
        }
        seen = Some(now);
        status.send_modify(|s| {
            s.ready = true;
            s.error = None;
        });

        let (member, mut client) = endpoints.current_or_retry(retry_after).await;
        let options = EtcdWatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(revision + 1);
        let mut stream = match client.watch(PREFIX, Some(options)).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "etcd watch not opened");
                if is_unreachable(&e) {
                    endpoints.fail_over(member);
                }
                tokio::time::sleep(retry_after).await;
                continue;
            }
        };
        let Some(seen) = seen.as_mut() else { continue };
        loop {
            match stream.message().await {
                Ok(Some(response)) if response.canceled() => {
                    tracing::info!(
                        reason = response.cancel_reason(),
                        compacted = response.compact_revision(),
                        "etcd watch cancelled; reading the registry again"
                    );
                    break;
                }
                Ok(Some(response)) => {
                    for event in response.events() {
                        apply(&hub, seen, event);
                    }
                }
                Ok(None) => {
                    tracing::debug!("etcd watch stream closed");
                    endpoints.fail_over(member);
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "etcd watch stream failed");
                    if is_unreachable(&e) {
                        endpoints.fail_over(member);
                    }
                    break;
                }
            }
        }
        tokio::time::sleep(retry_after).await;
    }
}

/// Applies one etcd event to what was seen and publishes what it means.
fn apply(hub: &WatchHub, seen: &mut Seen, event: &etcd_client::Event) {
    let Some(kv) = event.kv() else { return };
    let key = kv.key();
    match event.event_type() {
        EventType::Put => {
            let previous = seen.insert(key.to_vec(), kv.value().to_vec());
            match previous {
                Some(old) if old == kv.value() => {}
                Some(_) => publish(hub, Action::Update, key, kv.value()),
                None => publish(hub, Action::Create, key, kv.value()),
            }
        }
        EventType::Delete => {
            // The value comes from what was seen, or from etcd's previous value.
            let previous = seen
                .remove(key)
                .or_else(|| event.prev_kv().map(|p| p.value().to_vec()));
            if let Some(old) = previous {
                publish(hub, Action::Delete, key, &old);
            }
        }
    }
}

/// Publishes the differences between two reads as events.
fn report_difference(hub: &WatchHub, before: &Seen, now: &Seen) {
    for (key, value) in now {
        match before.get(key) {
            None => publish(hub, Action::Create, key, value),
            Some(old) if old != value => publish(hub, Action::Update, key, value),
            Some(_) => {}
        }
    }
    for (key, value) in before {
        if !now.contains_key(key) {
            publish(hub, Action::Delete, key, value);
        }
    }
}

fn publish(hub: &WatchHub, action: Action, key: &[u8], value: &[u8]) {
    match decode(key, value) {
        Ok(service) => hub.publish(action, service),
        Err(reason) => tracing::warn!(%reason, "ignoring an etcd registry value"),
    }
}
