//! Benchmarks on etcd.

use std::net::SocketAddr;
use std::time::Instant;

use crate::Servers;
use crate::report::Samples;

/// Operations per etcd benchmark: about a second at the commit limit.
const N: usize = 2000;

/// gRPC calls started on all members, for `rpcs_per_op`.
fn grpc_calls(addrs: &[SocketAddr]) -> u64 {
    addrs
        .iter()
        .filter_map(|a| testkit::etcd_grpc_calls(*a))
        .sum()
}

/// `etcd.raw.put`: sequential puts to one key. Every put is one Raft commit
/// and one fsync, so this is the ceiling for anything that writes.
pub async fn raw_put(servers: &mut Servers) -> anyhow::Result<String> {
    let (mut client, addrs) = servers.etcd().await?;
    let key = "bench/raw/put";
    for _ in 0..50 {
        client.put(key, "warm-up", None).await?;
    }
    let calls_before = grpc_calls(&addrs);
    let mut latencies = Vec::with_capacity(N);
    let started = Instant::now();
    for i in 0..N {
        let t = Instant::now();
        client.put(key, i.to_string(), None).await?;
        latencies.push(t.elapsed());
    }
    let elapsed = started.elapsed();
    let rpcs = (grpc_calls(&addrs) - calls_before) as f64 / N as f64;
    client.delete(key, None).await?;
    Ok(Samples::new(latencies, elapsed).line("etcd.raw.put", &[("rpcs_per_op", rpcs)]))
}
