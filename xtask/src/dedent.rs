//! `cargo xtask mdbook-dedent`: an mdbook preprocessor that removes the
//! indentation a listing keeps from its source file. An anchored include
//! (`{{#include file.rs:anchor}}`) brings its lines as they stand in the
//! file — a method's body 8 or 12 columns in — and mdbook does not dedent
//! them; in the book that width is wasted, and lines run past the box.
//!
//! mdbook runs it after its own `links` preprocessor (see book.toml): it
//! reads `[context, book]` as JSON on stdin and writes the book back.

use std::io::Read;

use crate::Result;

/// `supports <renderer>`: every renderer is fine. Otherwise: preprocess.
pub fn run(args: &[&str]) -> Result {
    if let ["supports", _] = args {
        return Ok(());
    }
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| format!("mdbook-dedent: reading stdin: {e}"))?;
    let mut pair: serde_json::Value = serde_json::from_str(&input)
        .map_err(|e| format!("mdbook-dedent: bad input: {e}"))?;
    let book = pair
        .get_mut(1)
        .ok_or("mdbook-dedent: the input is not [context, book]")?;
    dedent_contents(book);
    println!("{book}");
    Ok(())
}

/// Every chapter's `content`, wherever it sits in the book's JSON.
fn dedent_contents(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                match field {
                    serde_json::Value::String(text) if key == "content" => {
                        *text = dedent_listings(text);
                    }
                    other => dedent_contents(other),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(dedent_contents),
        _ => {}
    }
}

/// Removes from each fenced code block the indentation all its lines share.
pub fn dedent_listings(markdown: &str) -> String {
    let mut out = String::with_capacity(markdown.len());
    let mut block: Option<(String, Vec<&str>)> = None;
    for line in markdown.split_inclusive('\n') {
        let fence = line.trim_start().starts_with("```")
            || line.trim_start().starts_with("~~~");
        match (&mut block, fence) {
            (None, true) => block = Some((line.to_string(), Vec::new())),
            (None, false) => out.push_str(line),
            (Some((_, lines)), false) => lines.push(line),
            (Some(_), true) => {
                if let Some((opening, lines)) = block.take() {
                    out.push_str(&opening);
                    out.push_str(&strip_common_indent(&lines));
                    out.push_str(line);
                }
            }
        }
    }
    // An unclosed fence: leave its lines as they were.
    if let Some((opening, lines)) = block {
        out.push_str(&opening);
        lines.iter().for_each(|line| out.push_str(line));
    }
    out
}

fn strip_common_indent(lines: &[&str]) -> String {
    let indent = lines
        .iter()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start_matches(' ').len())
        .min()
        .unwrap_or(0);
    lines
        .iter()
        .map(|line| {
            line.get(indent..)
                .filter(|_| !line.trim().is_empty())
                .unwrap_or(line.trim_start_matches(' '))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_loses_its_shared_indentation_and_keeps_its_shape() {
        let markdown = "text\n```rust\n        if x {\n            y();\n\n        }\n```\n    kept\n";
        assert_eq!(
            dedent_listings(markdown),
            "text\n```rust\nif x {\n    y();\n\n}\n```\n    kept\n"
        );
    }

    #[test]
    fn an_unclosed_fence_is_left_alone() {
        let markdown = "```\n    a\n";
        assert_eq!(dedent_listings(markdown), markdown);
    }
}
