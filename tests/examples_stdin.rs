//! The two-terminal examples' stdin modes, driven the way a reader types
//! into them: the priority queue hands out the lowest number first, a
//! barrier holds a second process until the first releases it, a double
//! barrier lets two processes in and out together; a command missing its
//! argument gets its usage, and `exit` ends a session as `quit` does.

mod support;

use std::time::Duration;

use support::{Proc, etcd_example};
use testkit::EtcdCluster;

const LIMIT: Duration = Duration::from_secs(15);

/// The example, started and ready for commands.
fn example(name: &str, etcd: &EtcdCluster, args: &[&str]) -> Proc {
    let mut proc = etcd_example(name, etcd, args);
    proc.expect_line("ready", LIMIT);
    proc
}

#[test]
fn the_priority_queue_gives_the_lowest_number_first_and_shows_usage() {
    let etcd = EtcdCluster::start(1).unwrap();
    let mut terminal = example("etcd-priority-queue", &etcd, &["--name", "pq-stdin"]);
    terminal.send("push");
    terminal.expect_line("usage: push <value> <priority>", LIMIT);
    terminal.send("push backup 5");
    terminal.expect_line("pushed", LIMIT);
    terminal.send("push page the on-call 1");
    terminal.expect_line("pushed", LIMIT);
    terminal.send("pop");
    terminal.expect_line("popped: page the on-call", LIMIT);
    terminal.send("pop");
    terminal.expect_line("popped: backup", LIMIT);
    terminal.send("dance");
    terminal.expect_line("unknown command \"dance\"", LIMIT);
    terminal.send("exit");
    assert!(
        terminal.wait_exit(LIMIT).is_some_and(|s| s.success()),
        "`exit` did not end the session"
    );
}

#[test]
fn a_barrier_holds_another_process_until_released() {
    let etcd = EtcdCluster::start(1).unwrap();
    let mut holder = example("etcd-barrier", &etcd, &["--name", "b-stdin"]);
    let mut waiter = example("etcd-barrier", &etcd, &["--name", "b-stdin"]);
    holder.send("hold");
    holder.expect_line("holding the barrier", LIMIT);
    waiter.send("wait");
    waiter.expect_line("waiting", LIMIT);
    assert!(
        !waiter.sees_line_within("passing", Duration::from_millis(500)),
        "the waiter passed a held barrier"
    );
    holder.send("release");
    holder.expect_line("released", LIMIT);
    waiter.expect_line("the barrier is down: passing", LIMIT);
    for mut terminal in [holder, waiter] {
        terminal.send("quit");
        assert!(terminal.wait_exit(LIMIT).is_some_and(|s| s.success()));
    }
}

#[test]
fn a_double_barrier_lets_two_processes_in_and_out_together() {
    let etcd = EtcdCluster::start(1).unwrap();
    let args = ["--name", "db-stdin", "--count", "2"];
    let mut first = example("etcd-double-barrier", &etcd, &args);
    let mut second = example("etcd-double-barrier", &etcd, &args);
    first.send("enter");
    first.expect_line("waiting for everyone to enter", LIMIT);
    assert!(
        !first.sees_line_within("all entered", Duration::from_millis(500)),
        "one of two entered alone"
    );
    second.send("enter");
    first.expect_line("all entered", LIMIT);
    second.expect_line("all entered", LIMIT);
    first.send("leave");
    first.expect_line("waiting for everyone to leave", LIMIT);
    assert!(
        !first.sees_line_within("all left", Duration::from_millis(500)),
        "one of two left alone"
    );
    second.send("leave");
    first.expect_line("all left", LIMIT);
    second.expect_line("all left", LIMIT);
}
