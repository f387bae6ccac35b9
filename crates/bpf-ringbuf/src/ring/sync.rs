//! The atomics shim: `std` normally, `loom` under `--cfg bpf_ringbuf_loom`, so the loom
//! model in `tests/loom.rs` checks the very functions the reader calls.

#[cfg(bpf_ringbuf_loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicUsize, Ordering};
#[cfg(not(bpf_ringbuf_loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicUsize, Ordering};
