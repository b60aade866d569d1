//! Queues across processes: a consumer process killed mid-item does not
//! lose it, and items pass between separate processes exactly once.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use support::{Proc, etcd_example as example};
use testkit::EtcdCluster;

#[test]
fn a_consumer_process_killed_mid_item_does_not_lose_it() {
    let etcd = EtcdCluster::start(3).unwrap();
    let mut first = example(
        "etcd-work-queue",
        &etcd,
        &["--name", "wq-kill", "--ttl", "2"],
    );
    first.expect_line("ready", Duration::from_secs(10));
    first.send("push precious");
    first.expect_line("pushed", Duration::from_secs(10));
    first.send("take");
    let taken = first.expect_line("took", Duration::from_secs(10));
    first.signal(libc::SIGKILL); // dies mid-item: no ack, no revoke

    let mut second = example(
        "etcd-work-queue",
        &etcd,
        &["--name", "wq-kill", "--ttl", "2"],
    );
    second.expect_line("ready", Duration::from_secs(10));
    second.send("take");
    let again = second.expect_line("took", Duration::from_secs(15));
    let id = |line: &str| line.split_whitespace().nth(1).unwrap().to_string();
    assert_eq!(id(&again), id(&taken), "another item came back");
    assert!(again.contains("(delivery 2)"), "{again}");
    second.send("ack");
    second.expect_line("acked", Duration::from_secs(10));
}

#[test]
fn items_pass_between_processes_exactly_once() {
    let etcd = EtcdCluster::start(1).unwrap();
    let mut producers: Vec<Proc> = (0..2)
        .map(|_| {
            let mut p = example("etcd-queue", &etcd, &["--name", "q-procs"]);
            p.expect_line("ready", Duration::from_secs(10));
            p
        })
        .collect();
    let mut consumers: Vec<Proc> = (0..2)
        .map(|_| {
            let mut c = example("etcd-queue", &etcd, &["--name", "q-procs"]);
            c.expect_line("ready", Duration::from_secs(10));
            c
        })
        .collect();
    let mut sent = HashSet::new();
    for i in 0..20 {
        for (p, producer) in producers.iter_mut().enumerate() {
            let item = format!("p{p}-{i}");
            producer.send(&format!("push {item}"));
            producer.expect_line("pushed", Duration::from_secs(10));
            sent.insert(item);
        }
    }
    let mut received = Vec::new();
    for _ in 0..20 {
        for consumer in &mut consumers {
            consumer.send("pop");
            let line = consumer.expect_line("popped:", Duration::from_secs(10));
            received.push(line.trim_start_matches("popped: ").to_string());
        }
    }
    let unique: HashSet<String> = received.iter().cloned().collect();
    assert_eq!(unique.len(), received.len(), "an item was delivered twice");
    assert_eq!(unique, sent, "items were lost or invented");
}

/// The hardening issue's stall: consumer process A waits first in the
/// queue's idle line, B behind it; A is killed. Its place stays until its
/// lease ends (10 s), but B must take a new item within about the idle
/// line's look-anyway period (1 s), not when A's lease runs out.
#[test]
fn a_killed_first_consumer_process_does_not_hold_items_back() {
    let etcd = EtcdCluster::start(1).unwrap();
    let name = ["--name", "q-killed-first"];
    let mut first = example("etcd-queue", &etcd, &name);
    first.expect_line("ready", Duration::from_secs(10));
    first.send("pop");
    first.expect_line("waiting", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500)); // first in line, watching
    let mut second = example("etcd-queue", &etcd, &name);
    second.expect_line("ready", Duration::from_secs(10));
    second.send("pop");
    second.expect_line("waiting", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(500)); // behind the first
    first.signal(libc::SIGKILL);
    let mut producer = example("etcd-queue", &etcd, &name);
    producer.expect_line("ready", Duration::from_secs(10));
    producer.send("push hello");
    producer.expect_line("pushed", Duration::from_secs(10));
    let pushed = std::time::Instant::now();
    second.expect_line("popped: hello", Duration::from_secs(8));
    let waited = pushed.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "the item waited {waited:?}"
    );
}
