use std::path::{Path, PathBuf};

use crate::TestkitError;

/// A server or tool binary that testkit runs, with the Debian package that
/// provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// The etcd server (Debian `etcd-server`).
    Etcd,
    /// The etcd command-line client (Debian `etcd-client`).
    Etcdctl,
    /// The Redis server (Debian `redis-server`).
    RedisServer,
    /// Redis Sentinel (Debian `redis-sentinel`).
    RedisSentinel,
    /// The Redis command-line client, which creates clusters (Debian `redis-tools`).
    RedisCli,
    /// The OpenSSL command, to make test certificates (Debian `openssl`).
    Openssl,
    /// The browser the book is checked in (Debian `chromium`).
    Chromium,
}

impl Binary {
    /// The program's file name.
    pub fn program(self) -> &'static str {
        match self {
            Binary::Etcd => "etcd",
            Binary::Etcdctl => "etcdctl",
            Binary::RedisServer => "redis-server",
            Binary::RedisSentinel => "redis-sentinel",
            Binary::RedisCli => "redis-cli",
            Binary::Openssl => "openssl",
            Binary::Chromium => "chromium",
        }
    }

    /// The Debian package that installs it.
    pub fn debian_package(self) -> &'static str {
        match self {
            Binary::Etcd => "etcd-server",
            Binary::Etcdctl => "etcd-client",
            Binary::RedisServer => "redis-server",
            Binary::RedisSentinel => "redis-sentinel",
            Binary::RedisCli => "redis-tools",
            Binary::Openssl => "openssl",
            Binary::Chromium => "chromium",
        }
    }
}

/// Finds `binary` on `PATH`, or says which Debian package to install.
pub fn find_binary(binary: Binary) -> Result<PathBuf, TestkitError> {
    find_in(binary, &std::env::var_os("PATH").unwrap_or_default())
}

fn find_in(binary: Binary, path: &std::ffi::OsStr) -> Result<PathBuf, TestkitError> {
    std::env::split_paths(path)
        .map(|dir| dir.join(binary.program()))
        .find(|candidate| is_executable(candidate))
        .ok_or(TestkitError::MissingBinary {
            binary: binary.program(),
            package: binary.debian_package(),
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_names_its_debian_package() {
        let error =
            find_in(Binary::Etcd, std::ffi::OsStr::new("/nonexistent")).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("etcd-server"), "{message}");
        assert!(message.contains("apt-get install"), "{message}");
    }
}
