//! The book's plots, and the table beside them, are what the tested
//! simulations produce today: the `adaptive-limit` and `retry` examples
//! regenerate them into a temporary directory and they must match the
//! committed files byte for byte (the simulations run in virtual time, with
//! seeded draws, so they are deterministic). If this fails after a change
//! to the limiter or the retries, regenerate them:
//!
//!     cargo run --example adaptive-limit -- --svg book/src/resilience
//!     cargo run --example retry -- --svg book/src/resilience
//!     cargo run --example watch -- --svg book/src/etcd

mod support;

use std::process::Command;

use support::{example_binary, root};

/// Runs `example --svg DIR` into a temporary directory and checks that each
/// of `files` matches the committed one in `book/src/resilience/`.
fn assert_current(example: &str, files: &[&str]) {
    assert_current_in(example, "resilience", files);
}

/// The same, for the committed files in `book/src/<dir>/`.
fn assert_current_in(example: &str, dir: &str, files: &[&str]) {
    let book_dir = dir;
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(example_binary(example))
        .arg("--svg")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for file in files {
        let fresh = std::fs::read(dir.path().join(file)).unwrap();
        let committed =
            std::fs::read(root().join("book/src").join(book_dir).join(file)).unwrap();
        assert!(
            fresh == committed,
            "book/src/{book_dir}/{file} is stale; regenerate it with \
             `cargo run --example {example} -- --svg book/src/{book_dir}`"
        );
    }
}

#[test]
fn the_committed_plots_match_the_simulation() {
    assert_current(
        "adaptive-limit",
        &[
            "adaptive-limit.svg",
            "adaptive-latency.svg",
            "adaptive-overload.md",
        ],
    );
}

/// The retries chapter's plot of the retry wave, from the `retry` example's
/// seeded simulation in virtual time.
#[test]
fn the_committed_retry_wave_matches_the_simulation() {
    assert_current("retry", &["retry-wave.svg"]);
}

/// The picture of the live view in the locks chapter: the test backend's
/// screen for a fixed lock (a holder, two waiters, a key just gone).
#[test]
fn the_committed_picture_of_the_live_view_is_current() {
    assert_current_in("watch", "etcd", &["watch-mutex.svg"]);
}
