//! Checks that the library crates work for someone outside this workspace:
//! their docs build without warnings, they package, and a crate that
//! depends on them (`tests/consumer`) builds — with every feature, and with
//! Redis only while `protoc` is out of reach.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Result;
use crate::run::{cargo, step};

/// The library crates, in the order they depend on each other.
const LIBRARIES: &[&str] = &["cpr-resilience", "cpr-patterns", "cpr-distributed"];

/// What a Redis-only build must not pull in.
const ETCD_ONLY_CRATES: &[&str] = &["etcd-client", "prost", "tonic"];

pub fn check() -> Result {
    step(
        "cargo doc -D warnings (broken intra-doc links fail)",
        cargo()
            .args([
                "doc",
                "--workspace",
                "--no-deps",
                "--all-features",
                "--quiet",
            ])
            .env("RUSTDOCFLAGS", "-D warnings"),
    )?;
    for features in [
        &["--no-default-features", "--features", "redis"][..],
        &["--no-default-features", "--features", "etcd"],
    ] {
        step(
            &format!("cargo clippy -p cpr-distributed {}", features.join(" ")),
            cargo()
                .args(["clippy", "-p", "cpr-distributed", "--quiet"])
                .args(features)
                .args(["--", "-D", "warnings"]),
        )?;
    }
    let mut package = cargo();
    package.args(["package", "--quiet", "--allow-dirty"]);
    for library in LIBRARIES {
        package.args(["-p", library]);
    }
    step(
        "cargo package (each library, in dependency order)",
        &mut package,
    )?;
    outside_user()
}

/// Where the README's snippets say the checkout is.
const README_CHECKOUT: &str = "/path/to/concurrency-patterns";

/// A new project whose dependencies are the README's "Use the crates"
/// snippet, as a reader would paste it (with this checkout's path), built.
fn readme_snippet(target: &Path) -> Result {
    let root = crate::workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md"))
        .map_err(|e| format!("reading README.md: {e}"))?;
    let section = readme
        .split("## Use the crates")
        .nth(1)
        .ok_or("README.md has no \"Use the crates\" section")?;
    let snippet = section
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .ok_or("README.md's \"Use the crates\" has no ```toml snippet")?;
    if !snippet.contains(README_CHECKOUT) {
        return Err(format!(
            "the README's snippet no longer says {README_CHECKOUT}"
        ));
    }
    let project = target.join("readme-project");
    std::fs::create_dir_all(project.join("src"))
        .map_err(|e| format!("{}: {e}", project.display()))?;
    let manifest = format!(
        "[package]\nname = \"readme-project\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\n\
         [workspace]\n\n{}",
        snippet.replace(README_CHECKOUT, &root.to_string_lossy())
    );
    let main = "//! Written by `cargo xtask test` from the README's snippet.\n\
                fn main() {\n    \
                let _ = cpr_resilience::SlidingLog::new;\n    \
                let _ = cpr_patterns::pool::WorkerPool::<u8>::new;\n    \
                let _ = cpr_distributed::etcd::EtcdConfig::from_env;\n    \
                let _ = cpr_distributed::redis::RedisConfig::from_env;\n\
                }\n";
    let write = |file: PathBuf, text: &str| {
        std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))
    };
    write(project.join("Cargo.toml"), &manifest)?;
    write(project.join("src/main.rs"), main)?;
    std::fs::copy(root.join("Cargo.lock"), project.join("Cargo.lock"))
        .map_err(|e| format!("copying Cargo.lock: {e}"))?;
    step(
        "a new project with the README's dependency lines builds",
        &mut consumer(&project.join("Cargo.toml"), target),
    )
}

/// Builds `tests/consumer` twice and checks what the Redis-only build holds.
fn outside_user() -> Result {
    let root = crate::workspace_root();
    let manifest = root.join("tests/consumer/Cargo.toml");
    let target = crate::target_dir().join("consumer");
    // The workspace's lock file, so that the consumer builds with the
    // versions the project is tested with (cargo adds what is missing).
    std::fs::copy(
        root.join("Cargo.lock"),
        root.join("tests/consumer/Cargo.lock"),
    )
    .map_err(|e| format!("copying Cargo.lock for tests/consumer: {e}"))?;
    step(
        "an outside crate builds with every feature",
        consumer(&manifest, &target).arg("--all-features"),
    )?;
    readme_snippet(&target)?;
    let no_protoc = path_without("protoc", &target.join("path-without-protoc"))?;
    step(
        "an outside crate builds with Redis only, without protoc",
        consumer(&manifest, &target)
            .arg("--no-default-features")
            .env("PATH", &no_protoc)
            .env("PROTOC", target.join("no-such-protoc")),
    )?;
    let tree = cargo()
        .args([
            "tree",
            "--quiet",
            "-e",
            "normal",
            "--no-default-features",
            "--manifest-path",
        ])
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .map_err(|e| format!("cargo tree: {e}"))?;
    if !tree.status.success() {
        return Err(format!(
            "cargo tree for tests/consumer failed: {}",
            String::from_utf8_lossy(&tree.stderr)
        ));
    }
    let tree = String::from_utf8_lossy(&tree.stdout);
    let pulled: Vec<&str> = ETCD_ONLY_CRATES
        .iter()
        .copied()
        .filter(|name| tree.lines().any(|line| line.contains(&format!("{name} v"))))
        .collect();
    if !pulled.is_empty() {
        return Err(format!(
            "a Redis-only build of cpr-distributed pulls in {}",
            pulled.join(", ")
        ));
    }
    eprintln!(
        "    the Redis-only build holds none of {}",
        ETCD_ONLY_CRATES.join(", ")
    );
    Ok(())
}

fn consumer(manifest: &Path, target: &Path) -> Command {
    let mut command = cargo();
    command
        .args(["build", "--quiet", "--manifest-path"])
        .arg(manifest)
        .env("CARGO_TARGET_DIR", target);
    command
}

/// A folder of links to every program on `PATH` but `program`, to use as
/// `PATH` for a build that must not find it.
fn path_without(program: &str, folder: &Path) -> Result<PathBuf> {
    let _ = std::fs::remove_dir_all(folder);
    std::fs::create_dir_all(folder)
        .map_err(|e| format!("{}: {e}", folder.display()))?;
    for dir in crate::run::search_path() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let link = folder.join(&name);
            if name == program || link.exists() {
                continue;
            }
            // The first of a name on PATH wins, as for the shell.
            let _ = std::os::unix::fs::symlink(entry.path(), &link);
        }
    }
    Ok(folder.to_path_buf())
}
