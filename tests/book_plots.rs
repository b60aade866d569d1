//! The book's plots, and the table beside them, are what the tested
//! simulation produces today: the `adaptive-limit` example regenerates them
//! into a temporary directory and they must match the committed files byte
//! for byte (the simulation runs
//! in virtual time, so it is deterministic). If this fails after a change
//! to the limiter, regenerate them:
//!
//!     cargo run --example adaptive-limit -- --svg book/src/resilience

mod support;

use std::process::Command;

use support::{example_binary, root};

#[test]
fn the_committed_plots_match_the_simulation() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(example_binary("adaptive-limit"))
        .arg("--svg")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for plot in [
        "adaptive-limit.svg",
        "adaptive-latency.svg",
        "adaptive-overload.md",
    ] {
        let fresh = std::fs::read(dir.path().join(plot)).unwrap();
        let committed =
            std::fs::read(root().join("book/src/resilience").join(plot)).unwrap();
        assert!(
            fresh == committed,
            "book/src/resilience/{plot} is stale; regenerate it with \
             `cargo run --example adaptive-limit -- --svg book/src/resilience`"
        );
    }
}

/// The retries chapter's plot of the retry wave, from the `retry` example's
/// seeded simulation in virtual time. Regenerate it with
/// `cargo run --example retry -- --svg book/src/resilience`.
#[test]
fn the_committed_retry_wave_matches_the_simulation() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(example_binary("retry"))
        .arg("--svg")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let fresh = std::fs::read(dir.path().join("retry-wave.svg")).unwrap();
    let committed =
        std::fs::read(root().join("book/src/resilience/retry-wave.svg")).unwrap();
    assert!(
        fresh == committed,
        "book/src/resilience/retry-wave.svg is stale; regenerate it with \
         `cargo run --example retry -- --svg book/src/resilience`"
    );
}
