//! Building the book, failing on any error mdbook only logs.

use std::process::Command;

use crate::Result;
use crate::run::{cargo, find, path_with_cargo_bin, step};

/// Builds `book/` into `book/book/`. mdbook exits 0 after logging some errors
/// (a failed include, for one), so its log is read too.
pub fn build() -> Result {
    let book = crate::workspace_root().join("book");
    let mermaid = find("mdbook-mermaid")
        .ok_or("mdbook-mermaid is missing: run `cargo xtask ensure`")?;
    let mdbook = find("mdbook").ok_or("mdbook is missing: run `cargo xtask ensure`")?;
    // The mermaid JavaScript is third-party, so it is written here at build
    // time (and ignored by git) instead of being checked in.
    run_logged(
        Command::new(mermaid).arg("install").arg(&book),
        "mdbook-mermaid install",
    )?;
    eprintln!("==> mdbook build book");
    run_logged(Command::new(mdbook).arg("build").arg(&book), "mdbook build")?;
    eprintln!(
        "    ok: open {}",
        book.join("book").join("index.html").display()
    );
    Ok(())
}

/// The browser checks of the built book (bookcheck/), then the proof that
/// they can fail: a copy of the book with one planted defect of each kind.
pub fn check() -> Result {
    let book = crate::workspace_root().join("book").join("book");
    step(
        "the book in chromium: diagrams, images, widths at 1280 px, links, search",
        cargo()
            .args(["run", "--quiet", "-p", "bookcheck", "--"])
            .arg(&book),
    )?;
    step(
        "the book checks catch planted defects",
        cargo()
            .args(["run", "--quiet", "-p", "bookcheck", "--", "--planted"])
            .arg(&book),
    )
}

fn run_logged(command: &mut Command, what: &str) -> Result {
    let output = command
        .env("PATH", path_with_cargo_bin())
        .output()
        .map_err(|e| format!("{what}: could not start: {e}"))?;
    let log = String::from_utf8_lossy(&output.stderr).to_string()
        + &String::from_utf8_lossy(&output.stdout);
    let errors: Vec<&str> = log.lines().filter(|line| line.contains("ERROR")).collect();
    if !output.status.success() || !errors.is_empty() {
        return Err(format!("{what} failed ({}):\n{log}", output.status));
    }
    Ok(())
}
