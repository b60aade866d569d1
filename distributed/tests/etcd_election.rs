//! Election against a real etcd: one leader at a time, observe reports every
//! change including "no leader", proclaim only while leading, and `lead`
//! stops the work when leadership is lost.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::time::Duration;

use cpr_distributed::etcd::{
    Client, Election, EtcdConfig, EtcdError, LeaderChanges, Session,
};
use futures::StreamExt;

async fn client() -> Client {
    let etcd = testkit::shared_etcd().unwrap();
    EtcdConfig::new(etcd.endpoints()).connect().await.unwrap()
}

async fn session() -> Session {
    Session::new(client().await, Duration::from_secs(10))
        .await
        .unwrap()
}

async fn next_value(changes: &mut LeaderChanges) -> Option<String> {
    let change = tokio::time::timeout(Duration::from_secs(5), changes.next())
        .await
        .expect("no change seen");
    change
        .expect("the observer ended")
        .expect("observe failed")
        .map(|leader| leader.value)
}

#[tokio::test]
async fn campaign_waits_for_the_leader_and_observe_sees_every_change() {
    let name = "election-handover";
    let (a, b) = (session().await, session().await);
    let (alice, bob) = (
        Election::new(&a, name).unwrap(),
        Election::new(&b, name).unwrap(),
    );
    let mut changes = alice.observe();
    assert_eq!(
        next_value(&mut changes).await,
        None,
        "an empty election has no leader"
    );

    let alice_leads = alice.campaign("alice").await.unwrap();
    assert_eq!(next_value(&mut changes).await.as_deref(), Some("alice"));
    let bob_campaign = tokio::spawn(async move { bob.campaign("bob").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!bob_campaign.is_finished(), "two leaders");

    alice_leads.proclaim("alice-2").await.unwrap();
    assert_eq!(next_value(&mut changes).await.as_deref(), Some("alice-2"));
    assert_eq!(alice.leader().await.unwrap().unwrap().value, "alice-2");

    alice_leads.resign().await.unwrap();
    let bob_leads = tokio::time::timeout(Duration::from_secs(5), bob_campaign)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next_value(&mut changes).await.as_deref(), Some("bob"));
    assert!(bob_leads.fencing_token() > 0);
    bob_leads.resign().await.unwrap();
    assert_eq!(
        next_value(&mut changes).await,
        None,
        "observe must report that nobody leads"
    );
    assert_eq!(alice.leader().await.unwrap(), None);
}

#[tokio::test]
async fn proclaim_after_losing_leadership_fails() {
    let name = "election-proclaim";
    let a = session().await;
    let election = Election::new(&a, name).unwrap();
    let leads = election.campaign("one").await.unwrap();
    // Someone deletes our key (an operator, or an expired lease).
    client()
        .await
        .delete(election.leader().await.unwrap().unwrap().key, None)
        .await
        .unwrap();
    let error = leads.proclaim("two").await.unwrap_err();
    assert!(matches!(error, EtcdError::NotLeader { .. }), "{error}");
    let lost = tokio::time::timeout(Duration::from_secs(5), leads.lost())
        .await
        .unwrap();
    assert!(matches!(lost, EtcdError::NotLeader { .. }));
}

#[tokio::test]
async fn campaigning_again_on_the_same_session_resumes_with_the_new_value() {
    let name = "election-resume";
    let a = session().await;
    let election = Election::new(&a, name).unwrap();
    let first = election.campaign("v1").await.unwrap();
    let again = election.campaign("v2").await.unwrap();
    assert_eq!(
        first.fencing_token(),
        again.fencing_token(),
        "same place in line"
    );
    assert_eq!(election.leader().await.unwrap().unwrap().value, "v2");
    again.resign().await.unwrap();
}

#[tokio::test]
async fn lead_runs_the_work_only_while_leader() {
    let name = "election-lead";
    // Work that finishes: its output comes back and leadership is resigned.
    let a = session().await;
    let election = Election::new(&a, name).unwrap();
    let out = election.lead("worker-a", async |_token| 42).await.unwrap();
    assert_eq!(out, 42);
    assert_eq!(
        election.leader().await.unwrap(),
        None,
        "lead must resign when the work is done"
    );

    // Work that would run forever: losing the session stops it promptly.
    let b = session().await;
    let election = Election::new(&b, name).unwrap();
    let stopped = Arc::new(AtomicBool::new(false));
    let work = {
        let stopped = Arc::clone(&stopped);
        async move |_token: tokio_util::sync::CancellationToken| {
            let _on_stop = SetOnDrop(stopped);
            std::future::pending::<()>().await;
        }
    };
    let leading = tokio::spawn(async move { election.lead("worker-b", work).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    client().await.lease_revoke(b.lease_id()).await.unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(5), leading)
        .await
        .expect("work not stopped")
        .unwrap();
    assert!(
        matches!(
            outcome,
            Err(EtcdError::SessionLost { .. }) | Err(EtcdError::NotLeader { .. })
        ),
        "{outcome:?}"
    );
    assert!(
        stopped.load(SeqCst),
        "the leader's work outlived its leadership"
    );
}

/// Sets the flag when the work future is dropped.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, SeqCst);
    }
}

#[tokio::test]
async fn bad_names_are_rejected() {
    let a = session().await;
    assert!(matches!(
        Election::new(&a, ""),
        Err(EtcdError::InvalidName { .. })
    ));
}

/// A leader proclaiming values back to back: an observer sees every one,
/// in order (re-reading the leader per event would skip some).
#[tokio::test]
async fn observe_delivers_every_proclaimed_value_in_order() {
    let session = session().await;
    let election = Election::new(&session, "election-every-value").unwrap();
    let leading = election.campaign("v0").await.unwrap();
    let mut changes = election.observe();
    assert_eq!(next_value(&mut changes).await.as_deref(), Some("v0"));
    for i in 1..=100 {
        leading.proclaim(format!("v{i}")).await.unwrap();
    }
    for i in 1..=100 {
        assert_eq!(next_value(&mut changes).await, Some(format!("v{i}")));
    }
}

/// Election `e` and election `e/sub` are different elections: neither sees
/// the other's candidates, nor a foreign key that is not UTF-8.
#[tokio::test]
async fn a_nested_election_and_a_foreign_key_are_not_candidates() {
    let mut etcd = client().await;
    etcd.put(&b"election-nest/\xff\xfe"[..], "x", None)
        .await
        .unwrap();
    let (outer_session, inner_session) = (session().await, session().await);
    let inner = Election::new(&inner_session, "election-nest/sub").unwrap();
    let _inner_leads = inner.campaign("inner").await.unwrap();
    let outer = Election::new(&outer_session, "election-nest").unwrap();
    assert_eq!(
        outer.leader().await.unwrap(),
        None,
        "saw a nested candidate"
    );
    let mut changes = outer.observe();
    assert_eq!(next_value(&mut changes).await, None);
    let _outer_leads = outer.campaign("outer").await.unwrap();
    assert_eq!(next_value(&mut changes).await.as_deref(), Some("outer"));
    assert_eq!(outer.leader().await.unwrap().unwrap().value, "outer");
    assert_eq!(inner.leader().await.unwrap().unwrap().value, "inner");
}

/// A campaign cut at any point of its run leaves no candidate behind: a key
/// left by a dropped call would be a leader nobody acts for, and every
/// other candidate would wait behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_cut_at_any_point_leaves_no_candidate_behind() {
    let name = "election-cut-anywhere";
    let (cut, other) = (session().await, session().await);
    let election = Election::new(&cut, name).unwrap();
    let contender = Election::new(&other, name).unwrap();
    for polls in 0..40 {
        if let Some(leading) = support::cut_after(election.campaign("cut"), polls).await
        {
            leading.unwrap().resign().await.unwrap();
        }
        let leading =
            tokio::time::timeout(Duration::from_secs(5), contender.campaign("next"))
                .await
                .unwrap_or_else(|_| {
                    panic!("a campaign cut after {polls} polls left a candidate")
                })
                .unwrap();
        leading.resign().await.unwrap();
    }
}
