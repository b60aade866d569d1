//! Every `{{#include}}` in the book resolves to code that exists.
//!
//! mdbook only logs a missing file and silently renders an empty listing for
//! a missing anchor, so a chapter could lose its code without anyone noticing.
//! This test fails naming the chapter and line instead.

use std::path::{Path, PathBuf};

/// One problem found, as `chapter:line: what`.
type Problem = String;

/// Checks every include directive in every Markdown file under `src`.
fn check_book(src: &Path) -> Vec<Problem> {
    let mut problems = Vec::new();
    for chapter in markdown_files(src) {
        let text = std::fs::read_to_string(&chapter).unwrap();
        for (number, line) in text.lines().enumerate() {
            for directive in include_directives(line) {
                if let Err(what) = check_include(&chapter, &directive) {
                    problems.push(format!(
                        "{}:{}: {what}",
                        chapter.display(),
                        number + 1
                    ));
                }
            }
            for image in images(line) {
                if !chapter.parent().unwrap().join(&image).is_file() {
                    problems.push(format!(
                        "{}:{}: image `{image}` does not exist",
                        chapter.display(),
                        number + 1
                    ));
                }
            }
        }
    }
    problems
}

fn markdown_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(markdown_files(&path));
        } else if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The arguments of `{{#include …}}` and `{{#rustdoc_include …}}` on a line.
fn include_directives(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find("{{#") {
        let after = &rest[start + 3..];
        let Some(end) = after.find("}}") else { break };
        let body = after[..end].trim();
        if let Some(args) = body
            .strip_prefix("include ")
            .or_else(|| body.strip_prefix("rustdoc_include "))
        {
            found.push(args.trim().to_string());
        }
        rest = &after[end + 2..];
    }
    found
}

/// The targets of `![alt](target)` on a line.
fn images(line: &str) -> Vec<String> {
    line.split("![")
        .skip(1)
        .filter_map(|rest| {
            let target = rest.split_once("](")?.1.split_once(')')?.0;
            Some(target.to_string())
        })
        .collect()
}

/// `path`, `path:anchor`, `path:N`, `path:N:M`, `path:N:` or `path::M`.
fn check_include(chapter: &Path, directive: &str) -> Result<(), String> {
    let (file, selector) = match directive.split_once(':') {
        Some((file, selector)) => (file, Some(selector)),
        None => (directive, None),
    };
    let path = chapter.parent().unwrap().join(file);
    let code = std::fs::read_to_string(&path)
        .map_err(|e| format!("`{directive}`: cannot read {}: {e}", path.display()))?;
    let Some(selector) = selector else {
        return if code.trim().is_empty() {
            Err(format!("`{directive}`: the file is empty"))
        } else {
            Ok(())
        };
    };
    let is_line_range = selector
        .split(':')
        .all(|part| part.is_empty() || part.parse::<usize>().is_ok());
    if is_line_range {
        let last = selector
            .split(':')
            .filter_map(|p| p.parse::<usize>().ok())
            .max()
            .unwrap_or(0);
        let lines = code.lines().count();
        return if last > lines {
            Err(format!(
                "`{directive}`: line {last} is past the end ({lines} lines)"
            ))
        } else {
            Ok(())
        };
    }
    anchor_body(&code, selector)
        .ok_or_else(|| {
            format!(
                "`{directive}`: no `ANCHOR: {selector}` … `ANCHOR_END: {selector}` pair"
            )
        })
        .and_then(|body| {
            if body.iter().all(|line| line.trim().is_empty()) {
                return Err(format!("`{directive}`: the anchor is empty"));
            }
            if let Some(line) = too_wide(&body) {
                return Err(format!(
                    "`{directive}`: a line is over {MAX_LISTING_WIDTH} columns once \
                     dedented: {line}"
                ));
            }
            if file.ends_with(".rs") {
                unbalanced(&body)
                    .map_or(Ok(()), |why| Err(format!("`{directive}`: {why}")))
            } else {
                Ok(())
            }
        })
}

/// The widest listing line that fits the book's code box at 1280 px, once
/// the book's preprocessor has removed the listing's common indentation.
const MAX_LISTING_WIDTH: usize = 88;

/// The first line wider than [`MAX_LISTING_WIDTH`] after dedenting.
fn too_wide<'a>(body: &[&'a str]) -> Option<&'a str> {
    let indent = body
        .iter()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    body.iter()
        .copied()
        .find(|line| line.chars().count().saturating_sub(indent) > MAX_LISTING_WIDTH)
}

/// Why a Rust listing does not stand alone: a bracket closed that it never
/// opened (it starts mid-item), or one left open (it stops mid-item).
/// Strings, character literals and `//` comments are skipped.
fn unbalanced(body: &[&str]) -> Option<String> {
    let mut open: Vec<char> = Vec::new();
    for line in body {
        let mut chars = line.chars().peekable();
        let mut in_string = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' if in_string => {
                    chars.next();
                }
                '"' => in_string = !in_string,
                _ if in_string => {}
                '/' if chars.peek() == Some(&'/') => break,
                '\'' => {
                    // A char literal ('{', '\n'), not a lifetime ('a).
                    let rest: String = chars.clone().take(3).collect();
                    if rest.starts_with('\\') {
                        chars.nth(2);
                    } else if rest.chars().nth(1) == Some('\'') {
                        chars.nth(1);
                    }
                }
                '{' | '(' | '[' => open.push(c),
                '}' | ')' | ']' => {
                    let expected = match c {
                        '}' => '{',
                        ')' => '(',
                        _ => '[',
                    };
                    if open.pop() != Some(expected) {
                        return Some(format!(
                            "it closes a `{c}` it did not open (it starts mid-item): {}",
                            line.trim()
                        ));
                    }
                }
                _ => {}
            }
        }
    }
    open.last()
        .map(|c| format!("it leaves a `{c}` open (it stops mid-item)"))
}

/// The lines between `ANCHOR: name` and `ANCHOR_END: name`, without other
/// anchors' marker lines (mdbook drops those too).
fn anchor_body<'a>(code: &'a str, name: &str) -> Option<Vec<&'a str>> {
    let is_marker = |line: &str, kind: &str| {
        line.split_once(kind)
            .is_some_and(|(_, rest)| rest.trim().trim_end_matches("*/").trim() == name)
    };
    let mut lines = code.lines();
    lines.by_ref().find(|line| is_marker(line, "ANCHOR:"))?;
    let mut body = Vec::new();
    for line in lines {
        if is_marker(line, "ANCHOR_END:") {
            return Some(body);
        }
        if !line.contains("ANCHOR:") && !line.contains("ANCHOR_END:") {
            body.push(line);
        }
    }
    None
}

#[test]
fn every_include_in_the_book_resolves_to_non_empty_code() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("book")
        .join("src");
    let problems = check_book(&src);
    assert!(
        problems.is_empty(),
        "broken includes in the book:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_chapter_in_the_summary_exists() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("book")
        .join("src");
    let summary = std::fs::read_to_string(src.join("SUMMARY.md")).unwrap();
    let missing: Vec<&str> = summary
        .lines()
        .filter_map(|line| {
            line.split_once("](")?
                .1
                .split_once(')')
                .map(|(target, _)| target)
        })
        .filter(|target| !target.is_empty() && !src.join(target).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "SUMMARY.md lists chapters that do not exist: {missing:?}"
    );
}

/// The checker itself must catch each kind of breakage, or the test above
/// proves nothing.
#[test]
fn the_checker_catches_missing_files_anchors_and_empty_anchors() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        dir.path().join("code.rs"),
        "// ANCHOR: full\nfn main() {}\n// ANCHOR_END: full\n// ANCHOR: empty\n\n// ANCHOR_END: empty\n",
    )
    .unwrap();
    std::fs::write(
        src.join("chapter.md"),
        "{{#include ../code.rs:full}}\n\
         {{#include ../missing.rs:full}}\n\
         {{#include ../code.rs:nope}}\n\
         {{#rustdoc_include ../code.rs:empty}}\n\
         {{#include ../code.rs:1:99}}\n\
         ![a plot](missing.svg)\n",
    )
    .unwrap();
    let problems = check_book(&src);
    let lines: Vec<&str> = problems
        .iter()
        .map(|p| p.rsplit_once(".md:").unwrap().1)
        .collect();
    assert_eq!(problems.len(), 5, "{problems:#?}");
    assert!(
        lines[0].starts_with("2:") && lines[0].contains("cannot read"),
        "{problems:#?}"
    );
    assert!(
        lines[1].starts_with("3:") && lines[1].contains("no `ANCHOR: nope`"),
        "{problems:#?}"
    );
    assert!(
        lines[2].starts_with("4:") && lines[2].contains("empty"),
        "{problems:#?}"
    );
    assert!(
        lines[3].starts_with("5:") && lines[3].contains("past the end"),
        "{problems:#?}"
    );
    assert!(
        lines[4].starts_with("6:") && lines[4].contains("missing.svg"),
        "{problems:#?}"
    );
}

/// The listing rules: an anchor is a whole item (its brackets balance) and
/// no line is wider than the box once the common indentation is gone.
#[test]
fn the_checker_catches_listings_that_do_not_stand_alone_or_run_wide() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let deep = format!(
        "            let fits_once_dedented = \"{}\";",
        "x".repeat(40)
    );
    let wide = format!("let wide = \"{}\";", "x".repeat(90));
    let code = format!(
        "fn f() {{\n\
         // ANCHOR: starts_mid_item\n    }}\n}}\n// ANCHOR_END: starts_mid_item\n\
         // ANCHOR: stops_mid_item\nfn g() {{\n    if true {{\n// ANCHOR_END: stops_mid_item\n\
         // ANCHOR: wide\n{wide}\n// ANCHOR_END: wide\n\
         // ANCHOR: deep\n{deep}\n// ANCHOR_END: deep\n\
         // ANCHOR: braces_in_strings\nfn h() {{ let _ = \"}}\"; let _ = '{{'; }}\n\
         // ANCHOR_END: braces_in_strings\n"
    );
    std::fs::write(dir.path().join("code.rs"), code).unwrap();
    std::fs::write(
        src.join("chapter.md"),
        "{{#include ../code.rs:starts_mid_item}}\n\
         {{#include ../code.rs:stops_mid_item}}\n\
         {{#include ../code.rs:wide}}\n\
         {{#include ../code.rs:deep}}\n\
         {{#include ../code.rs:braces_in_strings}}\n",
    )
    .unwrap();
    let problems = check_book(&src);
    let on_line = |line: usize, says: &str| {
        problems
            .iter()
            .any(|p| p.contains(&format!(".md:{line}:")) && p.contains(says))
    };
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(on_line(1, "starts mid-item"), "{problems:#?}");
    assert!(on_line(2, "stops mid-item"), "{problems:#?}");
    assert!(on_line(3, "over 88 columns"), "{problems:#?}");
}

/// The tables `cargo xtask bench --book` writes to `src/generated/` that no
/// chapter includes, and the ones a chapter includes that do not exist.
fn generated_table_problems(src: &Path) -> Vec<Problem> {
    let generated_dir = src.join("generated");
    let mut generated: Vec<String> = std::fs::read_dir(&generated_dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|name| name.ends_with(".md"))
                .collect()
        })
        .unwrap_or_default();
    generated.sort();
    let mut included = Vec::new();
    let mut problems = Vec::new();
    for chapter in markdown_files(src) {
        if chapter.starts_with(&generated_dir) {
            continue;
        }
        let text = std::fs::read_to_string(&chapter).unwrap();
        for (number, line) in text.lines().enumerate() {
            for directive in include_directives(line) {
                let Some(table) = directive.strip_prefix("generated/") else {
                    continue;
                };
                if !generated.iter().any(|g| g == table) {
                    problems.push(format!(
                        "{}:{}: includes `generated/{table}`, which `cargo xtask \
                         bench --book` did not write",
                        chapter.display(),
                        number + 1
                    ));
                }
                included.push(table.to_string());
            }
        }
    }
    for table in generated {
        if !included.contains(&table) {
            problems.push(format!("generated/{table} is included by no chapter"));
        }
    }
    problems
}

#[test]
fn every_generated_table_is_included_and_every_included_one_exists() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("book")
        .join("src");
    assert!(
        src.join("generated").is_dir(),
        "book/src/generated is missing: run `cargo xtask bench --book`"
    );
    let problems = generated_table_problems(&src);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_table_check_catches_an_orphan_and_a_missing_table() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("generated")).unwrap();
    std::fs::write(src.join("generated/used.md"), "| a |\n").unwrap();
    std::fs::write(src.join("generated/orphan.md"), "| b |\n").unwrap();
    std::fs::write(
        src.join("chapter.md"),
        "# C\n\n{{#include generated/used.md}}\n\n{{#include generated/gone.md}}\n",
    )
    .unwrap();
    let problems = generated_table_problems(src);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("chapter.md:5") && problems[0].contains("gone.md"));
    assert!(problems[1].contains("orphan.md"));
}
