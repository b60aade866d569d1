//! STM corners against a real etcd: blind writes, deletes of keys read,
//! what each isolation level allows, `rev`, `del`, and writes on a lease.

use std::time::Duration;

use cpr_distributed::etcd::{
    Client, EtcdConfig, EtcdError, Isolation, Session, StmOptions, run_stm,
};
use tokio::sync::oneshot;

const LEVELS: [Isolation; 4] = [
    Isolation::ReadCommitted,
    Isolation::RepeatableReads,
    Isolation::Serializable,
    Isolation::SerializableSnapshot,
];

async fn client() -> Client {
    let etcd = testkit::shared_etcd().unwrap();
    EtcdConfig::new(etcd.endpoints()).connect().await.unwrap()
}

async fn value(client: &Client, key: &str) -> Option<String> {
    let response = client.clone().get(key, None).await.unwrap();
    response
        .kvs()
        .first()
        .map(|kv| kv.value_str().unwrap().to_string())
}

/// A transaction that writes without reading has nothing to conflict with:
/// it commits in one attempt at every level, also over an existing key.
#[tokio::test]
async fn a_blind_write_commits_in_one_attempt_at_every_level() {
    let mut etcd = client().await;
    for level in LEVELS {
        let key = format!("stm-blind/{level:?}");
        etcd.put(key.as_str(), "old", None).await.unwrap();
        let options = StmOptions::default().isolation(level).max_attempts(3);
        let outcome = run_stm(&etcd, options, |stm| {
            let key = key.clone();
            async move {
                stm.put(&key, "new");
                Ok::<_, EtcdError>(())
            }
        })
        .await
        .unwrap_or_else(|error| panic!("{level:?}: {error}"));
        assert_eq!(outcome.attempts, 1, "{level:?}");
        assert_eq!(
            value(&etcd, &key).await.as_deref(),
            Some("new"),
            "{level:?}"
        );
    }
}

/// The defining anomaly: a lost update. Two transactions read a counter;
/// the second commits an increment while the first is still running. Read
/// committed lets the first overwrite it (the counter ends at 1); every
/// other level makes the first run again (it ends at 2).
#[tokio::test]
async fn read_committed_loses_an_update_the_other_levels_refuse() {
    let etcd = client().await;
    for level in LEVELS {
        let key = format!("stm-lost-update/{level:?}");
        etcd.clone().put(key.as_str(), "0", None).await.unwrap();
        let (read_done, other_may_commit) = oneshot::channel::<()>();
        let (other_committed, may_go_on) = oneshot::channel::<()>();
        let other = {
            let (etcd, key) = (etcd.clone(), key.clone());
            tokio::spawn(async move {
                other_may_commit.await.unwrap();
                let mut etcd = etcd;
                let n: u64 = value(&etcd, &key).await.unwrap().parse().unwrap();
                etcd.put(key.as_str(), (n + 1).to_string(), None)
                    .await
                    .unwrap();
                other_committed.send(()).unwrap();
            })
        };
        let signals = std::sync::Mutex::new(Some((read_done, may_go_on)));
        let options = StmOptions::default().isolation(level);
        let outcome = run_stm(&etcd, options, |stm| {
            let key = key.clone();
            let first = signals.lock().unwrap().take();
            async move {
                let n: u64 = stm.get_string(&key).await?.unwrap().parse().unwrap();
                if let Some((read_done, may_go_on)) = first {
                    // First attempt: let the other transaction commit now.
                    read_done.send(()).unwrap();
                    may_go_on.await.unwrap();
                }
                stm.put(&key, (n + 1).to_string());
                Ok::<_, EtcdError>(())
            }
        })
        .await
        .unwrap();
        other.await.unwrap();
        let end = value(&etcd, &key).await.unwrap();
        if level == Isolation::ReadCommitted {
            assert_eq!((end.as_str(), outcome.attempts), ("1", 1), "{level:?}");
        } else {
            assert_eq!((end.as_str(), outcome.attempts), ("2", 2), "{level:?}");
        }
    }
}

/// Within one attempt a key is read once, at every level (read committed
/// included, as in Go): a write by someone else between two reads of the
/// same key is not seen by the second.
#[tokio::test]
async fn a_key_reads_the_same_within_an_attempt_at_every_level() {
    let etcd = client().await;
    for level in LEVELS {
        let key = format!("stm-reread/{level:?}");
        etcd.clone()
            .put(key.as_str(), "before", None)
            .await
            .unwrap();
        let seen = std::sync::Mutex::new(Vec::new());
        let options = StmOptions::default().isolation(level).max_attempts(1);
        let committed = run_stm(&etcd, options, |stm| {
            let (key, mut etcd, seen) = (key.clone(), etcd.clone(), &seen);
            async move {
                let first = stm.get_string(&key).await?;
                etcd.put(key.as_str(), "after", None).await?;
                let second = stm.get_string(&key).await?;
                seen.lock().unwrap().push((first, second));
                Ok::<_, EtcdError>(())
            }
        })
        .await
        .is_ok();
        let before = Some("before".to_string());
        assert_eq!(
            seen.into_inner().unwrap(),
            [(before.clone(), before)],
            "{level:?}"
        );
        // Only read committed commits over the change to a key it read.
        assert_eq!(committed, level == Isolation::ReadCommitted, "{level:?}");
    }
}

/// `rev` is the mod revision of the key as this transaction read it, and 0
/// for a key that does not exist.
#[tokio::test]
async fn rev_is_the_revision_read_and_zero_for_a_missing_key() {
    let mut etcd = client().await;
    let written = etcd.put("stm-rev/present", "x", None).await.unwrap();
    let revision = written.header().unwrap().revision();
    let outcome = run_stm(&etcd, StmOptions::default(), |stm| async move {
        let present = stm.rev("stm-rev/present").await?;
        let missing = stm.rev("stm-rev/missing").await?;
        Ok::<_, EtcdError>((present, missing))
    })
    .await
    .unwrap();
    assert_eq!(outcome.value, (revision, 0));
}

/// A committed `del` removes the key; in the transaction it reads as gone.
#[tokio::test]
async fn a_committed_del_removes_the_key() {
    let mut etcd = client().await;
    etcd.put("stm-del/k", "x", None).await.unwrap();
    let outcome = run_stm(&etcd, StmOptions::default(), |stm| async move {
        let before = stm.get("stm-del/k").await?;
        stm.del("stm-del/k");
        let after = stm.get("stm-del/k").await?;
        Ok::<_, EtcdError>((before.is_some(), after.is_some()))
    })
    .await
    .unwrap();
    assert_eq!(outcome.value, (true, false));
    assert_eq!(value(&etcd, "stm-del/k").await, None);
}

/// A write on a lease goes with the lease.
#[tokio::test]
async fn a_put_with_a_lease_goes_when_the_lease_ends() {
    let etcd = client().await;
    let session = Session::new(etcd.clone(), Duration::from_secs(10))
        .await
        .unwrap();
    let lease = session.lease_id();
    run_stm(&etcd, StmOptions::default(), |stm| async move {
        stm.put_with_lease("stm-lease/k", "mine", lease);
        Ok::<_, EtcdError>(())
    })
    .await
    .unwrap();
    let response = etcd.clone().get("stm-lease/k", None).await.unwrap();
    assert_eq!(response.kvs()[0].lease(), lease);
    session.close().await.unwrap();
    assert_eq!(value(&etcd, "stm-lease/k").await, None);
}
