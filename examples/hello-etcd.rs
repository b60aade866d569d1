//! Hello, etcd: connect, write a key, read it back.
//!
//! The smallest end-to-end check that your etcd is reachable, and the shape
//! every etcd example in this book follows: configuration from the
//! environment, a bounded connect, and an error that says what to do.
//!
//! Run `cargo xtask services up` (a local etcd on 127.0.0.1:2379), then:
//!
//!     cargo run --example hello-etcd
//!     cargo run --example hello-etcd -- --addr 127.0.0.1:2379 --name greeting
//!
//! Or point it at your own cluster: `ETCD_ENDPOINTS=host1:2379,host2:2379`
//! (and `ETCD_USER` / `ETCD_PASSWORD` if auth is on).
//!
//! The other etcd examples connect through `common::EtcdFlags`; this one
//! spells the connection out, since showing it is its point.

use std::process::ExitCode;

use clap::Parser;
use concurrency_patterns::distributed::etcd::EtcdConfig;

/// Connect to etcd, put a key, read it back.
#[derive(Parser)]
struct Args {
    /// Comma-separated etcd endpoints (default: ETCD_ENDPOINTS, else 127.0.0.1:2379).
    #[arg(long, env = "ETCD_ENDPOINTS")]
    addr: Option<String>,
    /// The key to write, under the `hello-etcd/` prefix.
    #[arg(long, default_value = "greeting")]
    name: String,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hello-etcd: {error}");
            ExitCode::FAILURE
        }
    }
}

// ANCHOR: hello
async fn run(args: Args) -> anyhow::Result<()> {
    // ETCD_ENDPOINTS, ETCD_USER and ETCD_PASSWORD, with `--addr` taking precedence.
    let mut config = EtcdConfig::from_env()?;
    if let Some(addr) = &args.addr {
        config = config.endpoints_from_list(addr);
    }
    // Fails within the connect timeout (5 s) if nobody answers, with a message
    // that says to run `cargo xtask services up` or set ETCD_ENDPOINTS.
    let mut client = config.connect().await?;

    let key = format!("hello-etcd/{}", args.name);
    let written = client.put(key.as_str(), "hello from Rust", None).await?;
    // Every write gets a revision: a global, strictly increasing version
    // number. The recipes in later chapters order things by it.
    let revision = written.header().map(|h| h.revision()).unwrap_or_default();

    let read = client.get(key.as_str(), None).await?;
    let value = read.kvs().first().map(|kv| kv.value_str()).transpose()?;
    println!("{key} = {value:?} (written at revision {revision})");
    anyhow::ensure!(
        value == Some("hello from Rust"),
        "read back {value:?}, not what was written"
    );
    Ok(())
}
// ANCHOR_END: hello
