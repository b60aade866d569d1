//! `cargo xtask bench --against [FILTER] [--rounds N]`: each of our
//! benchmarks beside its peer, in fresh processes, alternating which goes
//! first, on the same servers, N rounds; one JSON line per pair and unit:
//!
//! ```text
//! {"bench":"etcd.queue.enqueue","peer":"go-recipes","ours":2150.2,"theirs":2101.7,
//!  "unit":"ops_per_s","ratio":1.02,"ratio_median":1.01,"ratio_ci95":[0.97,1.07],"rounds":10}
//! ```
//!
//! `ratio` is ours over theirs for a rate and theirs over ours for a time,
//! so above 1 is better for us either way. The Go peer (etcd's recipes) is
//! built from `benches/peers/go-recipes/` with Debian's Go, installed only
//! when a comparison asks for it; the Rust peers are entries of the macro
//! bench binary (`benches/macro/peers.rs`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;
use testkit::{EtcdCluster, RedisServer};

use crate::run::{cargo, step};
use crate::{Result, ensure, target_dir, workspace_root};

/// What prints a line: an entry of the macro bench binary (ours or a Rust
/// peer), or the Go peer run with `-bench ENTRY`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Run {
    Macro(&'static str),
    Go(&'static str),
}

/// One comparison: the line named `bench` from `ours`, and the line named
/// `theirs_bench` from `theirs` (the same name, unless the peer is another
/// line of our own run, such as governor beside our limiters).
pub struct Pair {
    pub bench: &'static str,
    pub ours: Run,
    pub peer: &'static str,
    pub theirs: Run,
    pub theirs_bench: &'static str,
    /// The fields compared.
    pub units: &'static [&'static str],
}

const QUEUE: &str = "etcd.queue.enqueue+etcd.queue.dequeue";
const BULK: &str = "etcd.queue.enqueue_many+etcd.queue.enqueue_pipelined";
const LIMITERS: &str = "resilience.sliding_window.check+resilience.sliding_log.check+resilience.gcra.check+resilience.governor.check";
const PIPELINE: &str = "patterns.channel.hop+patterns.pipeline.item+patterns.pipeline.ordered+patterns.pipeline.lesson";
const OPS: &[&str] = &["ops_per_s"];
const NS: &[&str] = &["ns_per_op"];
const TAIL: &[&str] = &["p50_us", "p99_us"];

/// A bench against the same bench in etcd's Go recipes.
const fn go(
    bench: &'static str,
    entry: &'static str,
    units: &'static [&'static str],
) -> Pair {
    Pair {
        bench,
        ours: Run::Macro(entry),
        peer: "go-recipes",
        theirs: Run::Go(entry),
        theirs_bench: bench,
        units,
    }
}

/// A bench of ours against another bench of etcd's Go recipes (`peer`
/// names the variant, e.g. how many goroutines).
const fn go_other(
    bench: &'static str,
    entry: &'static str,
    peer: &'static str,
    go_entry: &'static str,
    go_bench: &'static str,
) -> Pair {
    Pair {
        bench,
        ours: Run::Macro(entry),
        peer,
        theirs: Run::Go(go_entry),
        theirs_bench: go_bench,
        units: OPS,
    }
}

/// A bench against a Rust peer's entry `BENCH@PEER`.
const fn rust(
    bench: &'static str,
    peer: &'static str,
    peer_entry: &'static str,
    units: &'static [&'static str],
) -> Pair {
    Pair {
        bench,
        ours: Run::Macro(bench),
        peer,
        theirs: Run::Macro(peer_entry),
        theirs_bench: bench,
        units,
    }
}

/// A bench against another line of the same run.
const fn same_run(
    bench: &'static str,
    entry: &'static str,
    reference: &'static str,
) -> Pair {
    Pair {
        bench,
        ours: Run::Macro(entry),
        peer: reference,
        theirs: Run::Macro(entry),
        theirs_bench: reference,
        units: NS,
    }
}

/// Every comparison, in the order they are printed.
pub const PAIRS: &[Pair] = &[
    go("etcd.raw.put", "etcd.raw.put", OPS),
    go("etcd.mutex.cycle", "etcd.mutex.cycle", OPS),
    go("etcd.mutex.handoff", "etcd.mutex.handoff", TAIL),
    go("etcd.queue.enqueue", QUEUE, OPS),
    go("etcd.queue.dequeue", QUEUE, OPS),
    go("etcd.queue.mc8", "etcd.queue.mc8", OPS),
    go_other(
        "etcd.queue.enqueue_many",
        BULK,
        "go-recipes",
        QUEUE,
        "etcd.queue.enqueue",
    ),
    go_other(
        "etcd.queue.enqueue_many",
        BULK,
        "go-recipes-x8",
        "etcd.queue.enqueue_x8",
        "etcd.queue.enqueue_x8",
    ),
    go_other(
        "etcd.queue.enqueue_pipelined",
        BULK,
        "go-recipes",
        QUEUE,
        "etcd.queue.enqueue",
    ),
    go_other(
        "etcd.queue.enqueue_pipelined",
        BULK,
        "go-recipes-x8",
        "etcd.queue.enqueue_x8",
        "etcd.queue.enqueue_x8",
    ),
    go("etcd.stm.bank", "etcd.stm.bank", OPS),
    rust("redis.lock.cycle", "rslock", "redis.lock.cycle@rslock", OPS),
    rust(
        "redis.lock.handoff",
        "rslock",
        "redis.lock.handoff@rslock",
        &["ops_per_s", "p50_us", "p99_us"],
    ),
    rust(
        "resilience.breaker.closed_call",
        "failsafe",
        "resilience.breaker.closed_call@failsafe",
        NS,
    ),
    rust(
        "resilience.breaker.closed_call",
        "clock+atomic",
        "resilience.breaker.closed_call@clock+atomic",
        NS,
    ),
    same_run(
        "resilience.sliding_window.check",
        LIMITERS,
        "resilience.governor.check",
    ),
    same_run(
        "resilience.sliding_log.check",
        LIMITERS,
        "resilience.governor.check",
    ),
    same_run(
        "resilience.gcra.check",
        LIMITERS,
        "resilience.governor.check",
    ),
    same_run(
        "patterns.pipeline.item",
        PIPELINE,
        "patterns.pipeline.lesson",
    ),
    same_run(
        "patterns.pipeline.ordered",
        PIPELINE,
        "patterns.pipeline.lesson",
    ),
    same_run("patterns.pipeline.item", PIPELINE, "patterns.channel.hop"),
];

/// Whether a larger value of `unit` is better (a rate), or a smaller one (a time).
fn higher_is_better(unit: &str) -> bool {
    unit.starts_with("ops_")
}

/// Two-sided 95 % critical values of Student's t for 1..=30 degrees of freedom.
const T95: [f64; 30] = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201,
    2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069,
    2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
];

/// Ours beside theirs over the rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub ours: f64,
    pub theirs: f64,
    /// Of the means, oriented so that above 1 is better for us.
    pub ratio: f64,
    /// The median of the per-round ratios.
    pub median: f64,
    /// A 95 % interval of the ratio (t on the logs of the per-round ratios);
    /// `None` with fewer than two rounds.
    pub ci95: Option<(f64, f64)>,
    pub rounds: usize,
}

/// Compares paired rounds: `ours[i]` and `theirs[i]` ran in round `i`.
pub fn compare(
    ours: &[f64],
    theirs: &[f64],
    higher_better: bool,
) -> Option<Comparison> {
    let n = ours.len().min(theirs.len());
    if n == 0 {
        return None;
    }
    let mean = |v: &[f64]| v[..n].iter().sum::<f64>() / n as f64;
    let oriented = |o: f64, t: f64| if higher_better { o / t } else { t / o };
    let (ours_mean, theirs_mean) = (mean(ours), mean(theirs));
    let mut ratios: Vec<f64> = (0..n).map(|i| oriented(ours[i], theirs[i])).collect();
    ratios.sort_by(f64::total_cmp);
    let median = if n % 2 == 1 {
        ratios[n / 2]
    } else {
        (ratios[n / 2 - 1] + ratios[n / 2]) / 2.0
    };
    let ci95 = (n >= 2).then(|| {
        let logs: Vec<f64> = ratios.iter().map(|r| r.ln()).collect();
        let m = logs.iter().sum::<f64>() / n as f64;
        let var = logs.iter().map(|l| (l - m).powi(2)).sum::<f64>() / (n - 1) as f64;
        let t = T95.get(n - 2).copied().unwrap_or(1.96);
        let half = t * (var / n as f64).sqrt();
        ((m - half).exp(), (m + half).exp())
    });
    Some(Comparison {
        ours: ours_mean,
        theirs: theirs_mean,
        ratio: oriented(ours_mean, theirs_mean),
        median,
        ci95,
        rounds: n,
    })
}

/// The servers every process of a comparison uses: `ETCD_ENDPOINTS` /
/// `REDIS_URL` when set, otherwise started here for the whole run.
pub struct Servers {
    pub etcd_endpoints: String,
    pub etcd_members: usize,
    pub redis_url: String,
    _etcd: Option<EtcdCluster>,
    _redis: Option<RedisServer>,
}

impl Servers {
    pub fn start(members: usize) -> Result<Servers> {
        let (etcd_endpoints, etcd_members, etcd) = match std::env::var("ETCD_ENDPOINTS")
        {
            Ok(endpoints) => {
                let members = endpoints.split(',').count();
                (endpoints, members, None)
            }
            Err(_) => {
                eprintln!("xtask: starting a {members}-member etcd for the comparison");
                let cluster = EtcdCluster::start(members)
                    .map_err(|e| format!("starting etcd: {e}"))?;
                (cluster.endpoints_env(), members, Some(cluster))
            }
        };
        let (redis_url, redis) = match std::env::var("REDIS_URL") {
            Ok(url) => (url, None),
            Err(_) => {
                let server =
                    RedisServer::start().map_err(|e| format!("starting redis: {e}"))?;
                (server.url(), Some(server))
            }
        };
        Ok(Servers {
            etcd_endpoints,
            etcd_members,
            redis_url,
            _etcd: etcd,
            _redis: redis,
        })
    }
}

/// The built programs that print the lines.
pub struct Instruments {
    macro_bench: PathBuf,
    go_peer: Option<PathBuf>,
}

impl Instruments {
    /// Builds the macro bench binary, and the Go peer if `with_go`.
    pub fn build(with_go: bool) -> Result<Instruments> {
        let macro_bench = build_macro_bench()?;
        let go_peer = if with_go {
            Some(build_go_peer()?)
        } else {
            None
        };
        Ok(Instruments {
            macro_bench,
            go_peer,
        })
    }

    /// Runs `run` once against `servers`; the JSON lines it printed.
    pub fn run(&self, run: Run, servers: &Servers) -> Result<Vec<Value>> {
        let mut command = match run {
            Run::Macro(entry) => {
                let mut command = Command::new(&self.macro_bench);
                command.arg(format!("={entry}"));
                command
            }
            Run::Go(entry) => {
                let Some(go_peer) = &self.go_peer else {
                    return Err("the Go peer was not built".into());
                };
                let mut command = Command::new(go_peer);
                let endpoints: Vec<&str> = servers
                    .etcd_endpoints
                    .split(',')
                    .map(|e| e.trim_start_matches("http://"))
                    .collect();
                command.args(["-endpoints", &endpoints.join(","), "-bench", entry]);
                command
            }
        };
        command
            .env("ETCD_ENDPOINTS", &servers.etcd_endpoints)
            .env("REDIS_URL", &servers.redis_url)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit());
        let output = command
            .output()
            .map_err(|e| format!("{run:?}: could not start: {e}"))?;
        if !output.status.success() {
            return Err(format!("{run:?} failed ({})", output.status));
        }
        let text = String::from_utf8_lossy(&output.stdout);
        text.lines()
            .filter(|line| !line.trim().is_empty())
            .map(|line| {
                serde_json::from_str(line)
                    .map_err(|e| format!("{run:?} printed `{line}`, not JSON: {e}"))
            })
            .collect()
    }
}

/// `cargo bench --no-run` for the macro benches; the binary's path.
fn build_macro_bench() -> Result<PathBuf> {
    eprintln!("==> building the macro benchmarks (release)");
    let output = cargo()
        .args([
            "bench",
            "--no-run",
            "--quiet",
            "--message-format=json-render-diagnostics",
            "-p",
            "concurrency-patterns",
            "--bench",
            "macro",
        ])
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cargo bench --no-run: {e}"))?;
    if !output.status.success() {
        return Err("building the macro benchmarks failed".into());
    }
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|message| message["target"]["name"] == "macro")
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| "cargo did not say where the macro bench binary is".into())
}

/// Builds `benches/peers/go-recipes` in GOPATH mode against Debian's etcd
/// source, under `target/peers/`.
fn build_go_peer() -> Result<PathBuf> {
    ensure::go_peer()?;
    let dir = target_dir().join("peers");
    let package = dir.join("gopath/src/go-recipes-peer");
    std::fs::create_dir_all(&package)
        .map_err(|e| format!("{}: {e}", package.display()))?;
    let source = workspace_root().join("benches/peers/go-recipes/main.go");
    std::fs::copy(&source, package.join("main.go"))
        .map_err(|e| format!("copying {}: {e}", source.display()))?;
    let binary = dir.join("go-recipes-peer");
    let gopath = format!("{}:{}", dir.join("gopath").display(), ensure::DEBIAN_GOPATH);
    step(
        "go build benches/peers/go-recipes",
        Command::new("go")
            .args(["build", "-o"])
            .arg(&binary)
            .arg("go-recipes-peer")
            .env("GO111MODULE", "off")
            .env("GOPATH", gopath)
            .env("GOCACHE", dir.join("go-cache"))
            .env("GOFLAGS", "")
            .current_dir(&dir),
    )?;
    Ok(binary)
}

/// The lines of every run of every round, by run.
pub type Rounds = HashMap<Run, Vec<Vec<Value>>>;

/// Runs each of `runs` once per round, in the given order on even rounds
/// and reversed on odd ones, so that neither side always goes first.
pub fn run_rounds(
    instruments: &Instruments,
    servers: &Servers,
    runs: &[Run],
    rounds: usize,
) -> Result<Rounds> {
    let mut results: Rounds = HashMap::new();
    for round in 0..rounds {
        eprintln!("xtask: round {} of {rounds}", round + 1);
        let mut order = runs.to_vec();
        if round % 2 == 1 {
            order.reverse();
        }
        for run in order {
            let lines = instruments.run(run, servers)?;
            results.entry(run).or_default().push(lines);
        }
    }
    Ok(results)
}

/// The value of `unit` in the line named `bench` of each round of `run`.
pub fn values(results: &Rounds, run: Run, bench: &str, unit: &str) -> Vec<f64> {
    results
        .get(&run)
        .map(|rounds| {
            rounds
                .iter()
                .filter_map(|lines| {
                    lines
                        .iter()
                        .find(|line| line["bench"] == bench)
                        .and_then(|line| line[unit].as_f64())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Our run and the peer's, for each pair, in order, without repeats.
pub fn runs_of(pairs: &[&Pair]) -> Vec<Run> {
    let mut runs = Vec::new();
    for pair in pairs {
        for run in [pair.ours, pair.theirs] {
            if !runs.contains(&run) {
                runs.push(run);
            }
        }
    }
    runs
}

/// One comparison of one pair and unit, as its JSON line.
pub struct Line {
    pub pair: &'static Pair,
    pub unit: &'static str,
    pub comparison: Comparison,
}

impl Line {
    pub fn json(&self) -> String {
        let c = &self.comparison;
        let ci = match c.ci95 {
            Some((low, high)) => format!("[{low:.2},{high:.2}]"),
            None => "null".into(),
        };
        format!(
            "{{\"bench\":\"{}\",\"peer\":\"{}\",\"ours\":{:.1},\"theirs\":{:.1},\"unit\":\"{}\",\"ratio\":{:.2},\"ratio_median\":{:.2},\"ratio_ci95\":{ci},\"rounds\":{}}}",
            self.pair.bench,
            self.pair.peer,
            c.ours,
            c.theirs,
            self.unit,
            c.ratio,
            c.median,
            c.rounds
        )
    }
}

/// Every pair's comparison lines from the rounds' results.
pub fn lines(pairs: &[&'static Pair], results: &Rounds) -> Result<Vec<Line>> {
    let mut lines = Vec::new();
    for pair in pairs {
        for unit in pair.units {
            let ours = values(results, pair.ours, pair.bench, unit);
            let theirs = values(results, pair.theirs, pair.theirs_bench, unit);
            let comparison = compare(&ours, &theirs, higher_is_better(unit))
                .ok_or_else(|| {
                    format!(
                        "no `{unit}` for {} and {} in the runs' output",
                        pair.bench, pair.peer
                    )
                })?;
            lines.push(Line {
                pair,
                unit,
                comparison,
            });
        }
    }
    Ok(lines)
}

/// The pairs whose bench or peer contains `filter`.
pub fn select(filter: &str) -> Vec<&'static Pair> {
    PAIRS
        .iter()
        .filter(|p| p.bench.contains(filter) || p.peer.contains(filter))
        .collect()
}

/// `cargo xtask bench --against [FILTER] [--rounds N]`.
pub fn run(filter: &str, rounds: usize) -> Result {
    ensure::servers()?;
    let pairs = select(filter);
    if pairs.is_empty() {
        let names: Vec<&str> = PAIRS.iter().map(|p| p.bench).collect();
        return Err(format!(
            "no comparison matches `{filter}`; there are: {}",
            names.join(", ")
        ));
    }
    let with_go = pairs.iter().any(|p| matches!(p.theirs, Run::Go(_)));
    let instruments = Instruments::build(with_go)?;
    let servers = Servers::start(1)?;
    let results = run_rounds(&instruments, &servers, &runs_of(&pairs), rounds)?;
    for line in lines(&pairs, &results)? {
        println!("{}", line.json());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_ratio_is_ours_over_theirs_and_a_time_ratio_theirs_over_ours() {
        let rate = compare(&[200.0, 220.0], &[100.0, 100.0], true).unwrap();
        assert!((rate.ratio - 2.1).abs() < 1e-9);
        let time = compare(&[50.0], &[100.0], false).unwrap();
        assert!((time.ratio - 2.0).abs() < 1e-9);
        assert_eq!(time.ci95, None, "one round gives no interval");
    }

    #[test]
    fn the_median_is_of_the_per_round_ratios_and_the_interval_holds_it() {
        let c = compare(&[1.0, 2.0, 3.0, 4.0], &[1.0, 1.0, 1.0, 1.0], true).unwrap();
        assert!((c.median - 2.5).abs() < 1e-9);
        let (low, high) = c.ci95.unwrap();
        assert!(low < c.median && c.median < high, "{low} {high}");
        // Identical rounds: a point interval.
        let same = compare(&[2.0; 5], &[1.0; 5], true).unwrap();
        let (low, high) = same.ci95.unwrap();
        assert!((low - 2.0).abs() < 1e-9 && (high - 2.0).abs() < 1e-9);
    }

    #[test]
    fn every_pair_names_an_entry_the_bench_binary_has() {
        let main =
            std::fs::read_to_string(workspace_root().join("benches/macro/main.rs"))
                .unwrap();
        let go = std::fs::read_to_string(
            workspace_root().join("benches/peers/go-recipes/main.go"),
        )
        .unwrap();
        for pair in PAIRS {
            for run in [pair.ours, pair.theirs] {
                let (entry, source) = match run {
                    Run::Macro(entry) => (entry, &main),
                    Run::Go(entry) => (entry, &go),
                };
                assert!(
                    source.contains(&format!("\"{entry}\"")),
                    "{entry} is not an entry of {run:?}'s program"
                );
            }
        }
    }
}
