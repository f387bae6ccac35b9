//! Unit tests of the ring protocol over plain memory (Miri-friendly).

use super::producer::{RawProducer, ReserveError};
use super::*;
use std::cell::UnsafeCell;
use std::rc::Rc;

/// Plain memory in the kernel's layout, the data area's second copy kept
/// equal by the producer (`mirror`), and the ring layer's own producer.
pub(crate) struct Mem {
    /// Declared first: it points into the cells below.
    pub(crate) producer: RawProducer,
    // `Rc`, not `Box`: moving a `Box` asserts unique access to its contents
    // (Stacked Borrows), which would invalidate the ring's pointers.
    _cons: Rc<UnsafeCell<usize>>,
    _prod: Rc<UnsafeCell<usize>>,
    _data: Rc<[UnsafeCell<u64>]>,
    /// The `overwrite_pos` word (used in overwrite mode only).
    over: Rc<UnsafeCell<usize>>,
}

impl Mem {
    pub(crate) fn new(size: usize) -> Mem {
        Mem::starting_at(size, 0)
    }

    /// A ring whose positions both start at `start`.
    pub(crate) fn starting_at(size: usize, start: usize) -> Mem {
        Mem::build(size, start, false)
    }

    /// A ring in overwrite mode (`BPF_F_RB_OVERWRITE`), positions at 0.
    pub(crate) fn overwrite(size: usize) -> Mem {
        Mem::build(size, 0, true)
    }

    fn build(size: usize, start: usize, overwrite: bool) -> Mem {
        let over = Rc::new(UnsafeCell::new(start));
        let cons = Rc::new(UnsafeCell::new(start));
        let prod = Rc::new(UnsafeCell::new(start));
        let data: Rc<[UnsafeCell<u64>]> = (0..2 * size / 8).map(|_| UnsafeCell::new(0)).collect();
        // SAFETY: the cells live in `Mem` as long as the producer (declared
        // before them, so dropped first); the data area is 2*size bytes,
        // 8-aligned (u64 cells), writable, its halves distinct (mirrored by
        // the producer). Nothing else produces into it.
        let producer = unsafe {
            let ring = RawRing::new(
                NonNull::new(cons.get()).unwrap(),
                NonNull::new(prod.get()).unwrap(),
                NonNull::new(UnsafeCell::raw_get(data.as_ptr()).cast::<u8>()).unwrap(),
                size,
            );
            if overwrite {
                RawProducer::new_overwrite(ring, true, NonNull::new(over.get()).unwrap())
            } else {
                RawProducer::new(ring, true)
            }
        };
        Mem {
            producer,
            _cons: cons,
            _prod: prod,
            _data: data,
            over,
        }
    }

    /// The `overwrite_pos` word, for a spectator of an overwrite-mode ring.
    pub(crate) fn overwrite_word(&self) -> NonNull<usize> {
        NonNull::new(self.over.get()).unwrap()
    }

    /// A spectator over this memory, starting at `start`. The memory must
    /// outlive it (tests keep `self` alive).
    pub(crate) fn spectator(
        &self,
        start: super::spectate::StartAt,
    ) -> super::spectate::SpectateCursor {
        let over = self
            .producer
            .overwrite_position()
            .map(|_| self.overwrite_word());
        // SAFETY: the test keeps `self` (the memory) alive while it uses the
        // cursor; the overwrite word is ours, given only in overwrite mode.
        unsafe { super::spectate::SpectateCursor::new(self.ring(), over, Box::new(()), start) }
            .expect("a valid start")
    }

    pub(crate) fn ring(&self) -> RawRing {
        *self.producer.ring()
    }

    /// Reserves (the kernel's order: header BUSY, then producer_pos) and
    /// returns the position, leaving the record BUSY.
    pub(crate) fn reserve(&self, len: usize) -> usize {
        self.producer.reserve(len).expect("room").leak()
    }

    /// Writes the payload and commits the BUSY record at `pos`.
    pub(crate) fn commit(&self, pos: usize, payload: &[u8], discard: bool) {
        // SAFETY: the record at `pos` was reserved by `reserve` and is still
        // BUSY; no consumer reads it and no one else writes it.
        unsafe { self.producer.overwrite_data(pos.wrapping_add(8), payload) };
        let word = payload.len() as u32 | if discard { DISCARD_BIT } else { 0 };
        // SAFETY: as above; the swap is the commit itself.
        unsafe { self.producer.overwrite_header(pos, word) };
    }

    pub(crate) fn set_header(&self, pos: usize, word: u32) {
        // SAFETY: the tests hold no record slice while corrupting.
        unsafe { self.producer.overwrite_header(pos, word) };
    }

    pub(crate) fn output(&self, payload: &[u8]) -> usize {
        let mut r = self.producer.reserve(payload.len()).expect("room");
        assert!(r.write(0, payload));
        let pos = r.position();
        r.commit(false);
        pos
    }
}

#[test]
fn reserve_refuses_too_big_and_full() {
    let m = Mem::new(64);
    assert_eq!(m.producer.reserve(64).unwrap_err(), ReserveError::TooBig);
    assert_eq!(
        m.producer.reserve(abi::MAX_RECORD_LEN + 1).unwrap_err(),
        ReserveError::TooBig
    );
    // 56 bytes outstanding at most (size - 8): a 48-byte stride fits, then
    // only 8 bytes are left, so a record of 1 (stride 16) does not.
    let a = m.output(&[0; 40]);
    assert_eq!(a, 0);
    assert_eq!(m.producer.reserve(1).unwrap_err(), ReserveError::Full);
    m.ring().publish(48);
    m.output(&[1]);
}

#[test]
fn empty_then_one_record() {
    let m = Mem::new(64);
    let r = m.ring();
    assert_eq!(r.load_producer(), 0);
    m.output(b"hello");
    let prod = r.load_producer();
    assert_eq!(prod, 16);
    assert!(r.check_producer(0, prod));
    assert_eq!(r.peek(0, prod), Peek::Record { len: 5, next: 16 });
    // SAFETY: peek returned Record; nothing is published while we look.
    assert_eq!(unsafe { r.record(0, 5) }, b"hello");
}

#[test]
fn stride_rounds_up_to_eight() {
    let m = Mem::new(128);
    let r = m.ring();
    for (len, stride) in [(0, 8), (1, 16), (8, 16), (9, 24), (16, 24)] {
        let pos = m.output(&vec![7u8; len]);
        let prod = r.load_producer();
        assert_eq!(
            r.peek(pos, prod),
            Peek::Record {
                len,
                next: pos + stride
            }
        );
        r.publish(pos + stride);
    }
}

#[test]
fn wraps_contiguously() {
    let m = Mem::new(64);
    let r = m.ring();
    // Three 16-byte strides put the head at 48; a 20-byte record (stride 32)
    // then wraps past the end of the data area.
    for _ in 0..3 {
        let pos = m.output(&[1, 2]);
        r.publish(pos + 16);
    }
    let payload: Vec<u8> = (0..20).collect();
    let pos = m.output(&payload);
    assert_eq!(pos, 48);
    let prod = r.load_producer();
    assert_eq!(r.peek(pos, prod), Peek::Record { len: 20, next: 80 });
    // SAFETY: peek returned Record.
    assert_eq!(unsafe { r.record(pos, 20) }, &payload[..]);
}

#[test]
fn discard_and_busy() {
    let m = Mem::new(128);
    let r = m.ring();
    let a = m.reserve(4);
    let b = m.reserve(4);
    let prod = r.load_producer();
    assert_eq!(r.peek(a, prod), Peek::Busy);
    // Out of order: b commits first, a is still busy.
    m.commit(b, b"bbbb", false);
    assert_eq!(r.peek(a, prod), Peek::Busy);
    m.commit(a, b"aaaa", true);
    assert_eq!(r.peek(a, prod), Peek::Discard { next: b });
    assert_eq!(r.peek(b, prod), Peek::Record { len: 4, next: prod });
}

#[test]
fn corrupt_length_is_reported() {
    let m = Mem::new(64);
    let r = m.ring();
    let pos = m.output(b"abc");
    // A header that claims more than was produced.
    m.set_header(pos, 40);
    let prod = r.load_producer();
    assert_eq!(
        r.peek(pos, prod),
        Peek::Corrupt {
            len: 40,
            available: 16
        }
    );
    // Flag bits set oddly are stripped before the check: DISCARD|huge.
    m.set_header(pos, DISCARD_BIT | 0x3fff_fff0);
    assert!(matches!(r.peek(pos, prod), Peek::Corrupt { .. }));
}

#[test]
fn impossible_producer_positions() {
    let m = Mem::new(64);
    let r = m.ring();
    assert!(r.check_producer(0, 0));
    assert!(r.check_producer(0, 64));
    assert!(!r.check_producer(0, 72), "more than size outstanding");
    assert!(!r.check_producer(16, 8), "producer behind consumer");
    assert!(!r.check_producer(0, 12), "misaligned");
}

#[test]
fn publish_and_fence() {
    let m = Mem::new(64);
    let r = m.ring();
    assert!(r.publish_and_check_empty(0));
    assert_eq!(r.load_consumer(), 0);
    m.output(b"x");
    assert!(!r.publish_and_check_empty(0));
    assert!(r.publish_and_check_empty(16));
    assert_eq!(r.load_consumer(), 16);
}

#[test]
fn positions_wrap_around_usize() {
    // Positions are compared with wrapping arithmetic only.
    let start = usize::MAX - 15; // 8-aligned, 16 bytes before wrapping
    let m = Mem::starting_at(64, start);
    let r = m.ring();
    let a = m.reserve(3);
    m.commit(a, b"abc", false);
    let b = m.reserve(2); // its end wraps past usize::MAX
    m.commit(b, b"de", false);
    let prod = r.load_producer();
    assert_eq!(prod, start.wrapping_add(32));
    assert!(r.check_producer(start, prod));
    assert_eq!(r.peek(a, prod), Peek::Record { len: 3, next: b });
    assert_eq!(r.peek(b, prod), Peek::Record { len: 2, next: prod });
}
