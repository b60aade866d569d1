//! `cargo xtask bench [FILTER]`: builds the macro benchmarks in release mode
//! and runs those whose name contains FILTER. Results are JSON lines on
//! stdout; everything else goes to stderr (see ../shared/BENCHMARKS.md).

use crate::run::{cargo, step};
use crate::{Result, ensure};

/// Runs the benches; servers come from `ETCD_ENDPOINTS` / `REDIS_URL` when
/// set, otherwise the bench binary starts its own through testkit.
pub fn run(filter: &str) -> Result {
    ensure::servers()?;
    let mut command = cargo();
    command.args([
        "bench",
        "--quiet",
        "-p",
        "concurrency-patterns",
        "--bench",
        "macro",
        "--",
    ]);
    if !filter.is_empty() {
        command.arg(filter);
    }
    step(&format!("benchmarks matching `{filter}`"), &mut command)
}
