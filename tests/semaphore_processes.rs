//! The semaphores across processes, with a server fault mid-run: four
//! example processes (`etcd-semaphore`, `redis-semaphore`) each take and
//! give back a permit of three, twelve times, driven through their stdin,
//! while the etcd leader is killed or the Redis server restarted.
//!
//! The test keeps one clock for all of them: a hold starts when a process
//! says "acquired" and ends before the test tells it to release, so each
//! recorded hold lies inside the real one, and at no instant may more than
//! three recorded holds overlap, among the holds whose release the server
//! confirmed. A hold whose release was refused had lost its permit (a Redis
//! restart without persistence forgets every permit): the process was told
//! so, which is the most a single server can do.

mod support;

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{Proc, etcd_example, example_binary};
use testkit::history::{self, Call, LockOp};
use testkit::{EtcdCluster, RedisServer};

const PROCESSES: usize = 4;
const ROUNDS: usize = 12;
const PERMITS: usize = 3;

/// One hold of a permit, as the test saw it.
#[derive(Debug, Clone)]
struct Hold {
    process: usize,
    /// When the acquire was asked for.
    asked: Instant,
    entered: Instant,
    left: Instant,
    /// When the release was answered.
    answered: Instant,
    fencing_token: u64,
    /// The server confirmed the release: the permit was held throughout.
    confirmed: bool,
}

/// Drives one example process through `ROUNDS` holds, retrying an acquire
/// that failed while the server was away.
fn drive(process: usize, mut proc: Proc, holds: Arc<Mutex<Vec<Hold>>>) {
    proc.expect_line("ready", Duration::from_secs(20));
    let mut done = 0;
    let give_up = Instant::now() + Duration::from_secs(120);
    while done < ROUNDS {
        assert!(Instant::now() < give_up, "process {process} is stuck");
        let asked = Instant::now();
        proc.send("acquire");
        let line = proc.expect_line("acquire", Duration::from_secs(60));
        if !line.starts_with("acquired") {
            // "acquire failed: ..." while the server restarts: try again.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let entered = Instant::now();
        let fencing_token = line
            .rsplit("fencing token ")
            .next()
            .and_then(|t| t.trim_end_matches(')').parse().ok())
            .unwrap_or_else(|| panic!("no fencing token in {line:?}"));
        std::thread::sleep(Duration::from_millis(rand::random_range(5..30)));
        let left = Instant::now();
        proc.send("release");
        let answer = proc.expect_line("release", Duration::from_secs(60));
        let answered = Instant::now();
        holds.lock().unwrap().push(Hold {
            process,
            asked,
            answered,
            entered,
            left,
            fencing_token,
            confirmed: answer == "released",
        });
        done += 1;
    }
    proc.send("quit");
}

/// The most confirmed holds that overlap at one instant.
fn most_at_once(holds: &[Hold]) -> usize {
    let mut events: Vec<(Instant, i32)> = holds
        .iter()
        .filter(|h| h.confirmed)
        .flat_map(|h| [(h.entered, 1), (h.left, -1)])
        .collect();
    // At one instant, a hold that ends is counted out before one that starts.
    events.sort_by_key(|&(at, change)| (at, change));
    let (mut now, mut most) = (0i32, 0i32);
    for (_, change) in events {
        now += change;
        most = most.max(now);
    }
    most.unsigned_abs() as usize
}

/// Runs the processes, calls `fault` once a third of the holds are done,
/// and checks the holds.
fn run(spawn: impl Fn() -> Proc, fault: impl FnOnce()) -> Vec<Hold> {
    let holds = Arc::new(Mutex::new(Vec::new()));
    let drivers: Vec<_> = (0..PROCESSES)
        .map(|process| {
            let proc = spawn();
            let holds = Arc::clone(&holds);
            std::thread::spawn(move || drive(process, proc, holds))
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while holds.lock().unwrap().len() < PROCESSES * ROUNDS / 3 {
        assert!(Instant::now() < deadline, "the processes made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    fault();
    for driver in drivers {
        driver.join().unwrap();
    }
    let holds = holds.lock().unwrap().clone();
    assert_eq!(holds.len(), PROCESSES * ROUNDS, "holds lost");
    for process in 0..PROCESSES {
        let tokens: Vec<u64> = holds
            .iter()
            .filter(|h| h.process == process)
            .map(|h| h.fencing_token)
            .collect();
        assert!(
            tokens.windows(2).all(|w| w[0] < w[1]),
            "process {process}'s fencing tokens went back: {tokens:?}"
        );
    }
    let unique: HashSet<u64> = holds.iter().map(|h| h.fencing_token).collect();
    assert_eq!(
        unique.len(),
        holds.len(),
        "a fencing token handed out twice"
    );
    let most = most_at_once(&holds);
    eprintln!(
        "{} holds, {} confirmed, at most {most} at once",
        holds.len(),
        holds.iter().filter(|h| h.confirmed).count()
    );
    assert!(
        most <= PERMITS,
        "{most} confirmed holders at once: {holds:#?}"
    );
    // The same as a history, all holds included: a hold whose release was
    // refused lost its permit at some moment after it was granted.
    let calls: Vec<Call<LockOp>> = holds
        .iter()
        .flat_map(|h| {
            let token = h.fencing_token;
            let acquired = Call {
                process: h.process,
                invoked: h.asked,
                returned: Some(h.entered),
                op: LockOp::Acquired(token),
            };
            let released = if h.confirmed {
                Call {
                    process: h.process,
                    invoked: h.left,
                    returned: Some(h.answered),
                    op: LockOp::Released(token),
                }
            } else {
                Call {
                    process: h.process,
                    invoked: h.entered,
                    returned: None,
                    op: LockOp::Released(token),
                }
            };
            [acquired, released]
        })
        .collect();
    let model = history::Semaphore { permits: PERMITS };
    if let Err(anomaly) = history::check(&model, &calls) {
        panic!("{anomaly}");
    }
    holds
}

#[test]
fn etcd_semaphore_processes_never_exceed_the_permits_while_the_leader_dies() {
    let etcd = EtcdCluster::start(3).unwrap();
    let name = format!("procs-sem-{}", std::process::id());
    let holds = run(
        || {
            let permits = PERMITS.to_string();
            let args = ["--name", &name, "--permits", &permits, "--ttl", "10"];
            etcd_example("etcd-semaphore", &etcd, &args)
        },
        || {
            let leader = etcd.leader().unwrap();
            etcd.kill(leader).unwrap();
            std::thread::sleep(Duration::from_secs(2));
            etcd.restart(leader).unwrap();
        },
    );
    // etcd keeps the permits through a leader's death: every release is
    // confirmed, and the bound held for all of them.
    let refused: Vec<&Hold> = holds.iter().filter(|h| !h.confirmed).collect();
    assert!(refused.is_empty(), "releases refused: {refused:#?}");
}

#[test]
fn redis_semaphore_processes_never_exceed_the_permits_across_a_restart() {
    let redis = RedisServer::start().unwrap();
    let name = format!("procs-sem-{}", std::process::id());
    let holds = run(
        || {
            Proc::spawn(
                Command::new(example_binary("redis-semaphore"))
                    .args(["--url", &redis.url(), "--name", &name])
                    .args(["--permits", &PERMITS.to_string(), "--lease", "10"]),
            )
        },
        || redis.restart().unwrap(),
    );
    // Only a hold that spanned the restart can have lost its permit.
    let confirmed = holds.iter().filter(|h| h.confirmed).count();
    assert!(
        confirmed >= holds.len() - PROCESSES,
        "{} of {} releases refused",
        holds.len() - confirmed,
        holds.len()
    );
}

#[test]
fn the_overlap_count_sees_a_fourth_holder() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let hold = |process, from, to, confirmed| Hold {
        process,
        asked: at(from),
        entered: at(from),
        left: at(to),
        answered: at(to),
        fencing_token: process as u64,
        confirmed,
    };
    let three = vec![
        hold(0, 0, 10, true),
        hold(1, 1, 10, true),
        hold(2, 2, 10, true),
    ];
    assert_eq!(most_at_once(&three), 3);
    let mut four = three.clone();
    four.push(hold(3, 9, 12, true));
    assert_eq!(most_at_once(&four), 4);
    // Back to back is not overlapping; an unconfirmed hold is not counted.
    let mut handed_on = three.clone();
    handed_on.push(hold(3, 10, 12, true));
    handed_on.push(hold(4, 5, 6, false));
    assert_eq!(most_at_once(&handed_on), 3);
}
