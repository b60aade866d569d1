//! `cargo xtask soak [--seconds N] [--seed S]`: the soak test
//! (`tests/soak.rs`), a randomized schedule of faults against a 3-member
//! etcd and a Redis while the recipes run, every history checked at the
//! end. It prints its seed first and one JSON line last; a failing seed
//! replays the same schedule.

use crate::Result;
use crate::run::{cargo, step};

/// How long a soak runs unless told.
pub const DEFAULT_SECONDS: u64 = 60;

/// `[--seconds N] [--seed S]`, in either order.
pub fn parse(args: &[&str]) -> Result<(u64, Option<u64>)> {
    let mut seconds = DEFAULT_SECONDS;
    let mut seed = None;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        let value = |name: &str, value: Option<&&str>| -> Result<u64> {
            value
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("`{name}` takes a whole number"))
        };
        match *arg {
            "--seconds" => seconds = value("--seconds", rest.next())?,
            "--seed" => seed = Some(value("--seed", rest.next())?),
            other => {
                return Err(format!(
                    "`soak` takes --seconds N and --seed S, not `{other}`"
                ));
            }
        }
    }
    if seconds == 0 {
        return Err("`--seconds` must be more than 0".into());
    }
    Ok((seconds, seed))
}

/// Runs the soak for `seconds`, with `seed` if given (else a new one),
/// naming its servers `run` if given (for the leftover check of `test`).
pub fn run(seconds: u64, seed: Option<u64>, run: Option<&str>) -> Result {
    let mut command = cargo();
    command
        .args([
            "test",
            "--test",
            "soak",
            "--",
            "--ignored",
            "--nocapture",
            "--exact",
            "soak",
        ])
        .env("SOAK_SECONDS", seconds.to_string());
    if let Some(seed) = seed {
        command.env("SOAK_SEED", seed.to_string());
    }
    if let Some(run) = run {
        command.env(testkit::RUN_VAR, run);
    }
    step(&format!("soak for {seconds} s"), &mut command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_arguments_are_read_in_either_order_and_checked() {
        assert_eq!(parse(&[]), Ok((DEFAULT_SECONDS, None)));
        assert_eq!(parse(&["--seed", "7", "--seconds", "5"]), Ok((5, Some(7))));
        assert!(parse(&["--seconds"]).is_err());
        assert!(parse(&["--seconds", "0"]).is_err());
        assert!(parse(&["--seed", "x"]).is_err());
        assert!(parse(&["10"]).is_err());
    }
}
