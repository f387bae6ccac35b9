//! Unit tests of the user ring buffer's producer ([`UserProducer`]) over
//! plain memory (Miri-friendly): libbpf's space rules, in-place payloads
//! across the wrap (the mirrored second copy kept equal), commits in any
//! order, and an impossible consumer position.

use super::producer::{ReserveError, UserProducer};
use super::tests::PlainMem;
use super::*;
use std::cell::UnsafeCell;

/// [`PlainMem`] and a user ring producer over it.
struct Mem {
    /// Declared first: it points into `mem`.
    producer: UserProducer,
    mem: PlainMem,
    size: usize,
}

impl Mem {
    fn new(size: usize) -> Mem {
        let mem = PlainMem::new(size, 0);
        // SAFETY: `mem` lives in `Mem` as long as the producer (declared
        // before it, so dropped first); its halves are distinct (mirrored by
        // the producer). Nothing else produces into it.
        let producer = unsafe { UserProducer::over_plain_memory(mem.ring(size)) };
        Mem {
            producer,
            mem,
            size,
        }
    }

    fn ring(&self) -> RawRing {
        *self.producer.ring()
    }

    /// Data byte `i` of the `2 * size` bytes (both copies).
    fn byte(&self, i: usize) -> u8 {
        // SAFETY: in bounds; no record slice is alive while tests look.
        unsafe {
            *UnsafeCell::raw_get(self.mem.data.as_ptr())
                .cast::<u8>()
                .add(i)
        }
    }

    /// The kernel's drain: every committed record at the consumer position
    /// (skipping discards), stopping at BUSY; publishes the new position.
    fn drain(&self) -> Vec<Vec<u8>> {
        let r = self.ring();
        let prod = r.load_producer();
        let mut pos = r.load_consumer();
        let mut out = Vec::new();
        while pos != prod {
            match r.peek(pos, prod) {
                Peek::Record { len, next } => {
                    // SAFETY: a committed record, copied before publishing.
                    out.push(unsafe { r.record(pos, len) }.to_vec());
                    pos = next;
                }
                Peek::Discard { next } => pos = next,
                Peek::Busy => break,
                Peek::Corrupt { .. } => panic!("corrupt at {pos}"),
            }
        }
        r.publish(pos);
        out
    }
}

#[test]
fn whole_ring_may_be_outstanding() {
    let m = Mem::new(64);
    // libbpf's rule: a record up to the ring size, header included.
    assert_eq!(UserProducer::max_sample(64), 56);
    assert_eq!(m.producer.reserve(57).unwrap_err(), ReserveError::TooBig);
    assert_eq!(
        m.producer.reserve(usize::MAX).unwrap_err(),
        ReserveError::TooBig
    );
    assert_eq!(
        m.producer
            .reserve(abi::USER_RINGBUF_MAX_SAMPLE + 1)
            .unwrap_err(),
        ReserveError::TooBig
    );
    let mut a = m.producer.reserve(56).unwrap();
    a.fill(9);
    assert_eq!(m.producer.free(), Ok(0));
    assert_eq!(m.producer.reserve(0).unwrap_err(), ReserveError::Full);
    a.submit();
    assert_eq!(m.drain(), vec![vec![9; 56]]);
    assert_eq!(m.producer.free(), Ok(64));
    // Exactly the free space fits.
    let b = m.producer.reserve(24).unwrap(); // stride 32
    let c = m.producer.reserve(24).unwrap(); // stride 32: the ring is full
    assert_eq!(m.producer.free(), Ok(0));
    c.discard();
    b.submit();
    assert_eq!(m.drain().len(), 1);
}

#[test]
fn payloads_wrap_in_place_and_mirror() {
    let m = Mem::new(64);
    for round in 0..20u8 {
        // Strides 24, 16, 16 (56 of 64): the head moves around the ring, and some
        // payloads run past the end of the first copy.
        for len in [13, 4, 1] {
            let mut s = m.producer.reserve(len).unwrap();
            let pos = s.position();
            for (i, b) in s.iter_mut().enumerate() {
                *b = round.wrapping_mul(31).wrapping_add(i as u8);
            }
            assert_eq!(s.len(), len);
            s.submit();
            // Both copies agree byte for byte.
            for i in 0..len {
                let off = (pos + 8 + i) & (m.size - 1);
                assert_eq!(
                    m.byte(off),
                    m.byte(off + m.size),
                    "round {round} len {len} byte {i}"
                );
            }
        }
        let got = m.drain();
        let want: Vec<Vec<u8>> = [13usize, 4, 1]
            .iter()
            .map(|&len| {
                (0..len)
                    .map(|i| round.wrapping_mul(31).wrapping_add(i as u8))
                    .collect()
            })
            .collect();
        assert_eq!(got, want, "round {round}");
    }
    assert!(m.producer.position() > 15 * 64, "wrapped many times");
}

#[test]
fn commits_in_any_order_stop_at_busy() {
    let m = Mem::new(128);
    let mut a = m.producer.reserve(4).unwrap();
    let mut b = m.producer.reserve(4).unwrap();
    let mut c = m.producer.reserve(4).unwrap();
    c.copy_from_slice(b"cccc");
    c.submit();
    b.copy_from_slice(b"bbbb");
    b.discard();
    assert!(m.drain().is_empty(), "a is BUSY");
    a.copy_from_slice(b"aaaa");
    a.submit();
    assert_eq!(m.drain(), vec![b"aaaa".to_vec(), b"cccc".to_vec()]);
}

#[test]
fn impossible_consumer_position_is_refused() {
    let m = Mem::new(64);
    m.producer.reserve(8).unwrap().submit();
    // Ahead of the producer, then misaligned: nothing is reserved.
    m.ring().publish(64);
    assert_eq!(
        m.producer.reserve(0).unwrap_err(),
        ReserveError::Corrupt {
            consumer: 64,
            producer: 16
        }
    );
    m.ring().publish(4);
    assert!(matches!(
        m.producer.reserve(0),
        Err(ReserveError::Corrupt { .. })
    ));
    assert_eq!(m.producer.position(), 16);
}
