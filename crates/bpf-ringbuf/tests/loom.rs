//! Loom model of the wakeup protocol (see the `ring` module docs), over the
//! very functions the reader and the fake ring use: `src/ring/wakeup.rs` is
//! included here with loom's atomics behind its `super::sync` shim.
//!
//! Run with `scripts/loom.sh`, i.e.
//! `RUSTFLAGS="--cfg bpf_ringbuf_loom" cargo test -p bpf-ringbuf --test loom --release`.
//!
//! The scenario is the one that hangs edge-triggered readers: the consumer
//! has read the record at 0 and is about to sleep, so it publishes its
//! position (16), fences, and re-checks `producer_pos`; meanwhile one or two
//! producers reserve the next records (the kernel's spinlock serialises
//! reservations) and commit them, in any order, waking the consumer only if
//! the published position equals their record's position. Under
//! edge-triggered epoll a wakeup sent at any time during this round is
//! delivered; none sent means the sleeper never wakes. So: the consumer
//! decides to sleep ⇒ some producer sent a wakeup.
//!
//! `rings_round` extends it to several rings sharing one sleep (a
//! `RingSet`): every ring is published, fenced and re-checked before it, and
//! a producer on any ring must wake the set.
#![cfg(bpf_ringbuf_loom)]

use loom::sync::atomic::AtomicBool;
use loom::sync::{Arc, Mutex};
use loom::thread;

/// The shim `wakeup.rs` imports as `super::sync`.
mod sync {
    pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicUsize, Ordering};
}

/// The header format, as the crate declares it.
#[path = "../src/ring/abi.rs"]
#[expect(dead_code, reason = "the model uses only the flag bits")]
mod abi;
#[path = "../src/ring/wakeup.rs"]
mod wakeup;

use abi::{BUSY_BIT, DISCARD_BIT};
use sync::{AtomicU32, AtomicUsize, Ordering};
use wakeup::{commit_needs_wakeup, publish_and_check_empty};

const STRIDE: usize = 16;
const LEN: u32 = 8;

struct Ring {
    consumer_pos: AtomicUsize,
    producer_pos: AtomicUsize,
    /// Headers of the records at 16 and 32.
    headers: [AtomicU32; 2],
    /// The kernel's rb->spinlock around reservations.
    lock: Mutex<()>,
    /// An edge the consumer's epoll would report.
    woken: AtomicBool,
}

fn producer(ring: &Ring, discard: bool) {
    let pos = {
        let _g = ring.lock.lock().unwrap();
        // Relaxed: only the lock holder writes producer_pos.
        let pos = ring.producer_pos.load(Ordering::Relaxed);
        let hdr = &ring.headers[(pos - STRIDE) / STRIDE];
        // Relaxed: published by the Release store of producer_pos just below.
        hdr.store(LEN | BUSY_BIT, Ordering::Relaxed);
        // Release: smp_store_release(&rb->producer_pos) in __bpf_ringbuf_reserve.
        ring.producer_pos.store(pos + STRIDE, Ordering::Release);
        pos
    };
    let word = if discard { LEN | DISCARD_BIT } else { LEN };
    let hdr = &ring.headers[(pos - STRIDE) / STRIDE];
    if commit_needs_wakeup(hdr, word, &ring.consumer_pos, pos) {
        ring.woken.store(true, Ordering::Release);
    }
}

/// One round; panics if the consumer goes to sleep with no wakeup coming.
fn round<const FENCE: bool>(producers: usize) {
    let ring = Arc::new(Ring {
        // The consumer read the record at 0 but has not published yet.
        consumer_pos: AtomicUsize::new(0),
        producer_pos: AtomicUsize::new(STRIDE),
        headers: [AtomicU32::new(0), AtomicU32::new(0)],
        lock: Mutex::new(()),
        woken: AtomicBool::new(false),
    });
    let handles: Vec<_> = (0..producers)
        .map(|i| {
            let ring = Arc::clone(&ring);
            thread::spawn(move || producer(&ring, i == 1))
        })
        .collect();
    let sleeps = publish_and_check_empty::<FENCE>(&ring.consumer_pos, &ring.producer_pos, STRIDE);
    for h in handles {
        h.join().unwrap();
    }
    if sleeps {
        assert!(
            ring.woken.load(Ordering::Acquire),
            "lost wakeup: the consumer sleeps, no producer woke it, and records are in the ring"
        );
    } else {
        // Something was reserved: the consumer reads on (a BUSY record makes
        // it back off, not sleep), so it needs no wakeup.
        assert_ne!(ring.producer_pos.load(Ordering::Acquire), STRIDE);
    }
}

#[test]
fn fence_one_producer_no_lost_wakeup() {
    loom::model(|| round::<true>(1));
}

#[test]
fn fence_two_producers_out_of_order_no_lost_wakeup() {
    loom::model(|| round::<true>(2));
}

/// Without the fence, loom finds the store-buffering interleaving that loses
/// the wakeup. This test keeps the fence from being deleted silently.
#[test]
#[should_panic(expected = "lost wakeup")]
fn no_fence_loses_a_wakeup() {
    loom::model(|| round::<false>(1));
}

/// Several rings sharing one sleep (a `RingSet`): the consumer publishes,
/// fences and re-checks each ring in turn, and sleeps only if every ring
/// was empty at its re-check. Each ring is in the state of `round` (the
/// record at 0 read, not yet published); a producer on each ring listed in
/// `producing` reserves and commits the next record meanwhile. Any ring's
/// wakeup is the set's (one epoll instance): the consumer decides to sleep
/// ⇒ some producer woke it.
fn rings_round<const FENCE: bool>(rings: usize, producing: &'static [usize]) {
    let rings: Arc<Vec<Ring>> = Arc::new(
        (0..rings)
            .map(|_| Ring {
                consumer_pos: AtomicUsize::new(0),
                producer_pos: AtomicUsize::new(STRIDE),
                headers: [AtomicU32::new(0), AtomicU32::new(0)],
                lock: Mutex::new(()),
                woken: AtomicBool::new(false),
            })
            .collect(),
    );
    let handles: Vec<_> = producing
        .iter()
        .map(|&r| {
            let rings = Arc::clone(&rings);
            thread::spawn(move || producer(&rings[r], false))
        })
        .collect();
    // Every ring is published, fenced and re-checked before the one sleep.
    let mut sleeps = true;
    for ring in rings.iter() {
        sleeps &= publish_and_check_empty::<FENCE>(&ring.consumer_pos, &ring.producer_pos, STRIDE);
    }
    for h in handles {
        h.join().unwrap();
    }
    if sleeps {
        assert!(
            rings.iter().any(|r| r.woken.load(Ordering::Acquire)),
            "lost wakeup: the set sleeps, no ring woke it, and records are in a ring"
        );
    } else {
        assert!(rings
            .iter()
            .any(|r| r.producer_pos.load(Ordering::Acquire) != STRIDE));
    }
}

#[test]
fn fence_two_rings_a_producer_on_each_no_lost_wakeup() {
    loom::model(|| rings_round::<true>(2, &[0, 1]));
}

#[test]
fn fence_three_rings_a_producer_on_the_first_no_lost_wakeup() {
    // The first ring is re-checked longest before the sleep.
    loom::model(|| rings_round::<true>(3, &[0]));
}

/// Without the fence, the many-ring sleep loses a wakeup too.
#[test]
#[should_panic(expected = "lost wakeup")]
fn no_fence_two_rings_lose_a_wakeup() {
    loom::model(|| rings_round::<false>(2, &[1]));
}
