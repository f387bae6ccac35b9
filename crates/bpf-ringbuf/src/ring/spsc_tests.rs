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

use super::cursor::{Cursor, Step};
use super::producer::{RawProducer, ReserveError};
use super::sync::AtomicUsize;
use super::RawRing;

const SIZE: usize = 256;

/// Positions and a data area of `2 * SIZE` bytes whose second half the
/// producer keeps equal to the first (the double mapping, by hand).
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
    let data = NonNull::new(UnsafeCell::raw_get(mem.data.as_ptr()).cast::<u8>()).unwrap();
    // SAFETY: the words and the `2 * SIZE` data bytes live in `mem`, which
    // the consumer keeps (its `mem` box) and the producer thread holds an
    // `Arc` of; the data halves are distinct memory (mirrored).
    let ring = unsafe {
        RawRing::new(
            NonNull::from(&mem.cons).cast(),
            NonNull::from(&mem.prod).cast(),
            data,
            SIZE,
        )
    };
    // SAFETY: the box owns an `Arc` of the memory `ring` points into.
    let mut cur = unsafe { Cursor::new(ring, Box::new(Arc::clone(&mem))) }.unwrap();
    // SAFETY: the producer thread holds an `Arc` of `mem` for as long as it
    // uses the producer; it is the only producer; the memory is writable and
    // its data halves distinct (mirrored).
    let p = unsafe { RawProducer::new(ring, true) };
    let producer = {
        let mem = Arc::clone(&mem);
        std::thread::spawn(move || {
            let mut seq = 0u64;
            let mut wakeups = 0u64;
            while seq < n {
                let len = (seq as usize * 13) % 40;
                let mut r = match p.reserve(len) {
                    Ok(r) => r,
                    Err(ReserveError::Full) => {
                        std::thread::yield_now();
                        continue;
                    }
                    Err(e) => panic!("{e:?}"),
                };
                let bytes: Vec<u8> = (0..len).map(|i| byte(seq, i)).collect();
                assert!(r.write(0, &bytes));
                if r.commit(seq % 5 == 4) {
                    wakeups += 1;
                }
                seq += 1;
            }
            drop(mem);
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
            cur.drain(7, usize::MAX, 64, |rec| {
                expect(&mut next, rec);
                ControlFlow::Continue(())
            });
        } else {
            let _ = cur.reload();
            while let Step::Record(rec) = cur.step() {
                expect(&mut next, rec);
            }
            cur.publish();
        }
        std::thread::yield_now();
    }
    producer.join().unwrap();
}
