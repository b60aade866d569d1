//! The install step shared by `tour`, `test` and `bench`: makes sure the
//! servers, protoc and the pinned book tools are there.
//!
//! As root with apt-get, missing Debian packages are installed; otherwise the
//! exact commands are printed and the step fails. Book tools are installed
//! with `cargo install --locked` at pinned versions (no root needed).

use std::process::Command;

use crate::Result;
use crate::run::{cargo, find, step, version_of};

/// A program (or, for a path starting with `/`, a file) that comes from a
/// Debian package.
struct DebianTool {
    program: &'static str,
    package: &'static str,
}

impl DebianTool {
    fn is_missing(&self) -> bool {
        if self.program.starts_with('/') {
            !std::path::Path::new(self.program).exists()
        } else {
            find(self.program).is_none()
        }
    }
}

const DEBIAN_TOOLS: &[DebianTool] = &[
    DebianTool {
        program: "etcd",
        package: "etcd-server",
    },
    DebianTool {
        program: "etcdctl",
        package: "etcd-client",
    },
    DebianTool {
        program: "redis-server",
        package: "redis-server",
    },
    DebianTool {
        program: "redis-cli",
        package: "redis-tools",
    },
    // testkit's Sentinel setup (a primary, a replica, three Sentinels).
    DebianTool {
        program: "redis-sentinel",
        package: "redis-sentinel",
    },
    // etcd-client's build script compiles etcd's .proto files.
    DebianTool {
        program: "protoc",
        package: "protobuf-compiler",
    },
    // ...and imports protobuf's well-known types, which protoc does not ship.
    DebianTool {
        program: "/usr/include/google/protobuf/descriptor.proto",
        package: "libprotobuf-dev",
    },
    // testkit makes throwaway certificates for the TLS servers with it.
    DebianTool {
        program: "openssl",
        package: "openssl",
    },
    // The book is checked in it (bookcheck/).
    DebianTool {
        program: "chromium",
        package: "chromium",
    },
];

/// A program installed from crates.io at a pinned version.
struct CargoTool {
    program: &'static str,
    krate: &'static str,
    version: &'static str,
    /// What `--version` must contain for the installed one to be accepted.
    accepts: &'static str,
    extra_args: &'static [&'static str],
}

const BOOK_TOOLS: &[CargoTool] = &[
    CargoTool {
        program: "mdbook",
        krate: "mdbook",
        version: "0.5.4",
        accepts: "v0.5.",
        // Without the `serve`/`watch` features it builds in half the time; the
        // tour only needs `build`, and `mdbook serve` users can install it.
        extra_args: &["--no-default-features", "--features", "search"],
    },
    CargoTool {
        program: "mdbook-mermaid",
        krate: "mdbook-mermaid",
        version: "0.17.1",
        accepts: "0.17.",
        extra_args: &[],
    },
];

/// Servers, protoc and book tools.
pub fn everything() -> Result {
    servers()?;
    book_tools()
}

/// Where Debian's Go library packages put their sources (GOPATH mode).
pub const DEBIAN_GOPATH: &str = "/usr/share/gocode";

/// What `cargo xtask bench --against` needs for the Go peer, and nothing
/// else does: Go, and etcd's Go sources (its recipes) from Debian.
const GO_PEER_TOOLS: &[DebianTool] = &[
    DebianTool {
        program: "go",
        package: "golang-go",
    },
    DebianTool {
        program: "/usr/share/gocode/src/go.etcd.io/etcd/contrib/recipes/queue.go",
        package: "golang-etcd-server-dev",
    },
];

/// etcd, etcdctl, redis-server and protoc (what builds and tests need).
pub fn servers() -> Result {
    debian(DEBIAN_TOOLS)
}

/// Go and etcd's Go recipes, for the Go peer of the benchmarks.
pub fn go_peer() -> Result {
    debian(GO_PEER_TOOLS)
}

/// Installs the packages of the `tools` that are missing (as root with
/// apt-get), or says how to.
fn debian(tools: &[DebianTool]) -> Result {
    let missing: Vec<&DebianTool> = tools.iter().filter(|t| t.is_missing()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
    let programs: Vec<&str> = missing.iter().map(|t| t.program).collect();
    let install = format!(
        "apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    );
    // Safety: geteuid has no preconditions and cannot fail.
    let is_root = unsafe { libc::geteuid() } == 0;
    if !is_root || find("apt-get").is_none() {
        return Err(format!(
            "missing {}; install them with:\n    sudo apt-get update && sudo {install}\n\
             then run this command again",
            programs.join(", ")
        ));
    }
    eprintln!(
        "xtask: installing {} ({})",
        packages.join(", "),
        programs.join(", ")
    );
    step(
        "apt-get update",
        Command::new("apt-get")
            .args(["update", "-qq"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    step(
        &install,
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&packages)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    match tools.iter().find(|t| t.is_missing()) {
        Some(tool) => Err(format!(
            "`{}` is still missing after installing `{}`",
            tool.program, tool.package
        )),
        None => Ok(()),
    }
}

/// mdbook and its preprocessors at the pinned versions.
pub fn book_tools() -> Result {
    for tool in BOOK_TOOLS {
        match version_of(tool.program) {
            Some(version) if version.contains(tool.accepts) => continue,
            Some(version) => eprintln!(
                "xtask: {} is `{version}`, the book needs {}; installing {}",
                tool.program, tool.accepts, tool.version
            ),
            None => eprintln!(
                "xtask: {} is missing; installing {}",
                tool.program, tool.version
            ),
        }
        let what = format!(
            "cargo install --locked {} --version {}",
            tool.krate, tool.version
        );
        step(
            &what,
            cargo()
                .args([
                    "install",
                    "--locked",
                    "--force",
                    tool.krate,
                    "--version",
                    tool.version,
                ])
                .args(tool.extra_args),
        )
        .map_err(|e| format!("{e}\nrun `{what}` yourself to see why"))?;
        if !version_of(tool.program).is_some_and(|v| v.contains(tool.accepts)) {
            return Err(format!(
                "{} was installed but is not found at the right version: \
                 is {} on your PATH?",
                tool.program,
                crate::run::cargo_bin_dir().display()
            ));
        }
    }
    Ok(())
}
