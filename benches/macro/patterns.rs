//! Benchmarks of the in-process patterns: no server needed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::hint::black_box;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use concurrency_patterns::patterns::map::ConcurrentMap;
use concurrency_patterns::patterns::pipeline::{Options, Order, threads};
use dashmap::DashMap;

/// Items through the pipeline and through the bare channel.
const ITEMS: u64 = 1_000_000;

fn ns_line(bench: &str, elapsed: Duration, n: u64, extra: &str) -> String {
    format!(
        "{{\"bench\":\"{bench}\",\"ns_per_op\":{:.1}{extra},\"n\":{n}}}",
        elapsed.as_nanos() as f64 / n as f64
    )
}

/// Rounds of the two item benchmarks, alternated so that both see the same
/// machine; the fastest round of each is reported, since on a shared 2-core
/// machine the slow rounds measure the neighbours, not the code.
const ROUNDS: usize = 5;

/// `patterns.channel.hop`, `patterns.pipeline.item` (unordered, the
/// default), `patterns.pipeline.ordered` and `patterns.pipeline.lesson`,
/// measured in alternation so that all see the same machine.
///
/// - The hop is one producer thread, one consumer and a bounded crossbeam
///   channel of the pipeline's default capacity: the floor for anything
///   that moves items between threads.
/// - The pipeline moves the same items through its workers and merge with
///   a trivial stage, unordered and then in input order.
/// - The lesson's shape is the peer: a generator thread feeding a jobs
///   channel, the same number of worker threads, one results channel read
///   by the caller (unordered), all over crossbeam channels of the same
///   capacity, with no cancellation or error handling.
pub fn channel_hop_and_pipeline_item() -> Vec<String> {
    let mut hop = Duration::MAX;
    let mut pipeline = Duration::MAX;
    let mut ordered = Duration::MAX;
    let mut lesson = Duration::MAX;
    for _ in 0..ROUNDS {
        hop = hop.min(channel_hop_once());
        pipeline = pipeline.min(pipeline_item_once(Order::Unordered));
        ordered = ordered.min(pipeline_item_once(Order::Preserved));
        lesson = lesson.min(lesson_pipeline_once());
    }
    let rounds = format!(",\"rounds\":{ROUNDS}");
    let workers = format!(",\"workers\":{WORKERS}{rounds}");
    vec![
        ns_line("patterns.channel.hop", hop, ITEMS, &rounds),
        ns_line("patterns.pipeline.item", pipeline, ITEMS, &workers),
        ns_line("patterns.pipeline.ordered", ordered, ITEMS, &workers),
        ns_line("patterns.pipeline.lesson", lesson, ITEMS, &workers),
    ]
}

/// The lesson's fan-out/fan-in: generator → jobs → workers → results.
fn lesson_pipeline_once() -> Duration {
    let started = Instant::now();
    let (jobs_tx, jobs_rx) = crossbeam::channel::bounded::<u64>(64);
    let (results_tx, results_rx) = crossbeam::channel::bounded::<u64>(64);
    let generator = std::thread::spawn(move || {
        for n in 0..ITEMS {
            if jobs_tx.send(n).is_err() {
                return;
            }
        }
    });
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (jobs, results) = (jobs_rx.clone(), results_tx.clone());
            std::thread::spawn(move || {
                for n in jobs {
                    if results.send(black_box(n + 1)).is_err() {
                        return;
                    }
                }
            })
        })
        .collect();
    drop(results_tx);
    let sum: u64 = results_rx.iter().sum();
    let elapsed = started.elapsed();
    let _ = generator.join();
    for worker in workers {
        let _ = worker.join();
    }
    assert_eq!(sum, ITEMS * (ITEMS + 1) / 2);
    elapsed
}

fn channel_hop_once() -> Duration {
    let (tx, rx) = crossbeam::channel::bounded::<u64>(64);
    let started = Instant::now();
    let producer = std::thread::spawn(move || {
        for n in 0..ITEMS {
            if tx.send(n).is_err() {
                return;
            }
        }
    });
    let sum: u64 = rx.iter().map(|n| black_box(n + 1)).sum();
    let elapsed = started.elapsed();
    let _ = producer.join();
    assert_eq!(sum, ITEMS * (ITEMS + 1) / 2);
    elapsed
}

/// Workers in the pipeline benchmark: one per core of the reference machine.
const WORKERS: usize = 2;

fn pipeline_item_once(order: Order) -> Duration {
    let workers = WORKERS;
    let started = Instant::now();
    let options = Options::default().workers(workers).order(order);
    let out =
        threads::run(options, 0..ITEMS, |n| Ok::<_, Infallible>(black_box(n + 1)))
            .unwrap_or_else(|e| panic!("pipeline options: {e}"));
    let sum: u64 = out
        .map(|r| r.unwrap_or_else(|e| panic!("pipeline failed: {e}")))
        .sum();
    let elapsed = started.elapsed();
    assert_eq!(sum, ITEMS * (ITEMS + 1) / 2);
    elapsed
}

/// The operations a map benchmark needs, for every kind of map compared.
trait BenchMap: Send + Sync {
    fn get(&self, key: u64) -> Option<u64>;
    fn insert(&self, key: u64, value: u64);
    fn remove(&self, key: u64);
    fn update(&self, key: u64);
}

impl BenchMap for ConcurrentMap<u64, u64> {
    fn get(&self, key: u64) -> Option<u64> {
        self.load(&key)
    }
    fn insert(&self, key: u64, value: u64) {
        self.store(key, value);
    }
    fn remove(&self, key: u64) {
        self.delete(&key);
    }
    fn update(&self, key: u64) {
        ConcurrentMap::update(self, &key, |v| *v += 1);
    }
}

impl BenchMap for DashMap<u64, u64> {
    fn get(&self, key: u64) -> Option<u64> {
        DashMap::get(self, &key).map(|v| *v)
    }
    fn insert(&self, key: u64, value: u64) {
        DashMap::insert(self, key, value);
    }
    fn remove(&self, key: u64) {
        DashMap::remove(self, &key);
    }
    fn update(&self, key: u64) {
        if let Some(mut v) = self.get_mut(&key) {
            *v += 1;
        }
    }
}

impl BenchMap for parking_lot::RwLock<HashMap<u64, u64>> {
    fn get(&self, key: u64) -> Option<u64> {
        self.read().get(&key).copied()
    }
    fn insert(&self, key: u64, value: u64) {
        self.write().insert(key, value);
    }
    fn remove(&self, key: u64) {
        self.write().remove(&key);
    }
    fn update(&self, key: u64) {
        if let Some(v) = self.write().get_mut(&key) {
            *v += 1;
        }
    }
}

impl BenchMap for Mutex<HashMap<u64, u64>> {
    fn get(&self, key: u64) -> Option<u64> {
        self.lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .copied()
    }
    fn insert(&self, key: u64, value: u64) {
        self.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, value);
    }
    fn remove(&self, key: u64) {
        self.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
    }
    fn update(&self, key: u64) {
        if let Some(v) = self.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&key) {
            *v += 1;
        }
    }
}

impl BenchMap for RwLock<HashMap<u64, u64>> {
    fn get(&self, key: u64) -> Option<u64> {
        self.read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .copied()
    }
    fn insert(&self, key: u64, value: u64) {
        self.write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, value);
    }
    fn remove(&self, key: u64) {
        self.write().unwrap_or_else(|p| p.into_inner()).remove(&key);
    }
    fn update(&self, key: u64) {
        if let Some(v) = self
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&key)
        {
            *v += 1;
        }
    }
}

/// A mix of operations, in percent: read, insert, remove, update.
#[derive(Clone, Copy)]
struct Mix {
    name: &'static str,
    read: u64,
    insert: u64,
    remove: u64,
}

/// 98% reads, 1% inserts, 1% removes: a cache.
const READ_HEAVY: Mix = Mix {
    name: "read_heavy",
    read: 98,
    insert: 1,
    remove: 1,
};
/// 10% reads, 40% inserts, 40% removes, 10% updates: keys changing hands.
const EXCHANGE: Mix = Mix {
    name: "exchange",
    read: 10,
    insert: 40,
    remove: 40,
};

const KEYS: u64 = 10_000;
const OPS_PER_THREAD: u64 = 2_000_000;

fn run_mix(map: Arc<dyn BenchMap>, mix: Mix, threads: usize) -> f64 {
    for key in (0..KEYS).step_by(2) {
        map.insert(key, key);
    }
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let map = Arc::clone(&map);
            std::thread::spawn(move || {
                // xorshift: a fast, reproducible stream of keys and choices.
                let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (t as u64 + 1);
                for _ in 0..OPS_PER_THREAD {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    let key = state % KEYS;
                    let dice = (state >> 32) % 100;
                    if dice < mix.read {
                        black_box(map.get(key));
                    } else if dice < mix.read + mix.insert {
                        map.insert(key, state);
                    } else if dice < mix.read + mix.insert + mix.remove {
                        map.remove(key);
                    } else {
                        map.update(key);
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        let _ = handle.join();
    }
    (OPS_PER_THREAD * threads as u64) as f64 / started.elapsed().as_secs_f64()
}

fn map_kinds() -> Vec<(&'static str, Arc<dyn BenchMap>)> {
    vec![
        ("concurrent_map", Arc::new(ConcurrentMap::<u64, u64>::new())),
        ("dashmap", Arc::new(DashMap::<u64, u64>::new())),
        (
            "parking_lot_rwlock",
            Arc::new(parking_lot::RwLock::new(HashMap::new())),
        ),
        ("mutex", Arc::new(Mutex::new(HashMap::new()))),
        ("std_rwlock", Arc::new(RwLock::new(HashMap::new()))),
    ]
}

/// `patterns.map.read_heavy` or `patterns.map.exchange`: one line per map
/// kind and thread count (1, 2, and the machine's cores if more).
pub fn map_mix(bench: &str) -> Vec<String> {
    let mix = if bench.ends_with("read_heavy") {
        READ_HEAVY
    } else {
        EXCHANGE
    };
    let cores = std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(2);
    let mut thread_counts = vec![1, 2];
    if cores > 2 {
        thread_counts.push(cores);
    }
    let mut lines = Vec::new();
    for threads in thread_counts {
        for (kind, map) in map_kinds() {
            let ops_per_s = run_mix(map, mix, threads);
            lines.push(format!(
                "{{\"bench\":\"patterns.map.{}\",\"map\":\"{kind}\",\"threads\":{threads},\"ops_per_s\":{ops_per_s:.0},\"n\":{}}}",
                mix.name,
                OPS_PER_THREAD * threads as u64
            ));
        }
    }
    lines
}
