//! Copy-and-validate over plain memory (Miri runs these: `scripts/miri.sh`).
//! A hook inside the step lets the producer run at the exact points where a
//! real one would lap the spectator.

use super::{Look, Point, StartAt};
use crate::ring::abi::{record_stride, HEADER_SIZE};
use crate::ring::tests::Mem;

fn payload(tag: u8, len: usize) -> Vec<u8> {
    (0..len).map(|i| tag.wrapping_add(i as u8)).collect()
}

#[test]
fn reads_records_skips_discards_stops_at_busy() {
    let m = Mem::new(256);
    let a = m.output(&payload(1, 5));
    let b = m.reserve(11);
    m.commit(b, &payload(2, 11), true);
    let c = m.output(&payload(3, 17));
    let busy = m.reserve(4);
    let after = m.output(&payload(5, 3));
    let mut s = m.spectator(StartAt::Consumer);
    let mut buf = Vec::new();
    assert_eq!(s.step(&mut buf).unwrap(), Look::Record { pos: a, len: 5 });
    assert_eq!(buf, payload(1, 5));
    assert_eq!(s.step(&mut buf).unwrap(), Look::Discard);
    assert_eq!(s.step(&mut buf).unwrap(), Look::Record { pos: c, len: 17 });
    assert_eq!(buf, payload(3, 17));
    assert_eq!(s.step(&mut buf).unwrap(), Look::Busy);
    assert_eq!(s.step(&mut buf).unwrap(), Look::Busy, "stays at BUSY");
    m.commit(busy, &payload(4, 4), false);
    assert_eq!(
        s.step(&mut buf).unwrap(),
        Look::Record { pos: busy, len: 4 }
    );
    assert_eq!(buf, payload(4, 4));
    assert_eq!(
        s.step(&mut buf).unwrap(),
        Look::Record { pos: after, len: 3 }
    );
    assert_eq!(s.step(&mut buf).unwrap(), Look::Empty);
    let c = s.counters();
    assert_eq!((c.records, c.discarded, c.bytes), (4, 1, 5 + 17 + 4 + 3));
    assert_eq!((c.lapped_records, c.lapped_bytes, c.resyncs), (0, 0, 0));
    // Never a store to the consumer position.
    assert_eq!(m.ring().load_consumer(), 0);
}

#[test]
fn starts_at_consumer_oldest_or_now() {
    let m = Mem::new(128);
    let a = m.output(b"aa");
    let b = m.output(b"bbb");
    m.ring().publish(b); // a consumer read `a`
    let mut buf = Vec::new();
    for start in [StartAt::Consumer, StartAt::Oldest] {
        let mut s = m.spectator(start);
        assert_eq!(s.pos(), b);
        assert_eq!(s.step(&mut buf).unwrap(), Look::Record { pos: b, len: 3 });
    }
    let mut s = m.spectator(StartAt::At(a));
    assert_eq!(s.step(&mut buf).unwrap(), Look::Record { pos: a, len: 2 });
    let mut s = m.spectator(StartAt::Now);
    assert_eq!(s.step(&mut buf).unwrap(), Look::Empty);
    let c = m.output(b"c");
    assert_eq!(s.step(&mut buf).unwrap(), Look::Record { pos: c, len: 1 });
    assert_eq!(buf, b"c");
}

#[test]
fn every_length_and_the_wrap_copy_exactly() {
    // Lengths around word boundaries, records wrapping past the end.
    let m = Mem::new(64);
    let mut s = m.spectator(StartAt::Consumer);
    let mut buf = vec![0xEE; 3];
    for len in 0..=40 {
        let data = payload(len as u8, len);
        let pos = m.output(&data);
        assert_eq!(s.step(&mut buf).unwrap(), Look::Record { pos, len });
        assert_eq!(buf, data, "len {len}");
        m.ring().publish(pos + record_stride(len));
    }
}

#[test]
fn lapped_while_copying_is_one_record_counted() {
    // Overwrite mode, 64 bytes: three 16-byte records fit behind
    // overwrite_pos (new_prod - overwrite_pos <= 63).
    let m = Mem::overwrite(64);
    for tag in [1, 2, 3] {
        m.output(&payload(tag, 8));
    }
    let mut s = m.spectator(StartAt::Oldest);
    assert_eq!(s.pos(), 0);
    let mut buf = Vec::new();
    // While the record at 0 is copied, two more arrive: the second one is
    // written over it.
    let look = s
        .step_hooked(&mut buf, |p| {
            if p == Point::AfterCopy {
                m.output(&payload(4, 8));
                m.output(&payload(5, 8));
            }
        })
        .unwrap();
    assert_eq!(
        look,
        Look::Gap {
            pos: 0,
            bytes: 16,
            records: Some(1)
        }
    );
    // The record at 16 is lapped too (its header was overwritten when
    // overwrite_pos moved to 32): start again from overwrite_pos.
    assert_eq!(m.producer.overwrite_position(), Some(32));
    assert_eq!(
        s.step(&mut buf).unwrap(),
        Look::Gap {
            pos: 16,
            bytes: 16,
            records: None
        }
    );
    for (pos, tag) in [(32, 3), (48, 4), (64, 5)] {
        assert_eq!(s.step(&mut buf).unwrap(), Look::Record { pos, len: 8 });
        assert_eq!(buf, payload(tag, 8));
    }
    assert_eq!(s.step(&mut buf).unwrap(), Look::Empty);
    let c = s.counters();
    assert_eq!(
        (c.records, c.lapped_records, c.lapped_bytes, c.resyncs),
        (3, 1, 32, 1)
    );
}

#[test]
fn lapped_at_the_header_starts_again_at_overwrite_pos() {
    let m = Mem::overwrite(64);
    m.output(&payload(1, 8));
    let mut s = m.spectator(StartAt::Oldest);
    let mut buf = Vec::new();
    // Four records (64 bytes) after the header was read: it is gone.
    let look = s
        .step_hooked(&mut buf, |p| {
            if p == Point::AfterHeader {
                for tag in 2..6 {
                    m.output(&payload(tag, 8));
                }
            }
        })
        .unwrap();
    let over = m.producer.overwrite_position().unwrap();
    assert_eq!(over, 32);
    assert_eq!(
        look,
        Look::Gap {
            pos: 0,
            bytes: over,
            records: None
        }
    );
    for tag in 3..6 {
        assert!(matches!(
            s.step(&mut buf).unwrap(),
            Look::Record { len: 8, .. }
        ));
        assert_eq!(buf, payload(tag, 8));
    }
    assert_eq!(s.step(&mut buf).unwrap(), Look::Empty);
}

#[test]
fn a_spectator_far_behind_a_consumer_starts_again_at_the_consumer() {
    // Normal mode: the spectator trails; the consumer releases everything,
    // and the producer comes round over the spectator's position.
    let m = Mem::new(64);
    let mut s = m.spectator(StartAt::Consumer);
    let mut buf = Vec::new();
    let first = m.output(&payload(1, 8));
    assert_eq!(
        s.step(&mut buf).unwrap(),
        Look::Record { pos: first, len: 8 }
    );
    let mut cons = first + 16;
    m.ring().publish(cons);
    for tag in 2..10 {
        let pos = m.output(&payload(tag, 8));
        cons = pos + 16;
        m.ring().publish(cons);
    }
    // Two unread ones.
    let x = m.output(&payload(20, 8));
    m.output(&payload(21, 8));
    assert_eq!(
        s.step(&mut buf).unwrap(),
        Look::Gap {
            pos: 16,
            bytes: cons - 16,
            records: None
        }
    );
    assert_eq!(s.step(&mut buf).unwrap(), Look::Record { pos: x, len: 8 });
    assert_eq!(buf, payload(20, 8));
    assert!(matches!(s.step(&mut buf).unwrap(), Look::Record { .. }));
    assert_eq!(buf, payload(21, 8));
    assert_eq!(m.ring().load_consumer(), cons, "untouched");
}

#[test]
fn a_corrupt_header_is_an_error_not_a_panic() {
    let m = Mem::new(64);
    let pos = m.output(b"abc");
    m.set_header(pos, 40);
    let mut s = m.spectator(StartAt::Consumer);
    assert!(s.step(&mut Vec::new()).is_err());
}

/// The kernel selftest `ringbuf_overwrite_mode`
/// (tools/testing/selftests/bpf/progs/test_ringbuf_overwrite.c), on a ring
/// of 4096 bytes (its page), over plain memory.
#[test]
fn kernel_selftest_vector() {
    let size = 4096;
    let m = Mem::overwrite(size);
    let (len1, len2) = (size / 2, size / 4);
    let len3 = size - len1 - len2 - 3 * HEADER_SIZE;
    let (len4, len5) = (len3 - 8, len3);
    let p = &m.producer;
    let mut r1 = p.reserve(len1).unwrap();
    let mut r2 = p.reserve(len2).unwrap();
    assert!(p.reserve(len3).is_err(), "reserve 3 must fail");
    let mut r4 = p.reserve(len4).unwrap();
    let (pos2, pos4) = (r2.position(), r4.position());
    assert!(r1.write(0, &payload(1, len1)));
    assert!(r2.write(0, &payload(2, len2)));
    assert!(r4.write(0, &payload(4, len4)));
    r1.commit(false);
    r2.commit(false);
    r4.commit(false);
    let mut r5 = p.reserve(len5).unwrap();
    let pos5 = r5.position();
    assert!(r5.write(0, &vec![0xdd; len5]));
    r5.commit(false);
    let ring = m.ring();
    let over = p.overwrite_position().unwrap();
    let prod = ring.load_producer();
    assert_eq!(over, len1 + HEADER_SIZE);
    assert_eq!(prod, len1 + len2 + len4 + len5 + 4 * HEADER_SIZE);
    assert_eq!(ring.load_consumer(), 0);
    let avail = prod - over.max(ring.load_consumer());
    assert_eq!(avail, len2 + len4 + len5 + 3 * HEADER_SIZE);

    let mut s = m.spectator(StartAt::Oldest);
    let mut buf = Vec::new();
    assert_eq!(
        s.step(&mut buf).unwrap(),
        Look::Record {
            pos: pos2,
            len: len2
        }
    );
    assert_eq!(buf, payload(2, len2));
    assert_eq!(
        s.step(&mut buf).unwrap(),
        Look::Record {
            pos: pos4,
            len: len4
        }
    );
    assert_eq!(buf, payload(4, len4));
    assert_eq!(
        s.step(&mut buf).unwrap(),
        Look::Record {
            pos: pos5,
            len: len5
        }
    );
    assert_eq!(buf, vec![0xdd; len5]);
    assert_eq!(s.step(&mut buf).unwrap(), Look::Empty);
}
