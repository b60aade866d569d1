//! What a recipe's keys in etcd mean: the model the live view draws and
//! `--once --json` prints.
//!
//! A snapshot reads every key under the recipe's name (and the fence keys
//! just below it, see the exactly-once chapter), recognises the recipe
//! from the layout (the table in `distributed/src/etcd/mod.rs`), gives
//! each key its role and, for the lines of waiters, the key it watches,
//! and asks etcd how long each lease has left.

#![allow(dead_code)] // the tests use parts the example does not

use std::collections::HashMap;
use std::time::Instant;

use concurrency_patterns::distributed::etcd::Client;
use concurrency_patterns::distributed::etcd::etcd_client::{GetOptions, KeyValue};
use serde_json::{Value, json};

/// The recipes the view knows by their layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recipe {
    Mutex,
    RwMutex,
    Semaphore,
    Election,
    Queue,
    PriorityQueue,
    WorkQueue,
    Barrier,
    DoubleBarrier,
    /// Nothing under the name yet, or a layout the view does not know.
    Unknown,
}

impl Recipe {
    /// The name `--recipe` takes.
    pub fn parse(name: &str) -> Option<Recipe> {
        Some(match name {
            "mutex" | "lock" => Recipe::Mutex,
            "rwmutex" | "rwlock" => Recipe::RwMutex,
            "semaphore" => Recipe::Semaphore,
            "election" => Recipe::Election,
            "queue" => Recipe::Queue,
            "priority-queue" => Recipe::PriorityQueue,
            "work-queue" => Recipe::WorkQueue,
            "barrier" => Recipe::Barrier,
            "double-barrier" => Recipe::DoubleBarrier,
            _ => return None,
        })
    }

    /// The layout it was recognised by, as the recipes' table writes it.
    pub fn layout(self) -> &'static str {
        match self {
            Recipe::Mutex => "<name>/<lease hex>, empty values",
            Recipe::Election => "<name>/<lease hex>, values proclaimed",
            Recipe::RwMutex => "<name>/read/<nanos>, <name>/write/<nanos>",
            Recipe::Semaphore => "<name>/permits/…, <name>/line/…",
            Recipe::Queue => "<name>/<unix nanos>",
            Recipe::PriorityQueue => "<name>/<%05d>/<%016d>",
            Recipe::WorkQueue => "<name>/items/…, <name>/claims/…",
            Recipe::Barrier => "<name>",
            Recipe::DoubleBarrier => "<name>/waiters/…, <name>/ready",
            Recipe::Unknown => "not recognised",
        }
    }
}

/// What a key is to its recipe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Holder,
    Waiter,
    Leader,
    Candidate,
    Permit,
    Item,
    Claim,
    Deliveries,
    DeadLetter,
    Barrier,
    Participant,
    Ready,
    Fence,
    Receipt,
    Other,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Holder => "holder",
            Role::Waiter => "waiter",
            Role::Leader => "leader",
            Role::Candidate => "candidate",
            Role::Permit => "permit",
            Role::Item => "item",
            Role::Claim => "claim",
            Role::Deliveries => "deliveries",
            Role::DeadLetter => "dead letter",
            Role::Barrier => "barrier",
            Role::Participant => "participant",
            Role::Ready => "ready",
            Role::Fence => "fence",
            Role::Receipt => "receipt",
            Role::Other => "other",
        }
    }
}

/// One key as the view shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyView {
    /// The key, without the recipe's name in front.
    pub key: String,
    pub role: Role,
    pub create_revision: i64,
    /// The lease (0: none).
    pub lease: i64,
    /// Seconds the lease had left when read; `None` without a lease.
    pub ttl: Option<i64>,
    /// For a waiter or candidate: the key it watches (its predecessor).
    pub watches: Option<String>,
    /// The value, as text, shortened.
    pub value: String,
    /// Deleted since the view last saw it (kept a moment, greyed).
    pub gone: bool,
}

/// Everything under one recipe name at one revision.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub name: String,
    pub recipe: Recipe,
    pub revision: i64,
    /// In the order the recipe serves them: holder first, then its line;
    /// items in the order they will be taken.
    pub keys: Vec<KeyView>,
    /// When the leases' TTLs were read.
    pub read_at: Instant,
}

/// Reads the keys of `name` and what they mean. `forced` overrides the
/// recognised recipe.
pub async fn snapshot(
    client: &Client,
    name: &str,
    forced: Option<Recipe>,
) -> anyhow::Result<Snapshot> {
    let mut client = client.clone();
    let name = name.trim_end_matches('/');
    // The bare name (a barrier) and everything under `<name>/`.
    let under = client
        .get(format!("{name}/"), Some(GetOptions::new().with_prefix()))
        .await?;
    let bare = client.get(name, None).await?;
    let fences = client
        .get(fence_prefix(name), Some(GetOptions::new().with_prefix()))
        .await?;
    let revision = under.header().map_or(0, |h| h.revision());
    let mut kvs: Vec<KeyValue> = bare.kvs().to_vec();
    kvs.extend(under.kvs().iter().cloned());
    let recipe = forced.unwrap_or_else(|| recognise(name, &kvs));
    let mut keys = roles(recipe, name, &kvs);
    for kv in fences.kvs() {
        keys.push(view(kv, name, Role::Fence, None));
    }
    // Takes from a queue also write receipts (exactly once when a reply is
    // lost): one lane per process, under a prefix of their own.
    if matches!(
        recipe,
        Recipe::Queue | Recipe::PriorityQueue | Recipe::WorkQueue
    ) {
        let receipts = client
            .get("cpr-receipts/", Some(GetOptions::new().with_prefix()))
            .await?;
        for kv in receipts.kvs() {
            keys.push(view(kv, name, Role::Receipt, None));
        }
    }
    // One question per lease.
    let mut ttls: HashMap<i64, i64> = HashMap::new();
    for key in &keys {
        if key.lease != 0 && !ttls.contains_key(&key.lease) {
            let left = client
                .lease_time_to_live(key.lease, None)
                .await
                .map_or(-1, |r| r.ttl());
            ttls.insert(key.lease, left);
        }
    }
    for key in &mut keys {
        key.ttl = (key.lease != 0).then(|| ttls.get(&key.lease).copied().unwrap_or(-1));
    }
    Ok(Snapshot {
        name: name.to_string(),
        recipe,
        revision,
        keys,
        read_at: Instant::now(),
    })
}

/// The fence keys' prefix for items under `<name>/`: the name with its
/// last byte lowered, then 0xFF (see `exactly_once/unique_creates.rs`).
fn fence_prefix(name: &str) -> Vec<u8> {
    let mut key = name.as_bytes().to_vec();
    if let Some(last) = key.last_mut() {
        *last = last.saturating_sub(1);
    }
    key.push(0xFF);
    key.extend_from_slice(b"cpr-fence/");
    key
}

/// The part of `key` after `<name>/` (or the name itself for a barrier).
fn relative(key: &[u8], name: &str) -> String {
    let key = String::from_utf8_lossy(key);
    key.strip_prefix(name)
        .map(|rest| rest.trim_start_matches('/').to_string())
        .filter(|rest| !rest.is_empty())
        .unwrap_or_else(|| key.replace('\u{FFFD}', "\\xFF"))
}

/// Which recipe wrote these keys, from their layout.
pub fn recognise(name: &str, kvs: &[KeyValue]) -> Recipe {
    let rel: Vec<String> = kvs.iter().map(|kv| relative(kv.key(), name)).collect();
    let first_segments: Vec<&str> = rel
        .iter()
        .map(|r| r.split('/').next().unwrap_or(""))
        .collect();
    let has = |segment: &str| first_segments.contains(&segment);
    if kvs.is_empty() {
        Recipe::Unknown
    } else if kvs.iter().any(|kv| kv.key() == name.as_bytes()) && kvs.len() == 1 {
        Recipe::Barrier
    } else if has("waiters") || has("ready") {
        Recipe::DoubleBarrier
    } else if has("items") || has("claims") {
        Recipe::WorkQueue
    } else if has("read") || has("write") {
        Recipe::RwMutex
    } else if has("permits") || has("line") || has("permits-count") {
        Recipe::Semaphore
    } else if rel.iter().all(|r| {
        let mut parts = r.split('/');
        matches!((parts.next(), parts.next(), parts.next()),
            (Some(p), Some(s), None) if p.len() == 5 && s.len() == 16
                && p.bytes().chain(s.bytes()).all(|b| b.is_ascii_digit()))
    }) {
        Recipe::PriorityQueue
    } else if kvs.iter().all(|kv| kv.lease() != 0) {
        if kvs.iter().any(|kv| !kv.value().is_empty()) {
            Recipe::Election
        } else {
            Recipe::Mutex
        }
    } else if rel
        .iter()
        .all(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
    {
        Recipe::Queue
    } else {
        Recipe::Unknown
    }
}

fn view(kv: &KeyValue, name: &str, role: Role, watches: Option<String>) -> KeyView {
    let mut value = String::from_utf8_lossy(kv.value()).into_owned();
    if value.chars().count() > 40 {
        value = value.chars().take(39).chain(['…']).collect();
    }
    KeyView {
        key: relative(kv.key(), name),
        role,
        create_revision: kv.create_revision(),
        lease: kv.lease(),
        ttl: None,
        watches,
        value,
        gone: false,
    }
}

/// Each key's role, in serving order.
pub fn roles(recipe: Recipe, name: &str, kvs: &[KeyValue]) -> Vec<KeyView> {
    let mut by_revision: Vec<&KeyValue> = kvs.iter().collect();
    by_revision.sort_by_key(|kv| (kv.create_revision(), kv.key().to_vec()));
    let segment = |kv: &KeyValue| -> String {
        relative(kv.key(), name)
            .split('/')
            .next()
            .unwrap_or("")
            .to_string()
    };
    match recipe {
        // A line: the first holds (or leads); each other waits for the
        // key just before it to go (its predecessor).
        Recipe::Mutex | Recipe::Election => {
            let (first, rest) = match recipe {
                Recipe::Mutex => (Role::Holder, Role::Waiter),
                _ => (Role::Leader, Role::Candidate),
            };
            let mut keys: Vec<KeyView> = Vec::new();
            for (i, kv) in by_revision.iter().enumerate() {
                let role = if i == 0 { first } else { rest };
                let watches = keys.last().map(|k: &KeyView| k.key.clone());
                keys.push(view(kv, name, role, watches));
            }
            keys
        }
        // Readers hold together until the first writer; a writer waits for
        // the key before it, a reader for the last writer before it.
        Recipe::RwMutex => {
            let mut keys: Vec<KeyView> = Vec::new();
            let mut last_writer: Option<String> = None;
            for kv in by_revision {
                let writer = segment(kv) == "write";
                let holder = keys.is_empty() || (!writer && last_writer.is_none());
                let watches = if holder {
                    None
                } else if writer {
                    keys.last().map(|k| k.key.clone())
                } else {
                    last_writer.clone()
                };
                let role = if holder { Role::Holder } else { Role::Waiter };
                keys.push(view(kv, name, role, watches));
                if writer {
                    last_writer = Some(relative(kv.key(), name));
                }
            }
            keys
        }
        Recipe::Semaphore => {
            let mut keys: Vec<KeyView> = Vec::new();
            let mut line: Vec<KeyView> = Vec::new();
            for kv in by_revision {
                match segment(kv).as_str() {
                    "permits" => keys.push(view(kv, name, Role::Permit, None)),
                    "line" => {
                        let watches = line.last().map(|k| k.key.clone());
                        line.push(view(kv, name, Role::Waiter, watches));
                    }
                    _ => keys.push(view(kv, name, Role::Other, None)),
                }
            }
            keys.extend(line);
            keys
        }
        Recipe::Queue => by_revision
            .iter()
            .map(|kv| view(kv, name, Role::Item, None))
            .collect(),
        Recipe::PriorityQueue => {
            let mut by_key: Vec<&KeyValue> = kvs.iter().collect();
            by_key.sort_by_key(|kv| kv.key().to_vec());
            by_key
                .iter()
                .map(|kv| view(kv, name, Role::Item, None))
                .collect()
        }
        Recipe::WorkQueue => {
            let order = ["items", "claims", "deliveries", "dead"];
            let mut keys: Vec<(usize, KeyView)> = by_revision
                .iter()
                .map(|kv| {
                    let seg = segment(kv);
                    let role = match seg.as_str() {
                        "items" => Role::Item,
                        "claims" => Role::Claim,
                        "deliveries" => Role::Deliveries,
                        "dead" => Role::DeadLetter,
                        _ => Role::Other,
                    };
                    let rank =
                        order.iter().position(|s| *s == seg).unwrap_or(order.len());
                    (rank, view(kv, name, role, None))
                })
                .collect();
            keys.sort_by_key(|(rank, k)| (*rank, k.create_revision));
            keys.into_iter().map(|(_, k)| k).collect()
        }
        Recipe::Barrier => by_revision
            .iter()
            .map(|kv| view(kv, name, Role::Barrier, None))
            .collect(),
        Recipe::DoubleBarrier => by_revision
            .iter()
            .map(|kv| {
                let role = if segment(kv) == "ready" {
                    Role::Ready
                } else {
                    Role::Participant
                };
                view(kv, name, role, None)
            })
            .collect(),
        Recipe::Unknown => by_revision
            .iter()
            .map(|kv| view(kv, name, Role::Other, None))
            .collect(),
    }
}

impl Snapshot {
    /// The model as JSON: what `--once --json` prints.
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "recipe": format!("{:?}", self.recipe),
            "layout": self.recipe.layout(),
            "revision": self.revision,
            "keys": self.keys.iter().map(|k| json!({
                "key": k.key,
                "role": k.role.as_str(),
                "create_revision": k.create_revision,
                "lease": format!("{:x}", k.lease),
                "ttl": k.ttl,
                "watches": k.watches,
                "value": k.value,
                "gone": k.gone,
            })).collect::<Vec<_>>(),
        })
    }
}

/// The view over time: the last snapshot, the keys that went away a
/// moment ago (shown greyed, as "gone"), and a log of events.
#[derive(Debug, Clone)]
pub struct Live {
    pub now: Snapshot,
    pub gone: Vec<(KeyView, Instant)>,
    pub log: Vec<String>,
}

/// How long a key that went away stays on screen.
pub const GONE_FOR: std::time::Duration = std::time::Duration::from_secs(5);
/// How many lines the event log keeps.
const LOG_LINES: usize = 200;

impl Live {
    pub fn new(now: Snapshot) -> Self {
        Live {
            now,
            gone: Vec::new(),
            log: Vec::new(),
        }
    }

    /// Takes a new snapshot: keys in the old one but not in the new are
    /// gone (a delete, or their lease ran out).
    pub fn update(&mut self, next: Snapshot) {
        let at = next.read_at;
        for old in &self.now.keys {
            if !next.keys.iter().any(|k| k.key == old.key) {
                let mut gone = old.clone();
                gone.gone = true;
                self.gone.push((gone, at));
            }
        }
        self.gone.retain(|(k, since)| {
            at.duration_since(*since) < GONE_FOR
                && !next.keys.iter().any(|n| n.key == k.key)
        });
        self.now = next;
    }

    /// Adds a line to the event log.
    pub fn event(&mut self, line: String) {
        self.log.push(line);
        if self.log.len() > LOG_LINES {
            self.log.remove(0);
        }
    }

    /// What to draw: the keys now, then those gone a moment ago.
    pub fn rows(&self) -> Vec<KeyView> {
        self.now
            .keys
            .iter()
            .cloned()
            .chain(self.gone.iter().map(|(k, _)| k.clone()))
            .collect()
    }
}

/// Follows `name`: a watch on its keys (and its fences), a new snapshot on
/// every event and every second (for the leases), each sent to `view`
/// with the events logged. Ends when nobody looks any more.
pub async fn follow(
    client: Client,
    name: String,
    forced: Option<Recipe>,
    view: tokio::sync::watch::Sender<Live>,
) -> anyhow::Result<()> {
    use concurrency_patterns::distributed::etcd::etcd_client::{
        EventType, WatchOptions,
    };
    let mut watcher = client.clone();
    let mut keys = watcher
        .watch(name.as_str(), Some(WatchOptions::new().with_prefix()))
        .await?;
    let mut fences = watcher
        .watch(fence_prefix(&name), Some(WatchOptions::new().with_prefix()))
        .await?;
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        let events = tokio::select! {
            message = keys.message() => message?.map(|m| m.events().to_vec()),
            message = fences.message() => message?.map(|m| m.events().to_vec()),
            _ = tick.tick() => Some(Vec::new()),
        };
        let Some(events) = events else {
            anyhow::bail!("the watch ended");
        };
        let next = snapshot(&client, &name, forced).await?;
        // The leases of the keys as last seen: a delete event carries none.
        let leases: HashMap<String, i64> = view
            .borrow()
            .now
            .keys
            .iter()
            .map(|k| (k.key.clone(), k.lease))
            .collect();
        let mut lines = Vec::new();
        for event in &events {
            let Some(kv) = event.kv() else { continue };
            let key = relative(kv.key(), &name);
            let line = match event.event_type() {
                EventType::Put => {
                    let what = if kv.version() == 1 {
                        "created"
                    } else {
                        "updated"
                    };
                    let lease = match kv.lease() {
                        0 => String::new(),
                        lease => format!(" on lease {lease:x}"),
                    };
                    format!("rev {} {what} {key}{lease}", kv.mod_revision())
                }
                EventType::Delete => match leases.get(&key).copied().unwrap_or(0) {
                    0 => format!("rev {} deleted {key}", kv.mod_revision()),
                    lease => {
                        // Deleted with its lease still there: released; with
                        // the lease gone too: the lease ended (or was revoked).
                        let alive = client
                            .clone()
                            .lease_time_to_live(lease, None)
                            .await
                            .is_ok_and(|r| r.ttl() > 0);
                        let why = if alive { "" } else { ", its lease ended" };
                        format!(
                            "rev {} deleted {key} (lease {lease:x}{why})",
                            kv.mod_revision()
                        )
                    }
                },
            };
            lines.push(line);
        }
        view.send_modify(|live| {
            live.update(next);
            for line in lines {
                live.event(line);
            }
        });
        if view.is_closed() {
            return Ok(());
        }
    }
}
