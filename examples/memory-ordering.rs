//! Memory ordering: publish a value from one thread to others, correctly.
//!
//! Go's program stores `data = 42`, then a `ready` flag; readers spin on the
//! flag, then read `data`. Here the flag and the data live in a
//! `Publication` cell, whose Release store and Acquire load make that safe.
//! The wrong (Relaxed) version and the SeqCst case are proven by the loom
//! models, which `cargo xtask test` runs; this example shows the right one
//! at work.
//!
//!     cargo run --example memory-ordering
//!
//! Needs no server.

use std::sync::Arc;

use concurrency_patterns::patterns::publish::Publication;

fn main() -> anyhow::Result<()> {
    // ANCHOR: publish
    let cell = Arc::new(Publication::new());
    let readers: Vec<_> = (0..4)
        .map(|id| {
            let cell = Arc::clone(&cell);
            // Each reader spins briefly, then sleeps until the value is there.
            std::thread::spawn(move || (id, *cell.wait()))
        })
        .collect();

    // The writer: everything written before `publish` is visible to readers.
    cell.publish(42u64)
        .map_err(|_| anyhow::anyhow!("published twice"))?;
    // ANCHOR_END: publish

    for reader in readers {
        let (id, value) = reader
            .join()
            .map_err(|_| anyhow::anyhow!("a reader panicked"))?;
        println!("reader {id} saw {value}");
        anyhow::ensure!(value == 42, "reader {id} saw {value}");
    }
    // A second publish is refused and hands the value back.
    let second = cell.publish(7);
    println!("a second publish: {second:?}");
    anyhow::ensure!(second.is_err(), "a cell is written once");
    Ok(())
}
