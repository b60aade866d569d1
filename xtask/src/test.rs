//! `cargo xtask test`: everything CI checks, in the order that fails fastest.

use std::time::Instant;

use crate::run::{cargo, step};
use crate::{Result, book, crates, ensure, exercises, leftovers, soak};

/// How long the soak runs in `cargo xtask test` (its faults and checks
/// take some seconds more); longer soaks are for people.
const SOAK_SECONDS: u64 = 45;

/// Crates with loom models (`#[cfg(loom)]` tests), checked with `--cfg loom`.
const LOOM_CRATES: &[&str] = &["cpr-patterns"];
/// Loom explores every interleaving up to this many preemptions per thread;
/// 3 finds the classic ordering bugs and keeps the run to seconds.
const LOOM_MAX_PREEMPTIONS: &str = "3";

/// Runs every check; the first failure stops the run.
pub fn run() -> Result {
    let started = Instant::now();
    ensure::everything()?;
    step(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
    )?;
    step(
        "cargo clippy -D warnings",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    // A name for this run's servers, so that the leftover check below looks
    // only at ours.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let run = format!("{}x{nanos}", std::process::id());
    let tests = step(
        "cargo test (unit, integration against real servers, doc tests)",
        cargo()
            .args(["test", "--workspace"])
            .env(testkit::RUN_VAR, &run),
    )
    .and_then(|()| soak::run(SOAK_SECONDS, None, Some(&run)));
    // Checked even when tests failed: a leaked server is its own bug.
    let leaked = leftovers::kill_testkit_processes(&run);
    leftovers::remove_temp_dirs(&run);
    tests?;
    if !leaked.is_empty() {
        return Err(format!(
            "tests left servers running (now killed):\n{}",
            leaked.join("\n")
        ));
    }
    eprintln!("    no test server left running");
    eprintln!("==> the book's Break it exercises (in a scratch copy)");
    let started_exercises = Instant::now();
    exercises::check()?;
    eprintln!(
        "    ok ({:.1} s)",
        started_exercises.elapsed().as_secs_f64()
    );
    crates::check()?;
    for krate in LOOM_CRATES {
        // A separate target dir: `--cfg loom` changes RUSTFLAGS, which would
        // otherwise throw away the normal build cache.
        let target = crate::target_dir().join("loom");
        step(
            &format!("loom models in {krate}"),
            cargo()
                .args(["test", "--release", "--lib", "-p", krate, "--target-dir"])
                .arg(target)
                .arg("loom")
                .env("RUSTFLAGS", "--cfg loom")
                .env("LOOM_MAX_PREEMPTIONS", LOOM_MAX_PREEMPTIONS),
        )?;
    }
    book::build()?;
    book::check()?;
    eprintln!(
        "all checks passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
