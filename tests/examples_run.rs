//! The examples run: every one listed in `examples/tour.txt` (the tour's
//! order) succeeds in its scripted mode against testkit's servers, and every
//! example file is listed there, so `cargo xtask tour` misses none.

mod support;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::{example_binary, root};
use testkit::{EtcdCluster, RedisServer};

/// `(example, args)` for each line of `examples/tour.txt`.
fn tour() -> Vec<(String, Vec<String>)> {
    std::fs::read_to_string(root().join("examples/tour.txt"))
        .unwrap()
        .lines()
        .map(|line| line.split('#').next().unwrap().trim())
        .filter(|line| !line.is_empty())
        .map(|line| {
            let mut words = line.split_whitespace().map(str::to_string);
            (words.next().unwrap(), words.collect())
        })
        .collect()
}

/// Runs `command`, killing it if it takes longer than `limit`.
fn run_bounded(command: &mut Command, limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    (child.wait_with_output().unwrap(), took)
}

#[test]
fn every_example_is_in_the_tour() {
    let listed: Vec<String> = tour().into_iter().map(|(name, _)| name).collect();
    let mut missing = Vec::new();
    for entry in std::fs::read_dir(root().join("examples"))
        .unwrap()
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            if !listed.contains(&name) {
                missing.push(name);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "examples missing from examples/tour.txt: {missing:?}"
    );
    let mut unique = listed.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        listed.len(),
        "an example is listed twice in the tour"
    );
}

#[test]
fn every_example_in_the_tour_succeeds_in_its_scripted_mode() {
    let etcd = EtcdCluster::start(1).unwrap();
    let redis = RedisServer::start().unwrap();
    for (name, args) in tour() {
        let (output, took) = run_bounded(
            Command::new(example_binary(&name))
                .args(&args)
                .env("ETCD_ENDPOINTS", etcd.endpoints_env())
                .env("REDIS_URL", redis.url())
                .env_remove("ETCD_USER")
                .env_remove("ETCD_PASSWORD"),
            Duration::from_secs(120),
        );
        assert!(
            output.status.success(),
            "example {name} {args:?} failed after {took:?} ({}):\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
    }
}

#[test]
fn hello_etcd_without_a_server_fails_fast_and_says_what_to_do() {
    let closed_port = testkit::free_port().unwrap();
    let (output, took) = run_bounded(
        Command::new(example_binary("hello-etcd"))
            .env("ETCD_ENDPOINTS", format!("127.0.0.1:{closed_port}")),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "it cannot succeed without a server"
    );
    assert!(
        took < Duration::from_secs(10),
        "took {took:?}: a dead endpoint must fail within a few seconds"
    );
    assert!(
        stderr.contains("cargo xtask services up"),
        "unclear error: {stderr}"
    );
    assert!(stderr.contains("ETCD_ENDPOINTS"), "unclear error: {stderr}");
}

#[test]
fn hello_etcd_with_wrong_credentials_says_so() {
    let etcd = EtcdCluster::builder()
        .root_password("right")
        .start()
        .unwrap();
    let (output, _) = run_bounded(
        Command::new(example_binary("hello-etcd"))
            .env("ETCD_ENDPOINTS", etcd.endpoints_env())
            .env("ETCD_USER", "root")
            .env("ETCD_PASSWORD", "wrong"),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("rejected the credentials of user `root`"),
        "unclear error: {stderr}"
    );

    let (output, _) = run_bounded(
        Command::new(example_binary("hello-etcd"))
            .env("ETCD_ENDPOINTS", etcd.endpoints_env())
            .env("ETCD_USER", "root")
            .env("ETCD_PASSWORD", "right"),
        Duration::from_secs(30),
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
