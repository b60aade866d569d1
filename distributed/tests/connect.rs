//! Connecting gives clear errors for the usual mistakes, against real servers.

use std::time::{Duration, Instant};

use cpr_distributed::etcd::{EtcdConfig, EtcdError};
use cpr_distributed::redis::{RedisConfig, RedisError};
use testkit::{EtcdCluster, RedisServer};

#[tokio::test]
async fn redis_without_the_password_says_to_put_it_in_the_url() {
    let server = RedisServer::builder().password("pw").start().unwrap();
    let error = RedisConfig::new(server.url_without_password())
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(error, RedisError::AuthenticationFailed { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("REDIS_URL"), "{error}");

    let wrong = format!("redis://:wrong@{}/", server.addr());
    let error = RedisConfig::new(wrong).connect().await.unwrap_err();
    assert!(
        matches!(error, RedisError::AuthenticationFailed { .. }),
        "{error}"
    );
    assert!(
        !error.to_string().contains("wrong"),
        "the password must not be printed: {error}"
    );

    RedisConfig::new(server.url()).connect().await.unwrap();
}

#[tokio::test]
async fn redis_that_is_not_there_fails_in_bounded_time() {
    let port = testkit::free_port().unwrap();
    let started = Instant::now();
    let error = RedisConfig::new(format!("redis://127.0.0.1:{port}/"))
        .connect_timeout(Duration::from_secs(2))
        .connect()
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(error, RedisError::Unreachable { .. }), "{error}");
    assert!(
        error.to_string().contains("cargo xtask services up"),
        "{error}"
    );
}

#[tokio::test]
async fn etcd_with_a_wrong_password_is_an_authentication_error() {
    let cluster = EtcdCluster::builder()
        .root_password("right")
        .start()
        .unwrap();
    let error = EtcdConfig::new(cluster.endpoints())
        .credentials("root", "wrong")
        .connect()
        .await
        .err()
        .unwrap();
    assert!(
        matches!(error, EtcdError::AuthenticationFailed { ref user } if user == "root"),
        "{error}"
    );
    EtcdConfig::new(cluster.endpoints())
        .credentials("root", "right")
        .connect()
        .await
        .unwrap();
}

#[tokio::test]
async fn etcd_that_is_not_there_fails_in_bounded_time() {
    let port = testkit::free_port().unwrap();
    let started = Instant::now();
    let error = EtcdConfig::new([format!("127.0.0.1:{port}")])
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .err()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(error, EtcdError::Refused { .. }), "{error}");

    // A port that accepts and never answers: that one is a timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let error = EtcdConfig::new([silent.local_addr().unwrap().to_string()])
        .connect_timeout(Duration::from_secs(1))
        .connect()
        .await
        .err()
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert!(matches!(error, EtcdError::Unreachable { .. }), "{error}");
}

/// Sequential puts straight through etcd-client (none of the recipes'
/// retries): how many failed.
async fn failed_puts(client: &mut etcd_client::Client, count: usize) -> usize {
    let mut failed = 0;
    for i in 0..count {
        if client
            .put("connect-test/failover", i.to_string(), None)
            .await
            .is_err()
        {
            failed += 1;
        }
    }
    failed
}

#[tokio::test]
async fn etcd_with_a_dead_endpoint_in_the_list_sends_nothing_more_to_it() {
    let etcd = testkit::shared_etcd().unwrap();
    let live = etcd.endpoints()[0].clone();
    let dead = format!("127.0.0.1:{}", testkit::free_port().unwrap());
    // The first endpoint is chosen at random: a few clients start on each.
    for _ in 0..4 {
        let mut client = EtcdConfig::new([dead.clone(), live.clone()])
            .connect()
            .await
            .unwrap();
        // Connecting found the dead one if it started there; after that,
        // every request goes to the live one (a balancer over both would
        // fail about half of them).
        assert_eq!(failed_puts(&mut client, 20).await, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_member_dies_or_hangs_moves_to_another() {
    let cluster = EtcdCluster::start(3).unwrap();
    let leader = cluster.leader().unwrap();
    // Only the followers are listed, so that a kill or a pause never costs
    // the cluster its leader, and each of the two faults below, applied to
    // both followers in turn, hits the one the client uses.
    let followers: Vec<usize> = (0..3).filter(|&member| member != leader).collect();
    let endpoints: Vec<String> = followers
        .iter()
        .map(|&member| cluster.endpoints()[member].clone())
        .collect();
    let mut client = EtcdConfig::new(endpoints)
        .request_timeout(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let mut failed = Vec::new();
    for &member in &followers {
        cluster.kill(member).unwrap();
        failed.push(failed_puts(&mut client, 20).await);
        cluster.restart(member).unwrap();
    }
    for &member in &followers {
        cluster.pause(member).unwrap();
        // A paused member answers nothing: the request times out.
        failed.push(failed_puts(&mut client, 20).await);
        cluster.resume(member).unwrap();
    }
    // A fault costs the request that found it (and perhaps one more, on a
    // connection broken by an earlier fault) — not a share of all of them.
    assert!(
        failed.iter().all(|&count| count <= 2),
        "failed puts per fault, of 20 each: {failed:?}"
    );
    assert!(
        failed.iter().sum::<usize>() >= 2,
        "the faults never reached the client: {failed:?}"
    );
}

/// Errors say what happened: a malformed endpoint is a configuration error
/// before any I/O; a port where nothing listens says so, without claiming
/// to have waited; a port where another kind of server listens (Redis
/// here) is named as not etcd.
#[tokio::test]
async fn connect_errors_say_what_happened() {
    use cpr_distributed::etcd::EtcdError;
    let connect = |endpoint: String| async move {
        match EtcdConfig::new(vec![endpoint]).connect().await {
            Ok(_) => panic!("connected"),
            Err(error) => error,
        }
    };
    for malformed in [
        "localhost:notaport",
        "localhost",
        "127.0.0.1:0",
        ":2379",
        "127.0.0.1:99999",
    ] {
        let error = connect(malformed.to_string()).await;
        assert!(
            matches!(error, EtcdError::InvalidConfig(_)),
            "{malformed}: {error}"
        );
    }
    let nothing_there = format!("127.0.0.1:{}", testkit::free_port().unwrap());
    let error = connect(nothing_there).await;
    assert!(matches!(error, EtcdError::Refused { .. }), "{error}");
    assert!(error.to_string().contains("refused"), "{error}");
    assert!(
        !error.to_string().contains("within"),
        "claims a wait: {error}"
    );
    let redis = testkit::shared_redis().unwrap();
    let error = connect(redis.addr().to_string()).await;
    assert!(matches!(error, EtcdError::NotEtcd { .. }), "{error}");
}

#[tokio::test]
async fn the_operation_bound_is_set_in_the_config_and_checked() {
    use cpr_distributed::etcd::{
        Client, EtcdError, MAX_OPERATION_BOUND, OPERATION_BOUND,
    };
    let etcd = testkit::shared_etcd().unwrap();
    let config = EtcdConfig::new(etcd.endpoints());
    let client: Client = config.connect().await.unwrap();
    assert_eq!(client.operation_bound(), OPERATION_BOUND);
    let short = config
        .clone()
        .operation_bound(Duration::from_secs(2))
        .connect()
        .await
        .unwrap();
    assert_eq!(short.operation_bound(), Duration::from_secs(2));
    for bad in [
        Duration::ZERO,
        MAX_OPERATION_BOUND + Duration::from_nanos(1),
        Duration::MAX,
    ] {
        let error = config
            .clone()
            .operation_bound(bad)
            .connect()
            .await
            .unwrap_err();
        assert!(
            matches!(error, EtcdError::InvalidConfig(_)),
            "{bad:?}: {error}"
        );
        let error = client.clone().with_operation_bound(bad).unwrap_err();
        assert!(
            matches!(error, EtcdError::InvalidConfig(_)),
            "{bad:?}: {error}"
        );
    }
}
