//! Running child commands with a visible, timed step line.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::Result;

/// The `cargo` that runs us, so that `+toolchain` overrides carry through.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(crate::workspace_root());
    command
}

/// Runs `command` with inherited output, printing `==> what` before and the
/// time taken after; fails with `what` if it exits non-zero.
pub fn step(what: &str, command: &mut Command) -> Result {
    eprintln!("==> {what}");
    let started = Instant::now();
    let status = command.stdin(Stdio::null()).status().map_err(|e| {
        format!("{what}: could not start {:?}: {e}", command.get_program())
    })?;
    let took = started.elapsed().as_secs_f64();
    if status.success() {
        eprintln!("    ok ({took:.1} s)");
        Ok(())
    } else {
        Err(format!("{what} failed ({status}) after {took:.1} s"))
    }
}

/// The folders where a program may be: `PATH`, then cargo's own `bin` folder
/// (where `cargo install` puts tools, and which a fresh shell may not have on
/// its `PATH` yet).
pub fn search_path() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    dirs.push(cargo_bin_dir());
    dirs
}

/// `$CARGO_HOME/bin`, or `~/.cargo/bin`.
pub fn cargo_bin_dir() -> PathBuf {
    match std::env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home).join("bin"),
        None => {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cargo")
                .join("bin")
        }
    }
}

/// The full path of `program` on [`search_path`], if it is installed.
pub fn find(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    search_path()
        .into_iter()
        .map(|dir| dir.join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// `PATH` with cargo's `bin` folder added, for children that look up tools
/// themselves (mdbook finds its preprocessors on `PATH`).
pub fn path_with_cargo_bin() -> std::ffi::OsString {
    std::env::join_paths(search_path())
        .unwrap_or_else(|_| OsStr::new("/usr/bin").to_owned())
}

/// The first line a program prints for `--version`, or `None`.
pub fn version_of(program: &str) -> Option<String> {
    let path = find(program)?;
    let output = Command::new(path).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    text.lines().next().map(|line| line.trim().to_string())
}
