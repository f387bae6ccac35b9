//! Unit tests of the ring protocol over plain memory (Miri-friendly).

use super::*;
use std::cell::UnsafeCell;

/// Plain memory in the kernel's layout, with the data area duplicated by
/// hand (a write at `off` is mirrored at `off + size`).
struct Mem {
    cons: Box<UnsafeCell<usize>>,
    prod: Box<UnsafeCell<usize>>,
    data: Box<[UnsafeCell<u64>]>,
    size: usize,
    /// Producer-side reservation position.
    head: usize,
}

impl Mem {
    fn new(size: usize) -> Mem {
        Mem {
            cons: Box::new(UnsafeCell::new(0)),
            prod: Box::new(UnsafeCell::new(0)),
            data: (0..2 * size / 8).map(|_| UnsafeCell::new(0)).collect(),
            size,
            head: 0,
        }
    }

    fn ring(&self) -> RawRing {
        // SAFETY: the boxes outlive every use in these tests; the data area
        // is 2*size bytes, 8-aligned (u64 cells), and kept mirrored by `put`.
        unsafe {
            RawRing::new(
                NonNull::new(self.cons.get()).unwrap(),
                NonNull::new(self.prod.get()).unwrap(),
                NonNull::new(self.data.as_ptr() as *mut u8).unwrap(),
                self.size,
            )
        }
    }

    fn base(&self) -> *mut u8 {
        UnsafeCell::raw_get(self.data.as_ptr()) as *mut u8
    }

    /// Writes bytes at ring offset `pos`, in both copies.
    fn put(&self, pos: usize, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            let off = pos.wrapping_add(i) & (self.size - 1);
            // SAFETY: off < size, so off and off + size are inside 2*size bytes.
            unsafe {
                *self.base().add(off) = *b;
                *self.base().add(off + self.size) = *b;
            }
        }
    }

    fn header(&self, pos: usize) -> &AtomicU32 {
        let off = pos & (self.size - 1);
        // SAFETY: aligned (pos is a multiple of 8) and in bounds.
        unsafe { &*(self.base().add(off) as *const AtomicU32) }
    }

    fn set_header(&self, pos: usize, len: u32) {
        self.header(pos).store(len, Ordering::SeqCst);
        // Mirror: the second copy is read only through the first header in
        // these tests, but keep it consistent anyway.
        let off = (pos & (self.size - 1)) + self.size;
        // SAFETY: in bounds, aligned.
        unsafe { (*(self.base().add(off) as *const AtomicU32)).store(len, Ordering::SeqCst) };
    }

    /// Reserve (kernel order: header BUSY, then producer_pos), returns position.
    fn reserve(&mut self, len: usize) -> usize {
        let pos = self.head;
        self.set_header(pos, len as u32 | BUSY_BIT);
        self.head = self.head.wrapping_add((len + 8 + 7) & !7);
        // SAFETY: plain store through the cell the ring reads atomically.
        unsafe { (*(self.prod.get() as *const AtomicUsize)).store(self.head, Ordering::SeqCst) };
        pos
    }

    fn commit(&self, pos: usize, payload: &[u8], discard: bool) {
        self.put(pos.wrapping_add(8), payload);
        let mut len = payload.len() as u32;
        if discard {
            len |= DISCARD_BIT;
        }
        self.set_header(pos, len);
    }

    fn output(&mut self, payload: &[u8]) -> usize {
        let pos = self.reserve(payload.len());
        self.commit(pos, payload, false);
        pos
    }
}

#[test]
fn empty_then_one_record() {
    let mut m = Mem::new(64);
    let r = m.ring();
    assert_eq!(r.load_producer(), 0);
    m.output(b"hello");
    let prod = r.load_producer();
    assert_eq!(prod, 16);
    r.check_producer(0, prod).unwrap();
    assert_eq!(r.peek(0, prod), Peek::Record { len: 5, next: 16 });
    // SAFETY: peek returned Record; nothing is published while we look.
    assert_eq!(unsafe { r.record(0, 5) }, b"hello");
}

#[test]
fn stride_rounds_up_to_eight() {
    let mut m = Mem::new(128);
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
    let mut m = Mem::new(64);
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
    let mut m = Mem::new(128);
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
    let mut m = Mem::new(64);
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
    assert!(r.check_producer(0, 0).is_ok());
    assert!(r.check_producer(0, 64).is_ok());
    assert!(
        r.check_producer(0, 72).is_err(),
        "more than size outstanding"
    );
    assert!(r.check_producer(16, 8).is_err(), "producer behind consumer");
    assert!(r.check_producer(0, 12).is_err(), "misaligned");
}

#[test]
fn publish_and_fence() {
    let mut m = Mem::new(64);
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
    let mut m = Mem::new(64);
    let start = usize::MAX - 15; // 8-aligned, 16 bytes before wrapping
                                 // SAFETY: plain init before any ring use.
    unsafe {
        *m.cons.get() = start;
        *m.prod.get() = start;
    }
    m.head = start;
    let r = m.ring();
    let a = m.reserve(3);
    m.commit(a, b"abc", false);
    let b = m.reserve(2); // its end wraps past usize::MAX
    m.commit(b, b"de", false);
    let prod = r.load_producer();
    assert_eq!(prod, start.wrapping_add(32));
    r.check_producer(start, prod).unwrap();
    assert_eq!(r.peek(a, prod), Peek::Record { len: 3, next: b });
    assert_eq!(r.peek(b, prod), Peek::Record { len: 2, next: prod });
}
