//! The etcd test cluster behaves like a real cluster: it survives the loss of
//! its leader, a killed member rejoins, pause freezes a member, auth is
//! enforced, and dropping the handle leaves no process behind.

use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};
use testkit::{EtcdCluster, etcd_is_healthy};

/// Retries `op` until it succeeds or `limit` passes: right after a leader dies
/// a request can fail once before the client and the cluster settle.
async fn retry<T, F, Fut>(limit: Duration, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, etcd_client::Error>>,
{
    let deadline = Instant::now() + limit;
    loop {
        match op().await {
            Ok(value) => return value,
            Err(error) if Instant::now() < deadline => {
                eprintln!("retrying after: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("still failing after {limit:?}: {error}"),
        }
    }
}

async fn client(endpoints: Vec<String>) -> Client {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(2));
    Client::connect(endpoints, Some(options)).await.unwrap()
}

async fn read(client: &mut Client, key: &str) -> Option<String> {
    let response = retry(Duration::from_secs(10), || {
        let mut client = client.clone();
        let key = key.to_string();
        async move { client.get(key, None).await }
    })
    .await;
    response
        .kvs()
        .first()
        .map(|kv| kv.value_str().unwrap().to_string())
}

async fn write(client: &mut Client, key: &str, value: &str) {
    retry(Duration::from_secs(10), || {
        let mut client = client.clone();
        let (key, value) = (key.to_string(), value.to_string());
        async move { client.put(key, value, None).await }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_keep_serving_after_the_leader_is_killed_and_it_rejoins() {
    let cluster = EtcdCluster::start(3).unwrap();
    let mut all = client(cluster.endpoints()).await;
    write(&mut all, "k", "before").await;

    let old_leader = cluster.leader().unwrap();
    cluster.kill(old_leader).unwrap();
    let new_leader = cluster.leader().unwrap();
    assert_ne!(new_leader, old_leader, "a dead member cannot lead");

    // Writes and reads go on with two of three members.
    let survivors: Vec<String> = (0..cluster.len())
        .filter(|&i| i != old_leader)
        .map(|i| cluster.endpoints()[i].clone())
        .collect();
    let mut survivors = client(survivors).await;
    write(&mut survivors, "k", "during").await;
    assert_eq!(read(&mut survivors, "k").await.as_deref(), Some("during"));

    // The killed member comes back with its data and catches up: a
    // linearizable read through it alone sees the write it missed.
    cluster.restart(old_leader).unwrap();
    let mut rejoined = client(vec![cluster.endpoints()[old_leader].clone()]).await;
    assert_eq!(read(&mut rejoined, "k").await.as_deref(), Some("during"));
    write(&mut rejoined, "k", "after").await;
    assert_eq!(read(&mut all, "k").await.as_deref(), Some("after"));
}

#[tokio::test]
async fn a_paused_member_stops_answering_until_resumed() {
    let cluster = EtcdCluster::start(1).unwrap();
    let addr = cluster.client_addrs()[0];
    assert!(etcd_is_healthy(addr));
    cluster.pause(0).unwrap();
    assert!(!etcd_is_healthy(addr), "a stopped process must not answer");
    cluster.resume(0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !etcd_is_healthy(addr) {
        assert!(
            Instant::now() < deadline,
            "member did not come back after SIGCONT"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn auth_rejects_a_wrong_password_and_anonymous_writes() {
    let cluster = EtcdCluster::builder()
        .root_password("right-horse")
        .start()
        .unwrap();
    let (user, password) = cluster.credentials().unwrap();
    let endpoints = cluster.endpoints();

    let wrong = ConnectOptions::new()
        .with_user(user, "wrong-horse")
        .with_connect_timeout(Duration::from_secs(2));
    let error = match Client::connect(&endpoints, Some(wrong)).await {
        Ok(_) => panic!("a wrong password must be rejected"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("authentication failed"),
        "unclear error: {error}"
    );

    let mut anonymous = client(endpoints.clone()).await;
    let error = anonymous.put("k", "v", None).await.unwrap_err().to_string();
    assert!(
        error.contains("user name is empty") || error.contains("permission denied"),
        "{error}"
    );

    let right = ConnectOptions::new().with_user(user, password);
    let mut root = Client::connect(&endpoints, Some(right)).await.unwrap();
    root.put("k", "v", None).await.unwrap();
}

#[tokio::test]
async fn an_invalid_member_count_or_index_is_an_error_not_a_panic() {
    assert!(matches!(
        EtcdCluster::start(2),
        Err(testkit::TestkitError::BadMemberCount(2))
    ));
    let cluster = EtcdCluster::start(1).unwrap();
    assert!(matches!(
        cluster.kill(5),
        Err(testkit::TestkitError::NoSuchMember { index: 5, .. })
    ));
}

#[test]
fn dropping_the_cluster_kills_every_member() {
    let cluster = EtcdCluster::start(3).unwrap();
    let pids: Vec<u32> = (0..3).map(|i| cluster.pid(i).unwrap().unwrap()).collect();
    for pid in &pids {
        assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
    drop(cluster);
    for pid in &pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "etcd {pid} outlived its handle"
        );
    }
}

/// Set in the child process of the next test: it starts the shared servers,
/// prints their pids and returns, as a test binary does when its tests end.
const SHARED_ROLE: &str = "TESTKIT_SHARED_SERVERS_CHILD";

#[test]
fn shared_servers_and_their_directories_end_with_their_process() {
    if std::env::var_os(SHARED_ROLE).is_some() {
        let etcd = testkit::shared_etcd().unwrap();
        let redis = testkit::shared_redis().unwrap();
        println!(
            "pids {} {}",
            etcd.pid(0).unwrap().unwrap(),
            redis.pid().unwrap()
        );
        return;
    }
    // A run name of our own, so only the child's directories carry it.
    let run = format!("shared-exit-{}", std::process::id());
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "shared_servers_and_their_directories_end_with_their_process",
            "--nocapture",
        ])
        .env(SHARED_ROLE, "1")
        .env(testkit::RUN_VAR, &run)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "child failed: {stdout}");
    let pids: Vec<u32> = stdout
        .lines()
        .find_map(|line| line.strip_prefix("pids "))
        .expect("the child printed its servers' pids")
        .split(' ')
        .map(|pid| pid.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "shared server {pid} outlived its process"
        );
    }
    let prefix = format!("{}{run}-", testkit::TEMP_PREFIX);
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .map(|entry| entry.path())
        .collect();
    assert!(left.is_empty(), "directories left behind: {left:?}");
}
