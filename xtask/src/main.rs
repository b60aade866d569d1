//! The project's commands, run as `cargo xtask <command>`.
//!
//! - `tour`: the main job. Installs what is missing, starts local services,
//!   runs every example in book order in its scripted mode, builds the book.
//! - `test`: everything CI checks (`.ci/run` runs exactly this).
//! - `bench [FILTER]`: the macro benchmarks, one JSON line each on stdout;
//!   `bench --against [FILTER]` beside their peers, `bench --book` into the
//!   book's tables.
//! - `services up|down|status`: a long-lived etcd and Redis for the
//!   two-terminal interactive examples.
//! - `ensure`: only the install step shared by the others.

mod against;
mod bench;
mod bench_book;
mod book;
mod crates;
mod dedent;
mod ensure;
mod exercises;
mod leftovers;
mod run;
mod services;
mod soak;
mod test;
mod tour;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  tour                     install what is missing, run every example in book order, build the book
  test                     everything CI checks: fmt, clippy, tests against real servers, crates, loom, book (in chromium)
  test crates              only the checks of the crates as others use them: docs, packaging, an outside crate
  test book                build the book and check it in chromium (and that the checks catch planted defects)
  bench [FILTER]           macro benchmarks whose name contains FILTER, as JSON lines on stdout
  bench --against [FILTER] [--rounds N]
                           each benchmark beside its peer (etcd's Go recipes, rslock, failsafe,
                           governor), alternating in fresh processes, N rounds (10): ratio lines
  bench --book [--rounds N]
                           the comparisons and benchmarks the chapters quote, written to
                           book/src/generated/*.md with their conditions
  soak [--seconds N] [--seed S]
                           a randomized schedule of kills, pauses and partitions against a
                           3-member etcd and a Redis while the recipes run (60 s); every history
                           checked; ends with one JSON line; a failing seed replays its schedule
  services up|down|status  a long-lived etcd on 127.0.0.1:2379 and Redis on 127.0.0.1:6379
  exercises --check        every Break it exercise in the book, applied to a scratch copy:
                           the named test fails with the change and passes without it
  ensure                   only install what is missing (etcd, etcdctl, redis-server, redis-sentinel, protoc, openssl, chromium, mdbook)";

/// An error for the user: printed as is, then the command exits with 1.
pub type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["tour"] => tour::run(),
        ["test"] => test::run(),
        ["test", "crates"] => ensure::everything().and_then(|()| crates::check()),
        ["test", "book"] => ensure::everything()
            .and_then(|()| book::build())
            .and_then(|()| book::check()),
        ["bench", "--against", rest @ ..] => {
            with_rounds(rest).and_then(|(filter, rounds)| against::run(filter, rounds))
        }
        ["bench", "--book", rest @ ..] => match with_rounds(rest) {
            Ok(("", rounds)) => bench_book::run(rounds),
            Ok((other, _)) => {
                Err(format!("`bench --book` takes no filter (got `{other}`)"))
            }
            Err(e) => Err(e),
        },
        ["bench"] => bench::run(""),
        ["bench", filter] if !filter.starts_with("--") => bench::run(filter),
        ["soak", rest @ ..] => soak::parse(rest).and_then(|(seconds, seed)| {
            ensure::servers().and_then(|()| soak::run(seconds, seed, None))
        }),
        ["services", "up"] => services::up(),
        ["services", "down"] => services::down(),
        ["services", "status"] => services::status(),
        ["exercises", "--check"] => exercises::check(),
        ["ensure"] => ensure::everything(),
        ["mdbook-dedent", rest @ ..] => dedent::run(rest),
        ["help" | "--help" | "-h"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown command `{}`\n\n{USAGE}", args.join(" "))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// `[FILTER] [--rounds N]` in either order; 10 rounds unless told.
fn with_rounds<'a>(args: &[&'a str]) -> Result<(&'a str, usize)> {
    let mut filter = "";
    let mut rounds = 10;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match *arg {
            "--rounds" => {
                rounds = rest
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| *n > 0)
                    .ok_or("--rounds needs a number of rounds above 0")?;
            }
            flag if flag.starts_with("--") => {
                return Err(format!("unknown flag `{flag}`"));
            }
            word if filter.is_empty() => filter = word,
            word => {
                return Err(format!("one filter only (got `{filter}` and `{word}`)"));
            }
        }
    }
    Ok((filter, rounds))
}

/// The workspace root (the folder of the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let xtask_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().map(PathBuf::from).unwrap_or(xtask_dir)
}

/// Cargo's target directory, honouring `CARGO_TARGET_DIR`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => workspace_root().join("target"),
    }
}
