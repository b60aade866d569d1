use std::path::PathBuf;

/// What can go wrong while starting or controlling a test server.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// The server binary is not installed.
    #[error(
        "`{binary}` was not found on PATH: install the Debian package `{package}` \
         (`apt-get install {package}`), or run `cargo xtask test`, which installs it"
    )]
    MissingBinary {
        /// The program that was looked for.
        binary: &'static str,
        /// The Debian package that provides it.
        package: &'static str,
    },

    /// The server did not become healthy in time.
    #[error(
        "{what} did not become ready within {seconds} s; last lines of {log}:\n{tail}"
    )]
    NotReady {
        /// Which server, for example `etcd member 1`.
        what: String,
        /// How long we waited.
        seconds: u64,
        /// Where the server's log is.
        log: PathBuf,
        /// The end of that log.
        tail: String,
    },

    /// The server process exited while we were waiting for it.
    #[error("{what} exited early ({status}); last lines of {log}:\n{tail}")]
    Exited {
        /// Which server.
        what: String,
        /// Its exit status.
        status: String,
        /// Where the server's log is.
        log: PathBuf,
        /// The end of that log.
        tail: String,
    },

    /// A member index outside the cluster.
    #[error(
        "there is no member {index}: the cluster has {members} (indices start at 0)"
    )]
    NoSuchMember {
        /// The index asked for.
        index: usize,
        /// How many members there are.
        members: usize,
    },

    /// Only 1 or 3 members are supported (2 has no fault tolerance; more is too
    /// heavy for a 2-core machine).
    #[error("an etcd test cluster has 1 or 3 members, not {0}")]
    BadMemberCount(usize),

    /// A partition was asked of a cluster started without proxies.
    #[error(
        "this cluster has no proxies to cut: start it with `EtcdCluster::builder().behind_proxies()`"
    )]
    NotBehindProxies,

    /// A member's metrics did not say its id.
    #[error(
        "etcd member {0} did not report its id (`etcd_server_id`) on its metrics port"
    )]
    NoMemberId(usize),

    /// No member reported itself leader in time.
    #[error("no etcd member reported itself leader within {0} s")]
    NoLeader(u64),

    /// An `etcdctl` call used to set the cluster up failed.
    #[error("`etcdctl {args}` failed: {stderr}")]
    Etcdctl {
        /// The arguments given.
        args: String,
        /// What it printed on stderr.
        stderr: String,
    },

    /// An I/O error while spawning, signalling or probing a process.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl TestkitError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        TestkitError::Io {
            context: context.into(),
            source,
        }
    }
}
