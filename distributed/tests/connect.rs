//! Connecting gives clear errors for the usual mistakes, against real servers.

use std::time::{Duration, Instant};

use distributed::etcd::{EtcdConfig, EtcdError};
use distributed::redis::{RedisConfig, RedisError};
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
    assert!(matches!(error, EtcdError::Unreachable { .. }), "{error}");
}
