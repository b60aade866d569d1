//! A TCP proxy on loopback whose link can fail the ways a network does:
//! the faults a kill does not show. A member that dies closes its
//! connections and clients learn at once; a link that silently drops
//! packets (a partition, a hung switch) leaves connections open and
//! requests unanswered, and only timeouts tell. A slow link delays every
//! byte; a middlebox that resets drops every connection at once.
//!
//! One proxy stands for one member (or one server): put one in front of
//! each, and cut, slow, reset and heal them one at a time.
//!
//! Std threads, no runtime: usable from sync and async tests alike.

use std::collections::HashSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::TestkitError;

/// How often the proxy's threads look at their flags.
const TICK: Duration = Duration::from_millis(20);

/// Forwards connections from a free `127.0.0.1` port to `target`, both
/// ways, until told otherwise:
///
/// - [`blackhole`](Self::blackhole): every byte in either direction is
///   read and dropped; connections stay open and nothing is answered;
/// - [`delay`](Self::delay): every chunk waits a base latency plus a random
///   jitter before it is passed on (in order);
/// - [`reset_connections`](Self::reset_connections): every open connection
///   is closed at once; new ones are accepted;
/// - [`blackhole_from`](Self::blackhole_from): only the connections whose
///   HTTP request names this sender in `X-Server-From` (etcd's peers do)
///   are blackholed: one member's traffic to another can be cut, the rest
///   of the member's traffic kept;
/// - [`heal`](Self::heal): forwarding again, with no added latency (bytes
///   dropped meanwhile stay lost).
///
/// Dropping the proxy closes its port and every connection through it.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    flags: Arc<Flags>,
}

#[derive(Debug, Default)]
struct Flags {
    /// Bytes are dropped instead of forwarded while set.
    blackhole: AtomicBool,
    /// Added latency per chunk, and the most random jitter on top (µs).
    latency_us: AtomicU64,
    jitter_us: AtomicU64,
    /// Raised by each reset: connections of an older epoch close.
    epoch: AtomicU64,
    /// Bytes passed on, both ways, since the proxy started.
    forwarded: AtomicU64,
    /// Senders (`X-Server-From`) whose connections are blackholed.
    cut_senders: Mutex<HashSet<String>>,
    /// The proxy is gone: every thread ends.
    closed: AtomicBool,
}

impl TcpProxy {
    /// A proxy to `target` (a loopback address) on a free port.
    pub fn start(target: SocketAddr) -> Result<TcpProxy, TestkitError> {
        if !target.ip().is_loopback() {
            return Err(TestkitError::io(
                "starting a proxy",
                std::io::Error::new(
                    ErrorKind::InvalidInput,
                    "the target must be a loopback address",
                ),
            ));
        }
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .map_err(|e| TestkitError::io("binding the proxy's port", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| TestkitError::io("reading the proxy's port", e))?;
        listener.set_nonblocking(true).map_err(|e| {
            TestkitError::io("setting the proxy's port non-blocking", e)
        })?;
        let flags = Arc::new(Flags::default());
        let accepting = flags.clone();
        thread::Builder::new()
            .name("testkit-proxy".into())
            .spawn(move || accept(listener, target, accepting))
            .map_err(|e| TestkitError::io("starting the proxy's thread", e))?;
        Ok(TcpProxy { addr, flags })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops forwarding: from now on, bytes in both directions are dropped
    /// and connections stay open — a partition.
    pub fn blackhole(&self) {
        self.flags.blackhole.store(true, SeqCst);
    }

    /// Delays every chunk, both ways, by `latency` plus a random part of
    /// `jitter` (order kept).
    pub fn delay(&self, latency: Duration, jitter: Duration) {
        self.flags.latency_us.store(micros(latency), SeqCst);
        self.flags.jitter_us.store(micros(jitter), SeqCst);
    }

    /// Blackholes the connections that say they come from `sender` (the
    /// `X-Server-From` header of their HTTP request: an etcd member's id
    /// in hex), now and from now on, until [`heal`](Self::heal).
    pub fn blackhole_from(&self, sender: &str) {
        self.flags
            .cut_senders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sender.to_ascii_lowercase());
    }

    /// How many bytes the proxy has passed on, both ways, since it started:
    /// a test can wait for a client's next request to go through.
    pub fn bytes_forwarded(&self) -> u64 {
        self.flags.forwarded.load(SeqCst)
    }

    /// Closes every connection open now, as a reset would; the proxy goes
    /// on accepting new ones.
    pub fn reset_connections(&self) {
        self.flags.epoch.fetch_add(1, SeqCst);
    }

    /// Forwards again, at once, with no added latency (bytes dropped
    /// meanwhile stay lost).
    pub fn heal(&self) {
        self.flags.latency_us.store(0, SeqCst);
        self.flags.jitter_us.store(0, SeqCst);
        self.flags
            .cut_senders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.flags.blackhole.store(false, SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.flags.closed.store(true, SeqCst);
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn accept(listener: TcpListener, target: SocketAddr, flags: Arc<Flags>) {
    while !flags.closed.load(SeqCst) {
        match listener.accept() {
            Ok((client, _)) => {
                let Ok(server) =
                    TcpStream::connect_timeout(&target, Duration::from_secs(5))
                else {
                    continue; // the client sees its connection closed
                };
                let link = Link {
                    epoch: flags.epoch.load(SeqCst),
                    sender: Arc::new(OnceLock::new()),
                };
                for (from, to, upstream) in
                    [(&client, &server, true), (&server, &client, false)]
                {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    let (flags, link) = (flags.clone(), link.clone());
                    let _ = thread::Builder::new()
                        .name("testkit-proxy-link".into())
                        .spawn(move || pump(from, to, flags, link, upstream));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(TICK),
            Err(_) => thread::sleep(TICK),
        }
    }
}

/// What both directions of one connection share.
#[derive(Clone)]
struct Link {
    /// The reset epoch it was accepted in.
    epoch: u64,
    /// Who it says it comes from (`X-Server-From`; empty if it does not
    /// say), learned from the first bytes the client sends.
    sender: Arc<OnceLock<String>>,
}

impl Link {
    /// Whether this connection's sender is cut off.
    fn sender_cut(&self, flags: &Flags) -> bool {
        let Some(sender) = self.sender.get().filter(|s| !s.is_empty()) else {
            return false;
        };
        flags
            .cut_senders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(sender)
    }
}

/// The `X-Server-From` header's value in the start of an HTTP request,
/// lowercased; empty if there is none.
fn sender_of(request_start: &[u8]) -> String {
    let text = String::from_utf8_lossy(request_start);
    text.lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("x-server-from")
                .then(|| value.trim().to_ascii_lowercase())
        })
        .unwrap_or_default()
}

/// Copies `from` to `to` while forwarding (after the added latency, if
/// any), drops bytes while blackholed, and ends when either side closes,
/// the connections are reset, or the proxy is dropped. The `upstream`
/// direction (client to server) learns the connection's sender.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    flags: Arc<Flags>,
    link: Link,
    upstream: bool,
) {
    let _ = from.set_read_timeout(Some(TICK));
    let mut buffer = [0u8; 16 * 1024];
    let mut random = seed();
    while !flags.closed.load(SeqCst) && flags.epoch.load(SeqCst) == link.epoch {
        match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                if upstream && link.sender.get().is_none() {
                    let _ = link.sender.set(sender_of(&buffer[..n]));
                }
                let latency = flags.latency_us.load(SeqCst);
                let jitter = flags.jitter_us.load(SeqCst);
                if latency + jitter > 0 {
                    random ^= random << 13;
                    random ^= random >> 7;
                    random ^= random << 17;
                    let extra = if jitter > 0 { random % jitter } else { 0 };
                    thread::sleep(Duration::from_micros(latency + extra));
                }
                let cut = flags.blackhole.load(SeqCst) || link.sender_cut(&flags);
                if !cut {
                    if to.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                    flags.forwarded.fetch_add(n as u64, SeqCst);
                }
            }
            Err(e)
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// A non-zero seed for one link's jitter.
fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(1);
    u64::from(nanos) | 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// An echo server on a free port; every connection echoes until closed.
    fn echo() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                thread::spawn(move || {
                    let mut buffer = [0u8; 64];
                    while let Ok(n) = conn.read(&mut buffer) {
                        if n == 0 || conn.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn connect(proxy: &TcpProxy) -> TcpStream {
        let client = TcpStream::connect(proxy.addr()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        client
    }

    /// Sends `word` and reads its echo: `Ok(())`, or what happened instead.
    fn round_trip(client: &mut TcpStream, word: &[u8; 4]) -> std::io::Result<()> {
        client.write_all(word)?;
        let mut answer = [0u8; 4];
        client.read_exact(&mut answer)?;
        assert_eq!(&answer, word);
        Ok(())
    }

    fn silent(result: std::io::Result<()>) -> bool {
        matches!(&result, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut))
    }

    #[test]
    fn bytes_pass_a_blackhole_holds_and_heal_resumes() {
        let proxy = TcpProxy::start(echo()).unwrap();
        let mut client = connect(&proxy);
        round_trip(&mut client, b"ping").unwrap();
        proxy.blackhole();
        let cut = round_trip(&mut client, b"lost");
        assert!(silent(cut), "the link answered or closed while cut");
        proxy.heal();
        // The same connection carries bytes again; what was dropped is gone.
        round_trip(&mut client, b"back").unwrap();
    }

    #[test]
    fn a_delay_holds_each_chunk_and_heal_removes_it() {
        let proxy = TcpProxy::start(echo()).unwrap();
        let mut client = connect(&proxy);
        proxy.delay(Duration::from_millis(100), Duration::from_millis(50));
        let started = Instant::now();
        round_trip(&mut client, b"slow").unwrap();
        let took = started.elapsed();
        // Two hops (there and back), each 100–150 ms.
        assert!(took >= Duration::from_millis(200), "{took:?}");
        assert!(took < Duration::from_millis(450), "{took:?}");
        proxy.heal();
        let started = Instant::now();
        round_trip(&mut client, b"fast").unwrap();
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn a_reset_closes_open_connections_and_new_ones_work() {
        let proxy = TcpProxy::start(echo()).unwrap();
        let mut old = connect(&proxy);
        round_trip(&mut old, b"ping").unwrap();
        proxy.reset_connections();
        thread::sleep(TICK * 3);
        let mut answer = [0u8; 4];
        let closed = old.write_all(b"gone").and_then(|_| old.read(&mut answer));
        match closed {
            Ok(0) => {}
            Ok(n) => panic!("a reset connection answered {n} bytes"),
            Err(e) => assert!(
                !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
                "a reset connection still open"
            ),
        }
        let mut new = connect(&proxy);
        round_trip(&mut new, b"anew").unwrap();
    }

    #[test]
    fn a_sender_can_be_cut_alone() {
        let proxy = TcpProxy::start(echo()).unwrap();
        let mut from_a = connect(&proxy);
        let mut from_b = connect(&proxy);
        // The first bytes name the sender, as an etcd peer's request does.
        let request =
            |sender: &str| format!("GET / HTTP/1.1\r\nX-Server-From: {sender}\r\n\r\n");
        for (client, sender) in [(&mut from_a, "AA"), (&mut from_b, "bb")] {
            let request = request(sender);
            client.write_all(request.as_bytes()).unwrap();
            let mut echoed = vec![0u8; request.len()];
            client.read_exact(&mut echoed).unwrap();
        }
        proxy.blackhole_from("aa");
        assert!(
            silent(round_trip(&mut from_a, b"cut!")),
            "a's link still answers"
        );
        round_trip(&mut from_b, b"kept").unwrap();
        proxy.heal();
        round_trip(&mut from_a, b"back").unwrap();
        assert_eq!(sender_of(b"POST /raft HTTP/1.1\r\nHost: x\r\n\r\n"), "");
    }

    #[test]
    fn only_loopback_targets() {
        assert!(TcpProxy::start("192.0.2.1:80".parse().unwrap()).is_err());
    }
}
