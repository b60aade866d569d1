//! `cargo xtask exercises --check`: every "Break it" exercise in the book
//! does what it says. Each is one line of a chapter's "Break it" section:
//!
//! ```text
//! - In `FILE`, change `OLD` to `NEW`. Run `COMMAND`: `TEST` fails. Why …
//! ```
//!
//! For each, in a scratch copy of the repository (the files git tracks),
//! the change is made, the command run, and the named test must fail; the
//! change is then undone, and every command must pass again. The scratch
//! copy keeps its own target directory, so each exercise recompiles only
//! what its change touches.

use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::run::cargo;
use crate::{Result, leftovers};

/// One exercise, as the book states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exercise {
    pub chapter: String,
    pub file: String,
    pub old: String,
    pub new: String,
    pub command: String,
    pub test: String,
}

/// The exercises of one chapter's text: the bullets of its "Break it"
/// section that follow the pattern (continuation lines joined).
pub fn parse(chapter: &str, text: &str) -> Result<Vec<Exercise>> {
    let text = format!("\n{text}");
    let Some(start) = text.find("\n## Break it") else {
        return Ok(Vec::new());
    };
    let section = &text[start + 1..];
    let section = section[3..]
        .find("\n## ")
        .map_or(section, |end| &section[..end + 3]);
    let mut bullets: Vec<String> = Vec::new();
    for line in section.lines().skip(1) {
        if let Some(rest) = line.strip_prefix("- ") {
            bullets.push(rest.to_string());
        } else if line.starts_with("  ")
            && !line.trim().is_empty()
            && let Some(last) = bullets.last_mut()
        {
            last.push(' ');
            last.push_str(line.trim());
        }
    }
    bullets
        .iter()
        .filter(|b| b.starts_with("In `"))
        .map(|bullet| {
            let spans: Vec<&str> = bullet.split('`').skip(1).step_by(2).collect();
            let [file, old, new, command, test, ..] = spans[..] else {
                return Err(format!(
                    "{chapter}: a Break it exercise needs `FILE`, `OLD`, `NEW`, `COMMAND` and `TEST`: {bullet}"
                ));
            };
            Ok(Exercise {
                chapter: chapter.to_string(),
                file: file.to_string(),
                old: old.to_string(),
                new: new.to_string(),
                command: command.to_string(),
                test: test.to_string(),
            })
        })
        .collect()
}

/// Every exercise of every chapter, in file order.
pub fn all(root: &Path) -> Result<Vec<Exercise>> {
    let dir = root.join("book/src");
    let mut chapters: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    chapters.sort();
    let mut exercises = Vec::new();
    for path in chapters {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        exercises.extend(parse(&name, &text)?);
    }
    Ok(exercises)
}

/// Copies the files git tracks into `to` (replacing what was there).
fn scratch_copy(root: &Path, to: &Path) -> Result {
    let listed = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("git ls-files: {e}"))?;
    if !listed.status.success() {
        return Err("git ls-files failed: the exercises need a git checkout".into());
    }
    for file in listed.stdout.split(|b| *b == 0).filter(|f| !f.is_empty()) {
        let file = String::from_utf8_lossy(file).to_string();
        let (from, into) = (root.join(&file), to.join(&file));
        if let Some(parent) = into.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        if from.is_file() {
            std::fs::copy(&from, &into).map_err(|e| format!("copying {file}: {e}"))?;
        }
    }
    Ok(())
}

/// Runs `command` (a `cargo …` line, perhaps after `NAME=value` settings
/// of the environment) in the scratch copy; its success and its output.
fn run(scratch: &Path, target: &Path, command: &str) -> Result<(bool, String)> {
    let (settings, words) = split_command(command)?;
    // Settings such as RUSTFLAGS change every artifact: they get a target
    // directory of their own, so the plain one keeps its cache.
    let target = if settings.is_empty() {
        target.to_path_buf()
    } else {
        let name: String = settings
            .iter()
            .flat_map(|(k, v)| [k.as_str(), v.as_str()])
            .collect::<Vec<_>>()
            .join("-")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        target.with_file_name(format!("target-{name}"))
    };
    // The output goes to a file, read when the command ends: a pipe would
    // need a reader while we wait with a time limit.
    let log_path = target.with_file_name("command.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let log_too = log
        .try_clone()
        .map_err(|e| format!("{}: {e}", log_path.display()))?;
    let run = format!("exercises{}", std::process::id());
    let mut child = cargo()
        .args(words)
        .envs(settings)
        .current_dir(scratch)
        .env("CARGO_TARGET_DIR", target)
        .env(testkit::RUN_VAR, &run)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_too)
        .process_group(0)
        .spawn()
        .map_err(|e| format!("{command}: {e}"))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait().map_err(|e| format!("{command}: {e}"))? {
            Some(status) => break Some(status),
            None if started.elapsed() > COMMAND_TIME_LIMIT => {
                // The whole group: cargo and the test binary it runs.
                if let Ok(group) = libc::pid_t::try_from(child.id()) {
                    // Safety: kill(2) has no memory-safety preconditions.
                    unsafe { libc::kill(-group, libc::SIGKILL) };
                }
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    // Servers of a test that was killed (or that leaked them) go too.
    leftovers::kill_testkit_processes(&run);
    leftovers::remove_temp_dirs(&run);
    let mut text = std::fs::read_to_string(&log_path).unwrap_or_default();
    match status {
        Some(status) => Ok((status.success(), text)),
        None => {
            text.push_str(&format!(
                "\nstopped after {} s: `{command}` ran past the exercises' time limit",
                COMMAND_TIME_LIMIT.as_secs()
            ));
            Ok((false, text))
        }
    }
}

/// How long one exercise's command may run. A broken line can make a test
/// wait for ever; past this the command is stopped and counts as failed.
const COMMAND_TIME_LIMIT: Duration = Duration::from_secs(600);

/// `NAME=value` settings of the environment.
type Settings = Vec<(String, String)>;

/// An exercise's command as its settings and the words after `cargo`.
fn split_command(command: &str) -> Result<(Settings, Vec<&str>)> {
    let mut words = command.split_whitespace().peekable();
    let mut settings = Vec::new();
    while let Some((name, value)) = words.peek().and_then(|w| w.split_once('=')) {
        settings.push((name.to_string(), value.to_string()));
        words.next();
    }
    if words.next() != Some("cargo") {
        return Err(format!(
            "an exercise's command must be a cargo command: {command}"
        ));
    }
    Ok((settings, words.collect()))
}

/// `cargo xtask exercises --check`.
pub fn check() -> Result {
    let root = crate::workspace_root();
    let exercises = all(&root)?;
    if exercises.is_empty() {
        return Err("no Break it exercises found in book/src".into());
    }
    let base = crate::target_dir().join("exercises");
    let scratch = base.join("work");
    let _ = std::fs::remove_dir_all(&scratch);
    scratch_copy(&root, &scratch)?;
    let target = base.join("target");
    let mut failures = Vec::new();
    for exercise in &exercises {
        let path = scratch.join(&exercise.file);
        let original = std::fs::read_to_string(&path)
            .map_err(|e| format!("{}: {}: {e}", exercise.chapter, exercise.file))?;
        let found = original.matches(exercise.old.as_str()).count();
        if found != 1 {
            failures.push(format!(
                "{}: `{}` occurs {found} times in {} (it must occur once)",
                exercise.chapter, exercise.old, exercise.file
            ));
            continue;
        }
        std::fs::write(&path, original.replacen(&exercise.old, &exercise.new, 1))
            .map_err(|e| format!("{}: {e}", exercise.file))?;
        eprintln!(
            "==> {}: `{}` → `{}` in {}; `{}` should fail",
            exercise.chapter, exercise.old, exercise.new, exercise.file, exercise.test
        );
        let outcome = run(&scratch, &target, &exercise.command);
        std::fs::write(&path, &original)
            .map_err(|e| format!("{}: {e}", exercise.file))?;
        let (passed, output) = outcome?;
        let named_failed = output.lines().any(|line| {
            line.contains(&exercise.test)
                && (line.contains("FAILED") || line.trim_start().starts_with("----"))
        });
        if passed || !named_failed {
            failures.push(format!(
                "{}: after `{}` → `{}`, `{}` {}",
                exercise.chapter,
                exercise.old,
                exercise.new,
                exercise.command,
                if passed {
                    "still passed"
                } else if output.contains("ran past the exercises' time limit") {
                    "ran past the time limit"
                } else {
                    "failed, but not at the named test"
                }
            ));
        }
    }
    let commands: BTreeSet<&str> =
        exercises.iter().map(|e| e.command.as_str()).collect();
    for command in commands {
        eprintln!("==> without the changes: `{command}` should pass");
        let (passed, output) = run(&scratch, &target, command)?;
        if !passed {
            let tail: Vec<&str> = output.lines().rev().take(20).collect();
            failures.push(format!(
                "`{command}` fails without any change:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
    }
    if failures.is_empty() {
        eprintln!("    {} exercises break what they say", exercises.len());
        Ok(())
    } else {
        Err(format!("Break it exercises:\n{}", failures.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exercise_is_read_from_its_bullet_wrapped_or_not() {
        let text = "# T\n\n## Break it\n\n- In `a/b.rs`, change `x > 0` to `x >= 0`.\n  Run `cargo test -p c`: `t::name` fails. Because.\n- A remark.\n\n## Next\n- In `z`, nothing\n";
        let found = parse("t.md", text).unwrap();
        assert_eq!(
            found,
            [Exercise {
                chapter: "t.md".into(),
                file: "a/b.rs".into(),
                old: "x > 0".into(),
                new: "x >= 0".into(),
                command: "cargo test -p c".into(),
                test: "t::name".into(),
            }]
        );
        assert!(parse("t.md", "## Break it\n- In `a`, change `b`.\n").is_err());
        assert!(parse("t.md", "no section").unwrap().is_empty());
    }

    #[test]
    fn a_command_may_set_the_environment_before_cargo() {
        let (settings, words) =
            split_command("RUSTFLAGS=--cfg=loom N=3 cargo test -p x").unwrap();
        assert_eq!(
            settings,
            [
                ("RUSTFLAGS".to_string(), "--cfg=loom".to_string()),
                ("N".to_string(), "3".to_string())
            ]
        );
        assert_eq!(words, ["test", "-p", "x"]);
        assert!(split_command("make test").is_err());
        assert!(split_command("A=1 make").is_err());
    }
}
