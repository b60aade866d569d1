use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

use crate::TestkitError;

/// Ports this process has handed out already, so that two servers started at
/// the same moment by two tests of one binary never get the same port.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The kernel picks it (bind to port 0), then we release it for the server to
/// take. Another process could grab it in between; servers that fail to bind
/// are therefore started again on new ports by the callers.
pub fn free_port() -> Result<u16, TestkitError> {
    for _ in 0..64 {
        let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(|e| {
            TestkitError::io("binding 127.0.0.1:0 to find a free port", e)
        })?;
        let port = listener
            .local_addr()
            .map_err(|e| TestkitError::io("reading a bound port", e))?
            .port();
        let mut guard = HANDED_OUT
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    Err(TestkitError::io(
        "finding a free port",
        std::io::Error::new(std::io::ErrorKind::AddrInUse, "64 tries gave used ports"),
    ))
}
