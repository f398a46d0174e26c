//! Reading a prefix in pages, all at one revision.
//!
//! One range read of the whole registry is one gRPC message, and etcd-client (as
//! tonic) refuses a message over 4 MiB: with go-micro's values (about 600 bytes a
//! node) that is near 7,000 nodes, after which `list_services` and the watch's
//! read failed, and the watch retried that read forever. etcd's own answer to
//! large ranges is pages (`etcdctl get --limit`, Kubernetes' paged lists): so each
//! read here asks for at most [`PAGE`] keys at a time, every page after the first
//! at the first page's revision, which makes the pages one consistent snapshot.

use etcd_client::GetOptions;

use super::endpoints::Endpoints;

/// Keys per page.
pub(crate) const PAGE: i64 = 1000;

/// The largest message a page may be: a page is at most [`PAGE`] values, and etcd
/// accepts values of up to 1.5 MiB (`--max-request-bytes`), so a page of large
/// values may still pass 4 MiB.
const MAX_MESSAGE: usize = 256 << 20;

/// Every key and value under `prefix`, and the revision they were read at.
pub(crate) async fn prefix(
    endpoints: &Endpoints,
    prefix: &str,
) -> Result<(i64, Vec<(Vec<u8>, Vec<u8>)>), etcd_client::Error> {
    let end = range_end(prefix.as_bytes());
    let mut from = prefix.as_bytes().to_vec();
    let mut revision = 0;
    let mut kvs = Vec::new();
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let mut response = endpoints
            .call(|client| {
                let (from, options) = (from.clone(), options.clone());
                async move {
                    client
                        .kv_client()
                        .max_decoding_message_size(MAX_MESSAGE)
                        .get(from, Some(options))
                        .await
                }
            })
            .await?;
        if revision == 0 {
            revision = response.header().map_or(0, |h| h.revision());
        }
        let more = response.more();
        let page = response.take_kvs();
        let Some(last) = page.last() else { break };
        // The next page starts just after the last key of this one.
        from = [last.key(), &[0]].concat();
        kvs.extend(page.into_iter().map(|kv| kv.into_key_value()));
        if !more {
            break;
        }
    }
    Ok((revision, kvs))
}

/// The end of the range of keys starting with `prefix` (etcd's `GetPrefixRangeEnd`).
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff: to the end of the keyspace.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::range_end;

    #[test]
    fn range_ends_after_the_prefix() {
        assert_eq!(range_end(b"/micro/registry/"), b"/micro/registry0".to_vec());
        assert_eq!(range_end(b"a\xff"), b"b".to_vec());
        assert_eq!(range_end(b"\xff"), vec![0]);
    }
}
