//! Reads of several items that fit in one reply.
//!
//! A read of the 16 oldest queue items brings their values along. Each may
//! be as large as etcd's request limit (1.5 MiB by default), and the gRPC
//! client accepts at most 4 MiB in one reply: a few large items would make
//! every read fail, and every dequeue with it. So a batch shrinks when a
//! reply was too large — to a single item if need be, which always fits
//! under the server's own limit — and grows back once reads have fit for a
//! while.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering::Relaxed};

use etcd_client::GetResponse;
use tracing::debug;

use crate::etcd::EtcdError;

/// Reads that fit at this size this many times in a row let it grow again.
const FITS_BEFORE_GROWING: u32 = 32;

/// How many items one read asks for: at most `max`, fewer after a reply
/// that was too large.
#[derive(Debug)]
pub(crate) struct Batch {
    max: i64,
    current: AtomicI64,
    fits: AtomicU32,
}

impl Batch {
    pub(crate) fn new(max: i64) -> Self {
        let max = max.max(1);
        Batch {
            max,
            current: AtomicI64::new(max),
            fits: AtomicU32::new(0),
        }
    }

    /// Runs `read` with a limit on the number of items; if the reply was
    /// too large for the client, again with a smaller one. Returns the
    /// reply and the limit it was read with.
    pub(crate) async fn read<F, Fut>(
        &self,
        mut read: F,
    ) -> Result<(GetResponse, i64), EtcdError>
    where
        F: FnMut(i64) -> Fut,
        Fut: Future<Output = Result<GetResponse, EtcdError>>,
    {
        loop {
            let limit = self.current.load(Relaxed);
            match read(limit).await {
                Ok(response) => {
                    if limit < self.max
                        && self.fits.fetch_add(1, Relaxed) + 1 >= FITS_BEFORE_GROWING
                    {
                        self.fits.store(0, Relaxed);
                        self.current.store((limit * 2).min(self.max), Relaxed);
                    }
                    return Ok((response, limit));
                }
                Err(error) if limit > 1 && reply_too_large(&error) => {
                    let smaller = (limit / 4).max(1);
                    debug!(
                        limit,
                        smaller, "a batch of items was too large for one reply"
                    );
                    self.fits.store(0, Relaxed);
                    self.current.store(smaller, Relaxed);
                }
                Err(error) => return Err(error),
            }
        }
    }
}

/// Whether the client refused a reply for its size.
fn reply_too_large(error: &EtcdError) -> bool {
    matches!(error, EtcdError::Client(etcd_client::Error::GRpcStatus(status))
        if status.code() == tonic::Code::OutOfRange && status.message().contains("too large"))
}
