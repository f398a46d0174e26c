//! The etcd members a registry talks to, and moving to the next when one is down.
//!
//! etcd-client balances requests over its endpoints but neither retries a request
//! that met a dead member nor moves a stream off one, so the registry keeps one
//! client per member, talks to one at a time, and moves on when a call cannot reach
//! it (the way etcd's Go client pins an endpoint and switches on failure).

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tokio::sync::OnceCell;
use tokio::time::Instant;

/// How long a connection with open streams may be silent before an HTTP/2 ping.
///
/// etcd's server accepts a ping at most every 5 s (`--grpc-keepalive-min-time`), and
/// none on a connection without streams; after three that break this it sends
/// GOAWAY `too_many_pings` and closes the connection. Pinging every 3 s, even idle,
/// had every quiet registry's connection cut about every 10 s: its watch then read
/// the whole registry again and its leases' keep-alive streams were opened again.
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may go unanswered before the member counts as gone.
pub(crate) const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// The etcd members of one registry, with the one in use.
#[derive(Debug)]
pub(crate) struct Endpoints {
    members: Vec<Member>,
    current: AtomicUsize,
    timeout: Duration,
}

struct Member {
    url: String,
    client: OnceCell<Client>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Endpoints {
    /// `urls` are checked, non-empty `http://host:port` addresses.
    pub(crate) fn new(urls: Vec<String>, timeout: Duration) -> Self {
        Self {
            members: urls
                .into_iter()
                .map(|url| Member {
                    url,
                    client: OnceCell::new(),
                })
                .collect(),
            current: AtomicUsize::new(0),
            timeout,
        }
    }

    /// How long one registry operation may take, retries included.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The member in use and its client.
    pub(crate) async fn current(&self) -> Result<(usize, Client), etcd_client::Error> {
        let index = self.current.load(Ordering::Relaxed) % self.members.len();
        Ok((index, self.client(index).await?))
    }

    /// [`Endpoints::current`] for a task that keeps going: a client that cannot be
    /// built (it never happens with checked addresses) is logged and tried again.
    pub(crate) async fn current_or_retry(&self, pause: Duration) -> (usize, Client) {
        loop {
            match self.current().await {
                Ok(current) => return current,
                Err(e) => {
                    tracing::warn!(error = %e, "etcd client unusable");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    /// Moves off member `from` if it is still the one in use (another task may
    /// have moved already).
    pub(crate) fn fail_over(&self, from: usize) {
        let next = (from + 1) % self.members.len();
        if self
            .current
            .compare_exchange(from, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
            && next != from
        {
            tracing::info!(
                from = %self.members[from].url,
                to = %self.members[next].url,
                "etcd member unreachable; moving to the next"
            );
        }
    }

    async fn client(&self, index: usize) -> Result<Client, etcd_client::Error> {
        let member = &self.members[index];
        let client = member
            .client
            .get_or_try_init(|| {
                // Without credentials connecting only builds a lazy channel; the
                // first request dials. HTTP/2 pings find a member that went silent
                // under an open watch or keep-alive stream; requiring a leader makes
                // a member cut off from the others refuse (so the registry moves on)
                // rather than hold a watch that never fires.
                let options = ConnectOptions::new()
                    .with_connect_timeout(self.timeout.min(Duration::from_secs(2)))
                    .with_keep_alive(PING_INTERVAL, PING_TIMEOUT)
                    .with_keep_alive_while_idle(false)
                    .with_require_leader(true);
                Client::connect([member.url.as_str()], Some(options))
            })
            .await?;
        Ok(client.clone())
    }

    /// Runs `op` on the member in use; when the member cannot be reached, on the
    /// next, round and round until the operation's time is up.
    ///
    /// Every operation the registry retries this way is idempotent (get, put of the
    /// same value, delete, a conditional put); a lease granted twice when a reply
    /// was lost expires unused.
    pub(crate) async fn call<T, F, Fut>(&self, mut op: F) -> Result<T, etcd_client::Error>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.timeout;
        let members = self.members.len();
        // A dead member must not eat the whole budget: each try gets a share.
        let per_try = (self.timeout / members as u32).max(Duration::from_millis(500));
        let mut tries = 0usize;
        loop {
            let (index, client) = self.current().await?;
            let try_deadline = deadline.min(Instant::now() + per_try);
            let error = match tokio::time::timeout_at(try_deadline, op(client)).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if is_unreachable(&e) => e,
                Ok(Err(e)) => return Err(e),
                Err(_) => etcd_client::Error::GRpcStatus(tonic::Status::deadline_exceeded(
                    format!("no answer from {} in {per_try:?}", self.members[index].url),
                )),
            };
            tracing::debug!(member = %self.members[index].url, error = %error, "etcd call failed");
            self.fail_over(index);
            tries += 1;
            if Instant::now() >= deadline {
                return Err(error);
            }
            if tries % members == 0 {
                // Every member failed once: the cluster may be restarting or
                // electing a leader. Wait a little before the next round.
                let pause = Duration::from_millis(100 * (tries / members).min(5) as u64);
                tokio::time::sleep_until(deadline.min(Instant::now() + pause)).await;
                if Instant::now() >= deadline {
                    return Err(error);
                }
            }
        }
    }
}

/// Whether an error says the member could not serve the request (so another may),
/// rather than that the request itself was refused.
pub(crate) fn is_unreachable(error: &etcd_client::Error) -> bool {
    use tonic::Code;
    match error {
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        etcd_client::Error::GRpcStatus(status) => matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
        ),
        _ => false,
    }
}

/// Whether etcd said the lease is gone (expired or revoked).
pub(crate) fn is_lease_not_found(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::NotFound && status.message().contains("lease")
        }
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("not found"),
        _ => false,
    }
}
