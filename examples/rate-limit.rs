//! Three local rate limiters side by side, and a keyed one.
//!
//! The same bursty traffic goes through the exact sliding log, the O(1)
//! sliding-window counter and GCRA; then a keyed GCRA limits clients
//! separately and forgets idle ones.
//!
//!     cargo run --example rate-limit
//!
//! Needs no server. Runs on a virtual clock, so it is instant and its
//! output is the same every time.

use std::time::Duration;

use concurrency_patterns::resilience::{
    Clock, Decision, Gcra, KeyedGcra, ManualClock, SlidingLog, SlidingWindow,
};

fn main() -> anyhow::Result<()> {
    // ANCHOR: side_by_side
    // 10 requests per second allowed. Traffic: a burst of 15 at t = 0.9 s,
    // then one request every 50 ms (20/s, twice the limit) until t = 3 s.
    let clock = ManualClock::new();
    let window = Duration::from_secs(1);
    let log = SlidingLog::with_clock(10, window, clock.clone())?;
    let counter = SlidingWindow::with_clock(10, window, clock.clone())?;
    let gcra = Gcra::with_clock(10, window, clock.clone())?;

    let mut granted = [0u32; 3];
    let mut arrivals = vec![Duration::from_millis(900); 15];
    arrivals.extend((19..60).map(|i| Duration::from_millis(50 * i)));
    for at in arrivals {
        clock.advance(at.saturating_sub(clock.now()));
        let decisions = [log.check_n(1), counter.check_n(1), gcra.check_n(1)];
        for (count, decision) in granted.iter_mut().zip(decisions) {
            *count += u32::from(decision.is_allowed());
        }
    }
    println!("granted of 56 requests in 3 s (limit 10/s):");
    println!(
        "  sliding log    {:>3}  (exact: never more than 10 in any 1 s)",
        granted[0]
    );
    println!(
        "  sliding window {:>3}  (two counters; an estimate)",
        granted[1]
    );
    println!(
        "  GCRA           {:>3}  (a burst of 10, then one per 100 ms)",
        granted[2]
    );
    // ANCHOR_END: side_by_side
    anyhow::ensure!(
        granted.iter().all(|&g| (20..=40).contains(&g)),
        "{granted:?}"
    );

    // ANCHOR: keyed
    // Per-client limits: 3 per second each. A scan of 10,000 one-off
    // clients does not stay in memory: idle keys are pruned once a window.
    let keyed: KeyedGcra<String, _> = KeyedGcra::with_clock(3, window, clock.clone())?;
    let alice = "alice".to_string();
    for _ in 0..5 {
        let decision = keyed.check_key(&alice);
        print!(
            "alice: {} ",
            if decision.is_allowed() {
                "ok"
            } else {
                "refused"
            }
        );
        if let Decision::Denied { retry_after } = decision {
            print!("(retry after {retry_after:?}) ");
        }
    }
    println!();
    println!(
        "bob is not limited by alice: {:?}",
        keyed.check_key(&"bob".to_string())
    );
    for client in 0..10_000 {
        keyed.check_key(&format!("scanner-{client}"));
    }
    println!("keys held after a scan: {}", keyed.len());
    clock.advance(window);
    keyed.check_key(&alice);
    println!("keys held a window later: {}", keyed.len());
    // ANCHOR_END: keyed
    anyhow::ensure!(keyed.len() == 1, "idle keys were not pruned");
    Ok(())
}
