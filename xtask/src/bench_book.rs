//! `cargo xtask bench --book [--rounds N]`: runs the benchmarks the chapters
//! quote, beside their peers, and writes the tables the chapters include
//! (`book/src/generated/*.md`), each headed by the conditions it was
//! measured under. A chapter holds no hand-typed figure: to change one,
//! run this and commit the tables.

use std::fmt::Write as _;
use std::path::Path;

use crate::against::{
    self, Instruments, PAIRS, Pair, Rounds, Run, Servers, run_rounds, values,
};
use crate::run::version_of;
use crate::{Result, ensure, workspace_root};

/// Where the tables go, relative to the workspace root.
pub const GENERATED: &str = "book/src/generated";

/// A row of our own with no peer.
struct Solo {
    bench: &'static str,
    entry: &'static str,
    unit: &'static str,
}

/// The benches whose lines have no peer, run in the same rounds.
const SOLOS: &[Solo] = &[
    Solo {
        bench: "etcd.semaphore.cycle",
        entry: "etcd.semaphore.cycle",
        unit: "ops_per_s",
    },
    Solo {
        bench: "redis.semaphore.cycle",
        entry: "redis.semaphore.cycle",
        unit: "ops_per_s",
    },
    Solo {
        bench: "redis.lock.cycle.cluster",
        entry: "redis.lock.cycle.cluster",
        unit: "ops_per_s",
    },
];

/// The map benchmarks: one line per map kind and thread count.
const MAP_ENTRIES: &[&str] = &["patterns.map.read_heavy", "patterns.map.exchange"];
const MAP_KINDS: &[(&str, &str)] = &[
    ("concurrent_map", "`ConcurrentMap` (this crate)"),
    ("dashmap", "`DashMap` (raw)"),
    ("parking_lot_rwlock", "`parking_lot` `RwLock<HashMap>`"),
    ("mutex", "`Mutex<HashMap>`"),
    ("std_rwlock", "`std` `RwLock<HashMap>`"),
];

/// The benches measured again on a 3-member cluster.
const MEMBER_ENTRIES: &[&str] = &[
    "etcd.raw.put",
    "etcd.queue.enqueue+etcd.queue.dequeue",
    "etcd.queue.mc8",
];
const MEMBER_BENCHES: &[&str] = &[
    "etcd.raw.put",
    "etcd.queue.enqueue",
    "etcd.queue.dequeue",
    "etcd.queue.mc8",
];

/// One generated table: its file, what its conditions mention, its rows.
struct Table {
    file: &'static str,
    servers: &'static [&'static str],
    pairs: &'static [&'static str],
    solos: &'static [&'static str],
}

/// Every table, by the chapter that includes it.
const TABLES: &[Table] = &[
    Table {
        file: "etcd-lock.md",
        servers: &["etcd", "go"],
        pairs: &["etcd.mutex.cycle", "etcd.mutex.handoff"],
        solos: &["etcd.semaphore.cycle"],
    },
    Table {
        file: "etcd-queues.md",
        servers: &["etcd", "go"],
        pairs: &[
            "etcd.raw.put",
            "etcd.queue.enqueue",
            "etcd.queue.dequeue",
            "etcd.queue.mc8",
            "etcd.queue.enqueue_many",
            "etcd.queue.enqueue_pipelined",
            "etcd.stm.bank",
        ],
        solos: &[],
    },
    Table {
        file: "redis-lock.md",
        servers: &["redis"],
        pairs: &["redis.lock.cycle", "redis.lock.handoff"],
        solos: &["redis.semaphore.cycle", "redis.lock.cycle.cluster"],
    },
    Table {
        file: "rate-limits.md",
        servers: &[],
        pairs: &[
            "resilience.sliding_window.check",
            "resilience.sliding_log.check",
            "resilience.gcra.check",
        ],
        solos: &[],
    },
    Table {
        file: "circuit-breaker.md",
        servers: &[],
        pairs: &["resilience.breaker.closed_call"],
        solos: &[],
    },
    Table {
        file: "fan-out-fan-in.md",
        servers: &[],
        pairs: &["patterns.pipeline.item", "patterns.pipeline.ordered"],
        solos: &[],
    },
];

/// The files `--book` writes, for the test that every one is committed.
#[cfg(test)]
pub fn files() -> Vec<&'static str> {
    let mut files: Vec<&str> = TABLES.iter().map(|t| t.file).collect();
    files.extend(["etcd-members.md", "concurrent-map.md"]);
    files
}

/// What the tables were measured on.
struct Conditions {
    date: String,
    machine: String,
    etcd: String,
    redis: String,
    go: String,
    rustc: String,
    rounds: usize,
}

impl Conditions {
    fn gather(rounds: usize) -> Conditions {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| "CPU unknown".into());
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let date = std::process::Command::new("date")
            .arg("+%Y-%m-%d")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let word = |program: &str, prefix: &str| {
            version_of(program)
                .and_then(|v| {
                    v.split_whitespace()
                        .find_map(|w| w.strip_prefix(prefix).map(str::to_string))
                })
                .unwrap_or_else(|| "?".into())
        };
        // `go version` has no `--version`.
        let go = std::process::Command::new("go")
            .arg("version")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .nth(2)
                    .map(|v| v.trim_start_matches("go").to_string())
            })
            .unwrap_or_else(|| "?".into());
        Conditions {
            date,
            machine: format!("{cores} cores ({cpu})"),
            etcd: version_of("etcd")
                .and_then(|v| v.split_whitespace().last().map(str::to_string))
                .unwrap_or_else(|| "?".into()),
            redis: word("redis-server", "v="),
            go,
            rustc: version_of("rustc")
                .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
                .unwrap_or_else(|| "?".into()),
            rounds,
        }
    }

    /// The italic paragraph that heads a table.
    fn header(&self, servers: &[&str], members: &str) -> String {
        let mut parts = vec![format!(
            "measured by `cargo xtask bench --book` on {}: {}, Linux, rustc {}",
            self.date, self.machine, self.rustc
        )];
        if servers.contains(&"etcd") {
            parts.push(format!(
                "etcd {} ({members} on loopback, fsync on)",
                self.etcd
            ));
        }
        if servers.contains(&"go") {
            parts.push(format!("Go {} for etcd's recipes", self.go));
        }
        if servers.contains(&"redis") {
            parts.push(format!("Redis {} on loopback", self.redis));
        }
        parts.push(match self.rounds {
            1 => "1 round, each side in a fresh process".to_string(),
            n => format!(
                "{n} rounds, each side in a fresh process, the order alternating"
            ),
        });
        format!(
            "<!-- Generated by `cargo xtask bench --book`; do not edit. -->\n\n*{}.*\n\n",
            capitalise(&parts.join("; "))
        )
    }
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `12345.6` as `12,346`.
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A value with its unit, as a reader reads it.
fn shown(value: f64, unit: &str) -> String {
    match unit {
        "ops_per_s" => format!("{}/s", thousands(value)),
        "ns_per_op" => format!("{value:.1} ns"),
        "p50_us" | "p99_us" => format!("{} µs", thousands(value)),
        _ => format!("{value:.1}"),
    }
}

/// What a unit measures, beside the bench's name.
fn unit_label(unit: &str) -> &'static str {
    match unit {
        "p50_us" => " p50",
        "p99_us" => " p99",
        _ => "",
    }
}

fn peer_label(peer: &str) -> &str {
    match peer {
        "go-recipes" => "Go's recipes",
        "go-recipes-x8" => "Go's recipes, 8 goroutines",
        "clock+atomic" => "clock + atomic",
        "resilience.governor.check" => "governor",
        "patterns.channel.hop" => "a channel hop",
        "patterns.pipeline.lesson" => "the lesson's shape",
        other => other,
    }
}

/// The comparison table of `table`'s pairs and solos.
fn comparison_table(
    table: &Table,
    results: &Rounds,
    conditions: &Conditions,
) -> Result<String> {
    let mut out = conditions.header(table.servers, "1 member");
    let pairs: Vec<&'static Pair> = PAIRS
        .iter()
        .filter(|p| table.pairs.contains(&p.bench))
        .collect();
    // One peer: its name heads the column; several: each cell names its own.
    let one_peer = pairs
        .iter()
        .all(|p| Some(p.peer) == pairs.first().map(|first| first.peer))
        .then(|| pairs.first().map(|p| peer_label(p.peer)))
        .flatten();
    let _ = write!(
        out,
        "| benchmark | this crate | {} | ratio | median, interval |\n\
         |---|---|---|---|---|\n",
        one_peer.unwrap_or("the peer")
    );
    for line in against::lines(&pairs, results)? {
        let c = &line.comparison;
        let interval = match c.ci95 {
            Some((low, high)) => format!("{:.2}, {low:.2}–{high:.2}", c.median),
            None => format!("{:.2}", c.median),
        };
        let theirs = match one_peer {
            Some(_) => shown(c.theirs, line.unit),
            None => format!(
                "{} ({})",
                shown(c.theirs, line.unit),
                peer_label(line.pair.peer)
            ),
        };
        let _ = writeln!(
            out,
            "| `{}`{} | {} | {theirs} | **{:.2}×** | {interval} |",
            line.pair.bench,
            unit_label(line.unit),
            shown(c.ours, line.unit),
            c.ratio,
        );
    }
    for name in table.solos {
        let Some(solo) = SOLOS.iter().find(|s| s.bench == *name) else {
            return Err(format!("{name} is not a solo bench"));
        };
        let v = values(results, Run::Macro(solo.entry), solo.bench, solo.unit);
        if v.is_empty() {
            return Err(format!("no `{}` for {name} in the runs' output", solo.unit));
        }
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        let _ = writeln!(out, "| `{name}` | {} | – | – | – |", shown(mean, solo.unit));
    }
    out.push_str(
        "\nA ratio above 1 favours this crate: ours over the peer's for a rate, \
         the peer's over ours for a time. The median is of the per-round ratios, \
         the interval a 95 % confidence interval of the ratio.\n",
    );
    Ok(out)
}

/// Mean of `unit` for the line of `bench` whose `field` is `value`.
fn mean_where(
    results: &Rounds,
    entry: &'static str,
    bench: &str,
    filters: &[(&str, serde_json::Value)],
    unit: &str,
) -> Option<f64> {
    let rounds = results.get(&Run::Macro(entry))?;
    let found: Vec<f64> = rounds
        .iter()
        .filter_map(|lines| {
            lines
                .iter()
                .find(|l| {
                    l["bench"] == bench
                        && filters.iter().all(|(field, v)| &l[*field] == v)
                })
                .and_then(|l| l[unit].as_f64())
        })
        .collect();
    (!found.is_empty()).then(|| found.iter().sum::<f64>() / found.len() as f64)
}

fn map_table(results: &Rounds, conditions: &Conditions) -> Result<String> {
    let mut out = conditions.header(&[], "");
    out.push_str(
        "Millions of operations per second, the mean over the rounds; ×1 and ×2 \
         are the threads.\n\n\
         | map | read_heavy ×1 | read_heavy ×2 | exchange ×1 | exchange ×2 |\n\
         |---|---|---|---|---|\n",
    );
    for (kind, label) in MAP_KINDS {
        let mut cells = Vec::new();
        for entry in MAP_ENTRIES {
            for threads in [1, 2] {
                let filters = [("map", (*kind).into()), ("threads", threads.into())];
                let mean = mean_where(results, entry, entry, &filters, "ops_per_s")
                    .ok_or_else(|| format!("no {entry} line for {kind} × {threads}"))?;
                cells.push(format!("{:.1}", mean / 1e6));
            }
        }
        let _ = writeln!(out, "| {label} | {} |", cells.join(" | "));
    }
    Ok(out)
}

fn members_table(
    one: &Rounds,
    three: &Rounds,
    three_members: usize,
    conditions: &Conditions,
) -> Result<String> {
    let mut out =
        conditions.header(&["etcd"], &format!("1 member, then {three_members}"));
    let _ = write!(
        out,
        "The same benchmarks of this crate on one member and on a \
         {three_members}-member cluster, on the same machine; the mean over the rounds.\n\n\
         | benchmark | 1 member | {three_members} members | 3 members / 1 |\n|---|---|---|---|\n"
    );
    for bench in MEMBER_BENCHES {
        let entry = MEMBER_ENTRIES
            .iter()
            .copied()
            .find(|e| e.split('+').any(|b| b == *bench))
            .ok_or_else(|| format!("{bench} has no entry"))?;
        let mean = |results: &Rounds| {
            let v = values(results, Run::Macro(entry), bench, "ops_per_s");
            (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
        };
        let (Some(a), Some(b)) = (mean(one), mean(three)) else {
            return Err(format!("no ops_per_s for {bench} on both clusters"));
        };
        let _ = writeln!(
            out,
            "| `{bench}` | {} | {} | {:.2} |",
            shown(a, "ops_per_s"),
            shown(b, "ops_per_s"),
            b / a
        );
    }
    Ok(out)
}

fn write(dir: &Path, file: &str, text: &str) -> Result {
    let path = dir.join(file);
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("xtask: wrote {}", path.display());
    Ok(())
}

/// `cargo xtask bench --book [--rounds N]`.
pub fn run(rounds: usize) -> Result {
    ensure::servers()?;
    let instruments = Instruments::build(true)?;
    let conditions = Conditions::gather(rounds);
    let pairs: Vec<&Pair> = PAIRS.iter().collect();
    let mut runs = against::runs_of(&pairs);
    for entry in SOLOS
        .iter()
        .map(|s| s.entry)
        .chain(MAP_ENTRIES.iter().copied())
    {
        if !runs.contains(&Run::Macro(entry)) {
            runs.push(Run::Macro(entry));
        }
    }
    let (one, three, three_members) = {
        let servers = Servers::start(1)?;
        let one = run_rounds(&instruments, &servers, &runs, rounds)?;
        drop(servers);
        let servers = Servers::start(3)?;
        let member_runs: Vec<Run> =
            MEMBER_ENTRIES.iter().map(|e| Run::Macro(e)).collect();
        eprintln!("xtask: the same on {} members", servers.etcd_members);
        let three = run_rounds(&instruments, &servers, &member_runs, rounds.min(5))?;
        (one, three, servers.etcd_members)
    };
    let dir = workspace_root().join(GENERATED);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for table in TABLES {
        write(
            &dir,
            table.file,
            &comparison_table(table, &one, &conditions)?,
        )?;
    }
    write(&dir, "concurrent-map.md", &map_table(&one, &conditions)?)?;
    let member_conditions = Conditions {
        rounds: rounds.min(5),
        ..conditions
    };
    write(
        &dir,
        "etcd-members.md",
        &members_table(&one, &three, three_members, &member_conditions)?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_a_reader_reads_them() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(shown(2150.2, "ops_per_s"), "2,150/s");
        assert_eq!(shown(26.34, "ns_per_op"), "26.3 ns");
    }

    #[test]
    fn every_table_row_is_a_pair_or_a_solo() {
        for table in TABLES {
            for bench in table.pairs {
                assert!(PAIRS.iter().any(|p| p.bench == *bench), "{bench}");
            }
            for bench in table.solos {
                assert!(SOLOS.iter().any(|s| s.bench == *bench), "{bench}");
            }
        }
    }

    #[test]
    fn every_table_written_is_committed() {
        let dir = workspace_root().join(GENERATED);
        for file in files() {
            assert!(dir.join(file).exists(), "{GENERATED}/{file} is missing");
        }
    }
}
