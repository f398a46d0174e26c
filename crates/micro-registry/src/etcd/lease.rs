//! Keeping a node's key alive: one lease per node, renewed at a third of its TTL,
//! and the key written again under a new lease when the old one is lost (etcd
//! restarted without its data, or was unreachable for longer than the TTL).

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Compare, CompareOp, PutOptions, Txn, TxnOp};

use super::endpoints::{Endpoints, is_lease_not_found};

/// One node's registration with a lease: what is written, and under which lease.
///
/// Every write for the key (a registration, the keeper restoring it, the
/// deregistration) holds `state`, so they never cross: a deregistration waits for
/// a restore under way, and a stopped registration is never written again.
#[derive(Debug)]
pub(crate) struct Held {
    pub(crate) key: String,
    /// Whole seconds, as etcd grants them.
    pub(crate) ttl: i64,
    state: tokio::sync::Mutex<HeldState>,
}

#[derive(Debug)]
pub(crate) struct HeldState {
    pub(crate) value: Vec<u8>,
    pub(crate) lease: i64,
    /// Deregistered or replaced: nothing is written for it any more.
    pub(crate) stopped: bool,
}

impl Held {
    pub(crate) fn new(key: String, ttl: i64, value: Vec<u8>, lease: i64) -> Self {
        Self {
            key,
            ttl,
            state: tokio::sync::Mutex::new(HeldState {
                value,
                lease,
                stopped: false,
            }),
        }
    }

    /// The registration's state, for a write.
    pub(crate) async fn lock(&self) -> tokio::sync::MutexGuard<'_, HeldState> {
        self.state.lock().await
    }
}

/// Makes sure `key` holds `value` under a live lease of `ttl` seconds and returns
/// that lease. With a `lease` already held, one conditional write does it (nothing
/// is written when key, value and lease are as they were, so watchers see no
/// change); when that lease is gone, a new one is granted.
pub(crate) async fn put_with_lease(
    endpoints: &Endpoints,
    key: &str,
    value: &[u8],
    ttl: i64,
    lease: Option<i64>,
) -> Result<i64, etcd_client::Error> {
    if let Some(lease) = lease {
        let txn = Txn::new()
            .when([
                Compare::value(key, CompareOp::Equal, value),
                Compare::lease(key, CompareOp::Equal, lease),
            ])
            .or_else([TxnOp::put(
                key,
                value,
                Some(PutOptions::new().with_lease(lease)),
            )]);
        match endpoints
            .call(|mut client| {
                let txn = txn.clone();
                async move { client.txn(txn).await }
            })
            .await
        {
            Ok(_) => return Ok(lease),
            Err(e) if is_lease_not_found(&e) => {
                tracing::info!(key, lease, "etcd lease lost; registering under a new one");
            }
            Err(e) => return Err(e),
        }
    }
    let granted = endpoints
        .call(|mut client| async move { client.lease_grant(ttl, None).await })
        .await?
        .id();
    endpoints
        .call(|mut client| async move {
            client
                .put(key, value, Some(PutOptions::new().with_lease(granted)))
                .await
        })
        .await?;
    Ok(granted)
}

/// Renews `held`'s lease until aborted. Any failure (the member went away, the
/// stream closed, the lease is gone) leads to checking the key with
/// [`put_with_lease`] before renewing again, so a lost registration is written back
/// as soon as etcd answers.
pub(crate) async fn keep_alive(endpoints: Arc<Endpoints>, held: Arc<Held>) {
    let ttl = Duration::from_secs(held.ttl.max(1) as u64);
    let renew_every = (ttl / 3).max(Duration::from_millis(500));
    let retry_after = (ttl / 6).clamp(Duration::from_millis(100), Duration::from_secs(1));
    // The key was just written when the task starts; after that, every time the
    // renewal stops, the key is checked (and restored) before renewing again.
    let mut restore = false;
    loop {
        if restore {
            let mut state = held.lock().await;
            if state.stopped {
                return;
            }
            match put_with_lease(
                &endpoints,
                &held.key,
                &state.value,
                held.ttl,
                Some(state.lease),
            )
            .await
            {
                Ok(lease) => state.lease = lease,
                Err(e) => {
                    drop(state);
                    tracing::warn!(key = %held.key, error = %e, "etcd registration not restored yet");
                    tokio::time::sleep(retry_after).await;
                    continue;
                }
            }
        }
        let (member, mut client) = endpoints.current_or_retry(retry_after).await;
        let lease = held.lock().await.lease;
        let opened =
            tokio::time::timeout(endpoints.timeout(), client.lease_keep_alive(lease)).await;
        let (mut keeper, mut responses) = match opened {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(key = %held.key, error = %e, "etcd keep-alive not opened");
                if super::endpoints::is_unreachable(&e) {
                    endpoints.fail_over(member);
                }
                restore = true;
                tokio::time::sleep(retry_after).await;
                continue;
            }
            Err(_) => {
                endpoints.fail_over(member);
                restore = true;
                continue;
            }
        };
        // Opening the stream renewed the lease once; renew on a timer from here,
        // and notice at once when the stream ends in between.
        loop {
            tokio::select! {
                () = tokio::time::sleep(renew_every) => {}
                ended = responses.message() => {
                    tracing::debug!(key = %held.key, ?ended, "etcd keep-alive stream ended");
                    break;
                }
            }
            if keeper.keep_alive().await.is_err() {
                break;
            }
            match tokio::time::timeout(endpoints.timeout(), responses.message()).await {
                Ok(Ok(Some(response))) if response.ttl() > 0 => {}
                Ok(Ok(Some(_))) => {
                    tracing::info!(key = %held.key, lease, "etcd lease expired");
                    break;
                }
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break,
            }
        }
        restore = true;
        // A stream that ends as soon as it opens must not make this loop spin.
        tokio::time::sleep(retry_after).await;
    }
}
