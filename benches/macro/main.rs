//! Macro benchmarks against real servers: one JSON object per line on
//! stdout, progress on stderr. Run through `cargo xtask bench [FILTER]`;
//! the contract is in ../shared/BENCHMARKS.md.
//!
//! Servers come from `ETCD_ENDPOINTS` / `REDIS_URL` when set; otherwise a
//! single-member etcd is started through testkit for the run.

mod etcd;
mod patterns;
mod peers;
mod redis_lock;
mod report;
mod resilience;

use std::time::Duration;

use concurrency_patterns::distributed::etcd::{Client, EtcdConfig};
use concurrency_patterns::distributed::redis::RedisConfig;
use testkit::{EtcdCluster, RedisCluster, RedisServer};

/// Every benchmark, in the order they run. `NAME@PEER` is a peer's run of
/// the bench NAME (benches/macro/peers.rs); it prints NAME's line with a
/// `"peer"` field.
const BENCHES: &[&str] = &[
    "etcd.raw.put",
    "etcd.mutex.cycle",
    "etcd.mutex.handoff",
    "etcd.semaphore.cycle",
    // One entry prints both lines: the dequeues drain what was enqueued.
    "etcd.queue.enqueue+etcd.queue.dequeue",
    "etcd.queue.mc8",
    // One entry prints both lines.
    "etcd.queue.enqueue_many+etcd.queue.enqueue_pipelined",
    "etcd.stm.bank",
    "redis.lock.cycle",
    "redis.lock.cycle@rslock",
    "redis.semaphore.cycle",
    "redis.lock.cycle.cluster",
    "redis.lock.handoff",
    "redis.lock.handoff@rslock",
    // Measured together: one entry prints all four lines.
    "resilience.sliding_window.check+resilience.sliding_log.check+resilience.gcra.check+resilience.governor.check",
    "resilience.breaker.closed_call",
    "resilience.breaker.closed_call@failsafe",
    "resilience.breaker.closed_call@clock+atomic",
    // Measured together, in alternation: one entry prints both lines.
    "patterns.channel.hop+patterns.pipeline.item+patterns.pipeline.ordered+patterns.pipeline.lesson",
    "patterns.map.read_heavy",
    "patterns.map.exchange",
];

/// Lazily started or configured servers, shared by the benches of one run.
#[derive(Default)]
pub struct Servers {
    etcd: Option<(EtcdConfig, Option<EtcdCluster>)>,
    redis: Option<(RedisConfig, Option<RedisServer>)>,
    redis_cluster: Option<(RedisConfig, Option<RedisCluster>)>,
}

impl Servers {
    /// The Redis to use: `REDIS_URL`, or one started for this run.
    pub fn redis(&mut self) -> anyhow::Result<RedisConfig> {
        if self.redis.is_none() {
            self.redis = Some(match std::env::var("REDIS_URL") {
                Ok(url) => (RedisConfig::new(url), None),
                Err(_) => {
                    eprintln!(
                        "bench: starting a redis-server (set REDIS_URL to use yours)"
                    );
                    let server = RedisServer::start()?;
                    (RedisConfig::new(server.url()), Some(server))
                }
            });
        }
        match &self.redis {
            Some((config, _)) => Ok(config.clone()),
            None => anyhow::bail!("redis was not configured"),
        }
    }

    /// The Redis Cluster to use: `REDIS_CLUSTER_URL` (`redis+cluster://...`),
    /// or three primaries and three replicas started for this run.
    pub fn redis_cluster(&mut self) -> anyhow::Result<RedisConfig> {
        if self.redis_cluster.is_none() {
            self.redis_cluster = Some(match std::env::var("REDIS_CLUSTER_URL") {
                Ok(url) => (RedisConfig::new(url), None),
                Err(_) => {
                    eprintln!(
                        "bench: starting a Redis Cluster (set REDIS_CLUSTER_URL to use yours)"
                    );
                    let cluster = RedisCluster::start()?;
                    (RedisConfig::new(cluster.url()), Some(cluster))
                }
            });
        }
        match &self.redis_cluster {
            Some((config, _)) => Ok(config.clone()),
            None => anyhow::bail!("the redis cluster was not configured"),
        }
    }

    /// A connected client, and the member addresses whose metrics count RPCs.
    pub async fn etcd(
        &mut self,
    ) -> anyhow::Result<(Client, Vec<std::net::SocketAddr>)> {
        if self.etcd.is_none() {
            let started = if std::env::var_os("ETCD_ENDPOINTS").is_some() {
                (EtcdConfig::from_env()?, None)
            } else {
                // BENCH_ETCD_MEMBERS=3 measures on a 3-member cluster.
                let members = std::env::var("BENCH_ETCD_MEMBERS")
                    .ok()
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(1);
                eprintln!(
                    "bench: starting a {members}-member etcd (set ETCD_ENDPOINTS to use yours)"
                );
                let cluster = EtcdCluster::start(members)?;
                (EtcdConfig::new(cluster.endpoints()), Some(cluster))
            };
            self.etcd = Some(started);
        }
        let Some((config, _)) = &self.etcd else {
            anyhow::bail!("etcd was not configured");
        };
        let client = config
            .clone()
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await?;
        let addrs = config
            .endpoints()
            .iter()
            .filter_map(|e| e.trim_start_matches("http://").parse().ok())
            .collect();
        Ok((client, addrs))
    }
}

fn main() -> anyhow::Result<()> {
    // `cargo bench -- FILTER` also passes `--bench`; flags are not filters.
    // A FILTER starting with `=` selects the one entry of that exact name
    // (how `cargo xtask bench --against` runs ours and a peer apart).
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .unwrap_or_default();
    // The clients run on one thread by default: they wait on the network,
    // and on a 2-core machine shared with the servers, a multi-thread
    // runtime's cross-thread wake-ups cost more than they give (sequential
    // etcd puts ran 14 % faster on one thread). `BENCH_RUNTIME=multi`
    // measures the multi-thread runtime instead.
    let runtime = match std::env::var("BENCH_RUNTIME").as_deref() {
        Ok("multi") => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
        _ => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
    };
    runtime.block_on(async {
        let mut servers = Servers::default();
        let selected: Vec<&str> = BENCHES
            .iter()
            .copied()
            .filter(|name| match filter.strip_prefix('=') {
                Some(exact) => *name == exact,
                None => name.contains(&filter),
            })
            .collect();
        if selected.is_empty() {
            anyhow::bail!(
                "no benchmark matches `{filter}`; there are: {}",
                BENCHES.join(", ")
            );
        }
        for name in selected {
            eprintln!("bench: {name}");
            let lines = match name {
                "etcd.raw.put" => vec![etcd::raw_put(&mut servers).await?],
                "etcd.mutex.cycle" => vec![etcd::mutex_cycle(&mut servers).await?],
                "etcd.semaphore.cycle" => vec![etcd::semaphore_cycle(&mut servers).await?],
                "etcd.mutex.handoff" => vec![etcd::mutex_handoff(&mut servers).await?],
                "etcd.queue.enqueue+etcd.queue.dequeue" => {
                    etcd::queue_sequential(&mut servers).await?
                }
                "etcd.queue.mc8" => vec![etcd::queue_mc8(&mut servers).await?],
                "etcd.queue.enqueue_many+etcd.queue.enqueue_pipelined" => {
                    etcd::queue_bulk(&mut servers).await?
                }
                "etcd.stm.bank" => vec![etcd::stm_bank(&mut servers).await?],
                "redis.lock.cycle" => vec![redis_lock::cycle(&mut servers).await?],
                "redis.lock.cycle@rslock" => vec![peers::rslock_cycle(&mut servers).await?],
                "redis.semaphore.cycle" => vec![redis_lock::semaphore_cycle(&mut servers).await?],
                "redis.lock.cycle.cluster" => vec![redis_lock::cluster_cycle(&mut servers).await?],
                "redis.lock.handoff" => vec![redis_lock::handoff(&mut servers).await?],
                "redis.lock.handoff@rslock" => vec![peers::rslock_handoff(&mut servers).await?],
                "resilience.sliding_window.check+resilience.sliding_log.check+resilience.gcra.check+resilience.governor.check" => {
                    resilience::limiter_checks()?
                }
                "resilience.breaker.closed_call" => vec![resilience::breaker_closed_call()?],
                "resilience.breaker.closed_call@failsafe" => vec![peers::failsafe_closed_call()],
                "resilience.breaker.closed_call@clock+atomic" => vec![peers::clock_and_atomic()],
                "patterns.channel.hop+patterns.pipeline.item+patterns.pipeline.ordered+patterns.pipeline.lesson" => {
                    patterns::channel_hop_and_pipeline_item()
                }
                "patterns.map.read_heavy" | "patterns.map.exchange" => patterns::map_mix(name),
                other => anyhow::bail!("benchmark {other} is listed but not wired up"),
            };
            for line in lines {
                println!("{line}");
            }
        }
        Ok(())
    })
}
