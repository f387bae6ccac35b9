//! The consumer's half of the wakeup protocol: publish, fence, re-check.
//!
//! See the [module docs](super) for why the fence is there. This file uses
//! only the atomics shim, so `tests/loom.rs` can model it under `--cfg bpf_ringbuf_loom`.

use super::sync::{fence, AtomicU32, AtomicUsize, Ordering};

/// Publishes `pos` as the consumer position, then reports whether the ring is
/// empty at `pos`, in a way that cannot lose a wakeup.
///
/// Returns `true` when it is safe to sleep: `producer_pos` was still `pos`
/// after the fence, so any record reserved later will see our published
/// position in the kernel's commit path and wake us. Returns `false` when a
/// record was reserved meanwhile (it may still be BUSY).
///
/// `FENCE = false` exists only so the loom model can show that the fence is
/// load-bearing; the reader always uses `true`.
#[inline]
pub(crate) fn publish_and_check_empty<const FENCE: bool>(
    consumer_pos: &AtomicUsize,
    producer_pos: &AtomicUsize,
    pos: usize,
) -> bool {
    // Release: pairs with the kernel's smp_load_acquire(&rb->consumer_pos) in
    // __bpf_ringbuf_reserve; every byte before `pos` is no longer read by us.
    consumer_pos.store(pos, Ordering::Release);
    if FENCE {
        // SeqCst fence (StoreLoad): pairs with the full barrier of the kernel's
        // xchg(&hdr->len) in bpf_ringbuf_commit, which is followed by its read
        // of consumer_pos. Either we see the new producer_pos below, or the
        // kernel sees the consumer_pos we just stored and sends the wakeup.
        fence(Ordering::SeqCst);
    }
    // Relaxed, then an Acquire fence (the producer page is mapped read-only;
    // see RawRing::load_producer): pairs with smp_store_release(&rb->producer_pos)
    // in __bpf_ringbuf_reserve.
    let prod = producer_pos.load(Ordering::Relaxed);
    fence(Ordering::Acquire);
    prod == pos
}

/// Publishes `pos` and fences, like [`publish_and_check_empty`], for the
/// case where the record at `pos` is BUSY: afterwards the caller re-reads
/// that header (Acquire). Either it sees the commit, or the kernel's commit
/// path sees `consumer_pos == pos` and wakes us (the same pairing as above,
/// with the header's `xchg` itself as the kernel's access).
#[inline]
pub(crate) fn publish_and_fence(consumer_pos: &AtomicUsize, pos: usize) {
    // Release: as in `publish_and_check_empty`.
    consumer_pos.store(pos, Ordering::Release);
    // SeqCst fence (StoreLoad): as in `publish_and_check_empty`.
    fence(Ordering::SeqCst);
}

/// The kernel's half, for models and the fake ring: after the commit `xchg`
/// of the header at `rec_pos`, the producer wakes the consumer only if the
/// published consumer position equals `rec_pos` (it had caught up).
#[cfg_attr(
    not(any(test, feature = "testing")),
    expect(dead_code, reason = "used by the fake ring and the loom model")
)]
#[inline]
pub(crate) fn commit_needs_wakeup(
    header: &AtomicU32,
    new_len: u32,
    consumer_pos: &AtomicUsize,
    rec_pos: usize,
) -> bool {
    // SeqCst swap: the kernel's xchg is a full barrier (smp_mb before and after).
    header.swap(new_len, Ordering::SeqCst);
    // The smp_mb *after* the xchg is what pairs with the consumer's fence in
    // `publish_and_check_empty`: a SeqCst RMW alone does not order the
    // following (non-SeqCst) load of consumer_pos in the language's model,
    // and loom indeed finds the lost wakeup without this fence.
    fence(Ordering::SeqCst);
    // The kernel reads consumer_pos with smp_load_acquire after the xchg.
    // (Relaxed + fence: on a user ring buffer this page is read-only to the
    // producer; the same code serves both.)
    let cons = consumer_pos.load(Ordering::Relaxed);
    fence(Ordering::Acquire);
    cons == rec_pos
}
