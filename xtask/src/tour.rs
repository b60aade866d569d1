//! `cargo xtask tour`: the main job. Every example in book order, in its
//! scripted mode, against local services; then the book.

use crate::run::{cargo, step};
use crate::{Result, book, ensure, services};

/// One line of `examples/tour.txt`.
#[derive(Debug, PartialEq)]
pub struct TourStep {
    /// The example's name (its file name without `.rs`).
    pub example: String,
    /// The arguments that select its scripted, non-interactive mode.
    pub args: Vec<String>,
}

/// Reads `examples/tour.txt`: one example per line, in book order, with its
/// scripted-mode arguments; `#` starts a comment.
pub fn steps() -> Result<Vec<TourStep>> {
    let path = crate::workspace_root().join("examples").join("tour.txt");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(|line| line.split('#').next().unwrap_or("").trim())
        .filter(|line| !line.is_empty())
        .map(|line| {
            let mut words = line.split_whitespace().map(str::to_string);
            TourStep {
                example: words.next().unwrap_or_default(),
                args: words.collect(),
            }
        })
        .collect())
}

/// Runs the tour.
pub fn run() -> Result {
    ensure::everything()?;
    let own_servers = std::env::var_os("ETCD_ENDPOINTS").is_none()
        || std::env::var_os("REDIS_URL").is_none();
    if own_servers {
        services::up()?;
    }
    let steps = steps()?;
    // Build every example once up front, so each step shows only its output.
    step(
        "building the examples",
        cargo().args(["build", "--quiet", "--examples"]),
    )?;
    for (index, tour_step) in steps.iter().enumerate() {
        let what = format!(
            "[{}/{}] example {} {}",
            index + 1,
            steps.len(),
            tour_step.example,
            tour_step.args.join(" ")
        );
        step(
            &what,
            cargo()
                .args(["run", "--quiet", "--example", &tour_step.example, "--"])
                .args(&tour_step.args),
        )?;
    }
    book::build()?;
    let index = crate::workspace_root()
        .join("book")
        .join("book")
        .join("index.html");
    eprintln!(
        "tour done: {} examples ran. Open the book at {}",
        steps.len(),
        index.display()
    );
    if own_servers {
        eprintln!(
            "etcd and Redis are still up for the interactive examples; `cargo xtask services down` stops them"
        );
    }
    Ok(())
}
