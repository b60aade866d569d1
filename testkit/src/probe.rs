//! Tiny health probes that need no client library: an HTTP/1.0 GET for etcd's
//! `/health` and `/metrics`, and an inline `PING` for Redis.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// Sends `GET path` to `addr` and returns the response (headers and body), or
/// `None` if nothing answered in time.
pub(crate) fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// True when the etcd member whose client port is `addr` reports itself
/// healthy (it has a leader and can serve a read).
pub fn etcd_is_healthy(addr: SocketAddr) -> bool {
    http_get(addr, "/health")
        .map(|response| response.contains("\"health\":\"true\""))
        .unwrap_or(false)
}

/// True when the etcd member at `addr` says it is the Raft leader. Read from
/// its Prometheus metrics, which need no authentication.
pub(crate) fn etcd_is_leader(addr: SocketAddr) -> bool {
    http_get(addr, "/metrics")
        .map(|metrics| {
            metrics
                .lines()
                .any(|line| line.trim() == "etcd_server_is_leader 1")
        })
        .unwrap_or(false)
}

/// The member id (hex) of the etcd member whose metrics listen on `addr`,
/// from the `etcd_server_id{server_id="…"}` gauge.
pub(crate) fn etcd_member_id(addr: SocketAddr) -> Option<String> {
    let metrics = http_get(addr, "/metrics")?;
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix("etcd_server_id{server_id=\"")?;
        let (id, _) = rest.split_once('"')?;
        Some(id.to_ascii_lowercase())
    })
}

/// True when a Redis server answers on `addr`, with `+PONG`, or with
/// `-NOAUTH` when it requires a password: both mean it is up.
pub fn redis_answers(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT) else {
        return false;
    };
    if stream.set_read_timeout(Some(PROBE_TIMEOUT)).is_err()
        || stream.write_all(b"PING\r\n").is_err()
    {
        return false;
    }
    let mut reply = [0u8; 64];
    match stream.read(&mut reply) {
        Ok(n) => {
            let reply = &reply[..n];
            reply.starts_with(b"+PONG") || reply.starts_with(b"-NOAUTH")
        }
        Err(_) => false,
    }
}

/// How many gRPC calls the etcd member at `addr` has started since it began
/// (`grpc_server_started_total`, summed over methods), from its metrics.
///
/// Benchmarks read it before and after a run to report real round trips per
/// operation rather than what the code is believed to send. A watch stream
/// counts once however many events it carries.
pub fn etcd_grpc_calls(addr: SocketAddr) -> Option<u64> {
    etcd_grpc_calls_of(addr, &[])
}

/// As [`etcd_grpc_calls`], counting only the calls of these gRPC methods
/// (`Txn`, `Range`, `Put`, `DeleteRange`, `Watch`, `LeaseGrant`, ...); all
/// of them when `methods` is empty.
pub fn etcd_grpc_calls_of(addr: SocketAddr, methods: &[&str]) -> Option<u64> {
    let metrics = http_get(addr, "/metrics")?;
    let total = metrics
        .lines()
        .filter(|line| line.starts_with("grpc_server_started_total{"))
        .filter(|line| {
            methods.is_empty()
                || methods
                    .iter()
                    .any(|m| line.contains(&format!("grpc_method=\"{m}\"")))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>();
    // Counters are printed as floats; they hold whole numbers.
    Some(total as u64)
}
