//! The Redis test servers: independent, password-protected on request,
//! restartable, and gone when dropped.

use testkit::{RedisServer, redis_answers};

async fn ping(url: &str) -> redis::RedisResult<String> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    redis::cmd("PING").query_async(&mut connection).await
}

#[tokio::test]
async fn a_password_is_required_when_set() {
    let server = RedisServer::builder().password("pw-123").start().unwrap();
    let error = ping(&server.url_without_password()).await.unwrap_err();
    assert_eq!(error.code(), Some("NOAUTH"), "unclear error: {error}");
    assert_eq!(ping(&server.url()).await.unwrap(), "PONG");
}

#[tokio::test]
async fn start_many_gives_independent_servers() {
    let servers = RedisServer::start_many(3).unwrap();
    let mut ports: Vec<u16> = servers.iter().map(|s| s.addr().port()).collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports.len(), 3);

    // A key written to one is not on another: they are not replicas.
    let mut first = redis::Client::open(servers[0].url()).unwrap();
    let mut second = redis::Client::open(servers[1].url()).unwrap();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut first)
        .unwrap();
    let other: Option<String> = redis::cmd("GET").arg("k").query(&mut second).unwrap();
    assert_eq!(other, None);
}

#[tokio::test]
async fn kill_and_restart_on_the_same_port() {
    let server = RedisServer::start().unwrap();
    let mut client = redis::Client::open(server.url()).unwrap();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .query(&mut client)
        .unwrap();

    server.kill().unwrap();
    assert!(!redis_answers(server.addr()));
    server.restart().unwrap();
    assert!(redis_answers(server.addr()));
    // No persistence: the restarted server is empty.
    let value: Option<String> = redis::cmd("GET").arg("k").query(&mut client).unwrap();
    assert_eq!(value, None);
}

#[test]
fn dropping_the_server_kills_it() {
    let server = RedisServer::start().unwrap();
    let pid = server.pid().unwrap();
    drop(server);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}
