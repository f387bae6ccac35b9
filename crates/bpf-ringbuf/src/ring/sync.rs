//! The atomics shim: `std` normally, `loom` under `--cfg loom`, so the loom
//! model in `tests/loom.rs` checks the very functions the reader calls.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicUsize, Ordering};
