//! `bookcheck BOOK_DIR`: the book checks (see the library's docs); exits 1
//! and names each page and check that failed.
//! `bookcheck --planted BOOK_DIR`: plants one defect of each kind in a copy
//! of the book and checks that each is caught, on the page it was put in.
//! `bookcheck --screenshots BOOK_DIR FOLDER`: every chapter at 1280 and
//! 400 px, to look at.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bookcheck::{Problem, SearchProbe, check, screenshots};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let outcome = match args.as_slice() {
        [book] => run(Path::new(book)),
        ["--planted", book] => planted(Path::new(book)),
        ["--screenshots", book, folder] => look(Path::new(book), Path::new(folder)),
        _ => Err(anyhow::anyhow!(
            "usage: bookcheck [--planted] BOOK_DIR | --screenshots BOOK_DIR FOLDER"
        )),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("bookcheck: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The word the search must find, and where.
fn probe() -> SearchProbe {
    SearchProbe {
        word: "Redlock".into(),
        page: "redis-lock.html".into(),
    }
}

fn shots_folder(book: &Path) -> PathBuf {
    // book/book -> the workspace's target/book-check.
    book.ancestors()
        .nth(2)
        .unwrap_or(book)
        .join("target")
        .join("book-check")
}

fn run(book: &Path) -> anyhow::Result<()> {
    let shots = shots_folder(book);
    let problems = check(book, Some(&probe()), &shots)?;
    if problems.is_empty() {
        eprintln!("    every page passed the browser checks");
        return Ok(());
    }
    for problem in &problems {
        eprintln!("    {problem}");
    }
    Err(anyhow::anyhow!(
        "{} problem(s) in the book; screenshots in {}",
        problems.len(),
        shots.display()
    ))
}

/// One defect of each kind, each in its own page of a copy of the book;
/// every one must be reported on that page.
fn planted(book: &Path) -> anyhow::Result<()> {
    let copy = tempfile_dir()?;
    copy_dir(book, &copy)?;
    let plant = |page: &str, from: &str, to: &str| -> anyhow::Result<()> {
        let file = copy.join(page);
        let html = std::fs::read_to_string(&file)?;
        anyhow::ensure!(
            html.contains(from),
            "{page} has no {from:?} to plant a defect in"
        );
        std::fs::write(&file, html.replacen(from, to, 1))?;
        Ok(())
    };
    // A `;` inside a sequence diagram's message ends the statement.
    plant(
        "etcd-lock.html",
        "read first in line",
        "read first; in line",
    )?;
    // An image that is not there.
    plant(
        "rate-limits.html",
        "<h1",
        "<img src=\"missing-plot.svg\" alt=\"gone\"><h1",
    )?;
    // A listing line far wider than the column.
    let long = "x".repeat(400);
    plant(
        "retries.html",
        "<code class=\"language-rust",
        &format!(
            "<code class=\"language-rust\">{long}</code></pre><pre><code class=\"language-rust"
        ),
    )?;
    // A link to an anchor that does not exist.
    plant(
        "introduction.html",
        "</main>",
        "<a href=\"etcd-lock.html#no-such-heading\">x</a></main>",
    )?;
    let problems = check(&copy, None, &copy.join("shots"))?;
    let caught = |page: &str, says: &str| {
        problems
            .iter()
            .any(|p: &Problem| p.page == page && p.what.contains(says))
    };
    let expected = [
        ("etcd-lock.html", "syntax error"),
        ("rate-limits.html", "image did not load: missing-plot.svg"),
        ("retries.html", "listing wider than its box"),
        ("introduction.html", "broken anchor"),
    ];
    let missed: Vec<String> = expected
        .iter()
        .filter(|(page, says)| !caught(page, says))
        .map(|(page, says)| format!("{page}: {says}"))
        .collect();
    let _ = std::fs::remove_dir_all(&copy);
    if missed.is_empty() {
        eprintln!("    each planted defect was caught on its page");
        Ok(())
    } else {
        for problem in &problems {
            eprintln!("    found: {problem}");
        }
        Err(anyhow::anyhow!(
            "planted defects not caught: {}",
            missed.join("; ")
        ))
    }
}

fn look(book: &Path, folder: &Path) -> anyhow::Result<()> {
    for width in [bookcheck::WIDTH, 400] {
        let saved = screenshots(book, width, folder)?;
        eprintln!(
            "    {} pages at {width} px in {}",
            saved.len(),
            folder.display()
        );
    }
    Ok(())
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir =
        std::env::temp_dir().join(format!("bookcheck-planted-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}
