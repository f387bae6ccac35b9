//! A producer thread following the kernel's sequence (BUSY header, release of
//! `producer_pos`, payload, commit swap, adaptive wakeup) against the real
//! [`Consumer`] on another thread, over plain memory. Under Miri this checks
//! that every payload byte the consumer reads is ordered after the
//! producer's writes, and every reuse of space after the consumer's release
//! (its data-race detector would report otherwise). Scaled down under Miri.

use std::cell::UnsafeCell;
use std::ops::ControlFlow;
use std::ptr::NonNull;
use std::sync::Arc;

use super::consumer::Consumer;
use super::sync::{AtomicU32, AtomicUsize, Ordering};
use super::wakeup::{commit_needs_wakeup, BUSY_BIT, DISCARD_BIT};
use super::{RawRing, HDR_SZ};

const SIZE: usize = 256;

/// Positions and a data area of `2 * SIZE` bytes whose second half the
/// producer keeps a copy of the first (the double mapping, by hand).
#[derive(Debug)]
struct Mem {
    cons: AtomicUsize,
    prod: AtomicUsize,
    data: Box<[UnsafeCell<u64>]>,
}

// SAFETY: the data cells are written only by the producer into reserved
// records and read by the consumer only after the commit that publishes them
// (the protocol under test); the positions are atomics.
unsafe impl Sync for Mem {}
// SAFETY: as above.
unsafe impl Send for Mem {}

impl Mem {
    fn base(&self) -> *mut u8 {
        UnsafeCell::raw_get(self.data.as_ptr()).cast::<u8>()
    }

    fn header(&self, pos: usize) -> &AtomicU32 {
        // SAFETY: `pos & (SIZE - 1) < SIZE`, 8-aligned (positions are), inside
        // the data area; headers are accessed atomically while live.
        unsafe { &*self.base().add(pos & (SIZE - 1)).cast::<AtomicU32>() }
    }

    /// Writes payload byte `i` of the record at `pos`, in both copies.
    fn put(&self, pos: usize, i: usize, b: u8) {
        let off = (pos + HDR_SZ + i) & (SIZE - 1);
        // SAFETY: `off < SIZE`, so `off` and `off + SIZE` are in the
        // `2 * SIZE` bytes; the record is reserved, so the consumer does not
        // read these bytes before the commit.
        unsafe {
            *self.base().add(off) = b;
            *self.base().add(off + SIZE) = b;
        }
    }
}

fn byte(seq: u64, i: usize) -> u8 {
    (seq as u8).wrapping_mul(31).wrapping_add(i as u8)
}

#[test]
#[cfg_attr(
    miri,
    ignore = "nightly Miri panics (ICE in its weak-memory emulation: \"cannot have empty store \
              buffer when previous write was atomic\") when ring bytes used as an atomic header are \
              later rewritten as plain payload; run with -Zmiri-disable-weak-memory-emulation"
)]
fn producer_thread_and_consumer_agree() {
    let n: u64 = if cfg!(miri) { 60 } else { 20_000 };
    let mem = Arc::new(Mem {
        cons: AtomicUsize::new(0),
        prod: AtomicUsize::new(0),
        data: (0..2 * SIZE / 8).map(|_| UnsafeCell::new(0)).collect(),
    });
    let data = NonNull::new(mem.base()).unwrap();
    // SAFETY: the words and the `2 * SIZE` data bytes live in `mem`, which
    // the consumer keeps (its `mem` box) and the producer holds an `Arc` of.
    let ring = unsafe {
        RawRing::new(
            NonNull::from(&mem.cons).cast(),
            NonNull::from(&mem.prod).cast(),
            data,
            SIZE,
        )
    };
    // SAFETY: the box owns an `Arc` of the memory `ring` points into.
    let mut cur = unsafe { Consumer::new(ring, Box::new(Arc::clone(&mem))) }.unwrap();
    let producer = {
        let mem = Arc::clone(&mem);
        std::thread::spawn(move || {
            let mut seq = 0u64;
            let mut wakeups = 0u64;
            while seq < n {
                let len = (seq as usize * 13) % 40;
                let stride = (len + HDR_SZ + 7) & !7;
                // Relaxed: only this thread writes producer_pos.
                let pos = mem.prod.load(Ordering::Relaxed);
                // Acquire: pairs with the consumer's Release publication.
                let cons = mem.cons.load(Ordering::Acquire);
                if pos + stride - cons > SIZE - 1 {
                    std::thread::yield_now();
                    continue;
                }
                // Relaxed: published by the Release store just below.
                mem.header(pos)
                    .store(len as u32 | BUSY_BIT, Ordering::Relaxed);
                // Release: as smp_store_release(&rb->producer_pos).
                mem.prod.store(pos + stride, Ordering::Release);
                for i in 0..len {
                    mem.put(pos, i, byte(seq, i));
                }
                let word = if seq % 5 == 4 {
                    len as u32 | DISCARD_BIT
                } else {
                    len as u32
                };
                if commit_needs_wakeup(mem.header(pos), word, &mem.cons, pos) {
                    wakeups += 1;
                }
                seq += 1;
            }
            wakeups
        })
    };
    let mut next = 0u64;
    let expect = |seq: &mut u64, rec: &[u8]| {
        while *seq % 5 == 4 {
            *seq += 1;
        }
        let len = (*seq as usize * 13) % 40;
        assert_eq!(rec.len(), len, "seq {seq}");
        for (i, &b) in rec.iter().enumerate() {
            assert_eq!(b, byte(*seq, i), "seq {seq} byte {i}");
        }
        *seq += 1;
    };
    let last = (0..n).rev().find(|s| s % 5 != 4).unwrap();
    let mut turn = 0u32;
    while next <= last {
        turn += 1;
        if turn % 2 == 0 {
            cur.drain(7, usize::MAX, |rec| {
                expect(&mut next, rec);
                ControlFlow::Continue(())
            });
        } else {
            let _ = cur.reload();
            while let super::consumer::Step::Record(rec) = cur.step() {
                expect(&mut next, rec);
            }
            cur.publish();
        }
        std::thread::yield_now();
    }
    producer.join().unwrap();
}
