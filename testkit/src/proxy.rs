//! A TCP proxy on loopback whose link can stop forwarding: the fault a kill
//! does not show. A member that dies closes its connections and clients
//! learn at once; a link that silently drops packets (a partition, a hung
//! switch) leaves connections open and requests unanswered, and only
//! timeouts tell.
//!
//! Std threads, no runtime: usable from sync and async tests alike.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::SeqCst};
use std::thread;
use std::time::Duration;

use crate::TestkitError;

/// How often the proxy's threads look at their flags.
const TICK: Duration = Duration::from_millis(20);

/// Forwards connections from a free `127.0.0.1` port to `target`, both
/// ways, until told to stop forwarding; then every byte in either direction
/// is read and dropped, connections stay open and nothing is answered.
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
    /// and connections stay open.
    pub fn stop_forwarding(&self) {
        self.flags.blackhole.store(true, SeqCst);
    }

    /// Forwards again (bytes dropped meanwhile stay lost).
    pub fn resume_forwarding(&self) {
        self.flags.blackhole.store(false, SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.flags.closed.store(true, SeqCst);
    }
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
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    let flags = flags.clone();
                    let _ = thread::Builder::new()
                        .name("testkit-proxy-link".into())
                        .spawn(move || pump(from, to, flags));
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(TICK),
            Err(_) => thread::sleep(TICK),
        }
    }
}

/// Copies `from` to `to` while forwarding, drops bytes while not, and ends
/// when either side closes or the proxy is dropped.
fn pump(mut from: TcpStream, mut to: TcpStream, flags: Arc<Flags>) {
    let _ = from.set_read_timeout(Some(TICK));
    let mut buffer = [0u8; 16 * 1024];
    while !flags.closed.load(SeqCst) {
        match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                if !flags.blackhole.load(SeqCst) && to.write_all(&buffer[..n]).is_err()
                {
                    break;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_then_drops_without_closing() {
        let echo = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let target = echo.local_addr().unwrap();
        thread::spawn(move || {
            let (mut conn, _) = echo.accept().unwrap();
            let mut buffer = [0u8; 64];
            while let Ok(n) = conn.read(&mut buffer) {
                if n == 0 || conn.write_all(&buffer[..n]).is_err() {
                    break;
                }
            }
        });
        let proxy = TcpProxy::start(target).unwrap();
        let mut client = TcpStream::connect(proxy.addr()).unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        client.write_all(b"ping").unwrap();
        let mut answer = [0u8; 4];
        client.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"ping");
        proxy.stop_forwarding();
        client.write_all(b"lost").unwrap();
        let silent = client.read(&mut answer);
        assert!(
            matches!(&silent, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
            "the link answered or closed while not forwarding: {silent:?}"
        );
    }

    #[test]
    fn only_loopback_targets() {
        assert!(TcpProxy::start("192.0.2.1:80".parse().unwrap()).is_err());
    }
}
