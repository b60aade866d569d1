//! Memory ordering: publishing data from one thread to others.
//!
//! The Go original stores `data = 42`, then sets a `ready` flag; a reader
//! spins on the flag and then reads `data`. Whether the reader is guaranteed
//! to see 42 depends entirely on the *ordering* of the flag's store and load:
//!
//! - [`Publication`] is the correct version, a one-shot cell: the flag is
//!   stored with `Release` and loaded with `Acquire`, which makes the data
//!   write happen-before every read that sees the flag.
//! - A deliberately wrong `Relaxed` version lives in a test-only module; the
//!   loom models show it lets a reader see the flag but not the data.
//! - The store-buffer litmus test (also test-only) is the classic case where
//!   `Release`/`Acquire` is not enough and a `SeqCst` fence is needed.
//!
//! Run the loom models with `cargo xtask test` (or
//! `RUSTFLAGS="--cfg loom" cargo test -p patterns --release --lib loom`).

mod cell;
#[cfg(any(test, loom))]
mod relaxed;
#[cfg(any(test, loom))]
mod store_buffer;

pub use cell::{AlreadyPublished, Publication};
