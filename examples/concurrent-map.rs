//! A concurrent map with Go's `sync.Map` operations, over dashmap.
//!
//! Stores, loads, `load_or_store` races between threads (exactly one wins
//! each key), in-place updates without lost increments, and `range`.
//!
//!     cargo run --example concurrent-map
//!
//! Needs no server.

use std::ops::ControlFlow;
use std::sync::Arc;

use concurrency_patterns::patterns::map::ConcurrentMap;

fn main() -> anyhow::Result<()> {
    // ANCHOR: sync_map
    let map = Arc::new(ConcurrentMap::new());
    map.store("alice", 100);
    map.store("bob", 50);
    println!("load alice: {:?}", map.load("alice"));
    // (50, true): bob was there, so his value is loaded, not replaced.
    println!("load_or_store bob 0: {:?}", map.load_or_store("bob", 0));
    println!("load_and_delete bob: {:?}", map.load_and_delete("bob"));
    println!("delete carol: {}", map.delete("carol")); // false: was not there

    // Four threads add 1 to the same key 10,000 times each: no update is lost,
    // because `update` holds the key's shard while it changes the value.
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let map = Arc::clone(&map);
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    map.update("alice", |v| *v += 1);
                }
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| anyhow::anyhow!("a thread panicked"))?;
    }
    // ANCHOR_END: sync_map
    let alice = map.load("alice");
    println!("alice after 40,000 concurrent increments: {alice:?}");
    anyhow::ensure!(alice == Some(40_100), "lost updates: {alice:?}");

    // ANCHOR: range
    // Never touch the map inside `range`: collect what you need, then write.
    let mut rich = Vec::new();
    map.range(|name, balance| {
        if *balance > 1_000 {
            rich.push(*name);
        }
        ControlFlow::Continue(())
    });
    for name in rich {
        map.update(name, |v| *v -= 1_000);
    }
    // ANCHOR_END: range
    println!("after the tax: {:?}", map.snapshot());
    anyhow::ensure!(
        map.load("alice") == Some(39_100),
        "the range update went wrong"
    );
    Ok(())
}
