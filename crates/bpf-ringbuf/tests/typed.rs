//! Typed views of records (features `zerocopy` and `testing`): size and
//! alignment mismatches are typed errors, never panics, and records read in
//! place from a ring (fake and kernel) are 8-aligned, as `RecordExt` documents.

#[macro_use]
mod common;

use std::io;
use std::mem::{align_of, size_of};
use std::time::Instant;

use bpf_ringbuf::testing::{
    fill_payload, payload_word, FakeRing, KernelProducer, ProducerConfig, RecordSize, Wakeup,
};
use bpf_ringbuf::{page_size, view, Error, ExpectedSize, Reader, RecordExt, RingBuf};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The first 16 bytes of a `KernelProducer` payload (`testing::payload_word`):
/// word 0 is the sequence number; word 1 holds the length in its low half
/// and the pattern's high half in its high half.
#[derive(Debug, FromBytes, KnownLayout, Immutable)]
#[repr(C)]
struct Seq {
    seq: u64,
    len: u32,
    hi: u32,
}

impl Seq {
    /// Checks the fields against the payload format of a record of `len` bytes.
    #[track_caller]
    fn check(&self, len: usize) -> u64 {
        let seq = u64::from_le(self.seq);
        assert_eq!(
            u32::from_le(self.len) as usize,
            len,
            "len field of seq {seq}"
        );
        let word1 = payload_word(seq, len, 1);
        assert_eq!(
            u32::from_le(self.hi),
            (word1 >> 32) as u32,
            "high half of seq {seq}"
        );
        seq
    }
}

/// A type aligned to more than the ring guarantees.
#[derive(Debug, FromBytes, KnownLayout, Immutable)]
#[repr(C, align(16))]
struct Over {
    a: u64,
    b: u64,
}

/// `words` as 8-aligned bytes: a stand-in for a record read in place.
fn aligned(words: &[u64]) -> &[u8] {
    words.as_bytes()
}

fn record(seq: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill_payload(seq, &mut v);
    v
}

#[test]
fn exact_view_of_a_record() {
    let mut words = [0u64; 2];
    fill_payload(5, words.as_mut_bytes());
    let s: &Seq = aligned(&words).view().unwrap();
    assert_eq!(s.check(16), 5);
    // The free function is the same view.
    let t: &Seq = view(aligned(&words)).unwrap();
    assert!(std::ptr::eq(s, t));
}

#[test]
fn size_mismatch_is_a_typed_error() {
    let words = [0u64; 4];
    let bytes = aligned(&words);
    for (len, want) in [
        (0, false),
        (8, false),
        (15, false),
        (16, true),
        (17, false),
        (24, false),
    ] {
        let r = bytes[..len].view::<Seq>();
        assert_eq!(r.is_ok(), want, "{len}");
        if let Err(e) = r {
            match &e {
                Error::RecordSize {
                    type_name,
                    expected,
                    actual,
                } => {
                    assert!(type_name.ends_with("Seq"), "{type_name}");
                    assert_eq!(*expected, ExpectedSize::Exactly(16));
                    assert_eq!(*actual, len);
                }
                other => panic!("{len}: {other:?}"),
            }
            assert_eq!(
                e.to_string(),
                format!("record of {len} bytes cannot be viewed as typed::Seq, which needs exactly 16 bytes")
            );
            assert_eq!(io::Error::from(e).kind(), io::ErrorKind::InvalidData);
        }
    }
    // A prefix needs at least the header; a slice a whole number of elements.
    assert!(matches!(
        bytes[..15].view_prefix::<Seq>(),
        Err(Error::RecordSize {
            expected: ExpectedSize::AtLeast(16),
            actual: 15,
            ..
        })
    ));
    assert!(matches!(
        bytes[..20].view_slice::<u64>(),
        Err(Error::RecordSize {
            expected: ExpectedSize::MultipleOf(8),
            actual: 20,
            type_name: "[u64]"
        })
    ));
    let e = bytes[..20].view_slice::<u64>().unwrap_err();
    assert_eq!(
        e.to_string(),
        "record of 20 bytes cannot be viewed as [u64], which needs a multiple of 8 bytes"
    );
}

#[test]
fn alignment_mismatch_is_a_typed_error() {
    let mut words = [0u64; 4];
    fill_payload(9, &mut words.as_mut_bytes()[1..17]);
    let bytes = aligned(&words);
    let sub = &bytes[1..17]; // the right size, one byte off
    let e = sub.view::<Seq>().unwrap_err();
    match e {
        Error::RecordMisaligned {
            type_name,
            addr,
            align,
        } => {
            assert!(type_name.ends_with("Seq"), "{type_name}");
            assert_eq!(addr, sub.as_ptr() as usize);
            assert_eq!(addr, bytes.as_ptr() as usize + 1);
            assert_eq!(align, 8);
        }
        other => panic!("{other:?}"),
    }
    let e = sub.view::<Seq>().unwrap_err();
    assert!(
        e.to_string().contains("which needs 8-byte alignment"),
        "{e}"
    );
    assert_eq!(io::Error::from(e).kind(), io::ErrorKind::InvalidData);
    assert!(matches!(
        sub.view_prefix::<Seq>(),
        Err(Error::RecordMisaligned { align: 8, .. })
    ));
    assert!(matches!(
        sub.view_slice::<u32>(),
        Err(Error::RecordMisaligned {
            align: 4,
            type_name: "[u32]",
            ..
        })
    ));
    // Types with no alignment requirement view any subslice.
    assert_eq!(sub.view_slice::<u8>().unwrap(), sub);
    assert_eq!(sub.view::<[u8; 16]>().unwrap(), sub);
}

#[test]
fn prefix_and_slice_views() {
    let words = [1u64, 2, 3, 4];
    let bytes = aligned(&words);
    let (head, tail) = bytes.view_prefix::<[u64; 1]>().unwrap();
    assert_eq!(*head, [1]);
    assert_eq!(tail, &bytes[8..]);
    let (_, tail) = bytes[..16].view_prefix::<Seq>().unwrap();
    assert!(tail.is_empty());
    assert_eq!(bytes.view_slice::<u64>().unwrap(), words);
    assert_eq!(bytes[..0].view_slice::<u64>().unwrap(), &[] as &[u64]);
}

/// Every offset 0..8 and length 0..=64, every view, several types: an `Ok`
/// or a typed error, never a panic, and the error is the one the size and
/// alignment call for.
#[test]
fn never_panics() {
    fn check<T: FromBytes + KnownLayout + Immutable>(rec: &[u8]) {
        let (len, addr) = (rec.len(), rec.as_ptr() as usize);
        let (size, align) = (size_of::<T>(), align_of::<T>());
        let misaligned = addr % align != 0;
        let outcomes = [
            (rec.view::<T>().map(|_| ()), len == size),
            (rec.view_prefix::<T>().map(|_| ()), len >= size),
            (rec.view_slice::<T>().map(|_| ()), len % size == 0),
        ];
        for (i, (r, size_ok)) in outcomes.into_iter().enumerate() {
            match r {
                Ok(()) => assert!(!misaligned && size_ok, "view {i} at {addr:#x}+{len}"),
                Err(Error::RecordMisaligned {
                    addr: a, align: al, ..
                }) => {
                    assert!(misaligned, "view {i}");
                    assert_eq!((a, al), (addr, align));
                }
                Err(Error::RecordSize { actual, .. }) => {
                    assert!(!misaligned && !size_ok, "view {i} at {addr:#x}+{len}");
                    assert_eq!(actual, len);
                }
                Err(e) => panic!("view {i}: unexpected {e:?}"),
            }
        }
    }
    // 32-aligned storage, so offsets map to known address residues.
    #[derive(FromBytes, IntoBytes, KnownLayout, Immutable)]
    #[repr(C, align(32))]
    struct Buf([u8; 128]);
    let buf = Buf([0xa5; 128]);
    for off in 0..8 {
        for len in 0..=64 {
            let rec = &buf.0[off..off + len];
            check::<Seq>(rec);
            check::<Over>(rec);
            check::<u8>(rec);
            check::<u32>(rec);
            check::<[u32; 3]>(rec);
        }
    }
}

/// Reads every record present without blocking.
fn drain(reader: &mut Reader, mut f: impl FnMut(&[u8])) -> usize {
    reader.set_deadline(Some(Instant::now()));
    let mut n = 0;
    loop {
        match reader.read_zero_copy() {
            Ok(rec) => {
                f(rec);
                n += 1;
            }
            Err(Error::DeadlineExceeded) => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    reader.commit();
    n
}

/// Records of every length 0..=64, many times round a one-page fake ring (so
/// some wrap past its end): each starts 8-aligned, and each view gives the
/// result its length calls for.
#[test]
fn fake_ring_records_are_8_aligned_and_view() {
    let ring = FakeRing::new(page_size()).unwrap();
    let mut reader = ring.reader().unwrap();
    let mut seq = 0u64;
    let mut over = [0usize; 2]; // [viewed, misaligned] for the 16-aligned type
    for _round in 0..40 {
        for len in 0..=64 {
            ring.output(&record(seq, len), Wakeup::Default)
                .expect("room: each round is drained");
            seq += 1;
        }
        let mut next = seq - 65;
        let n = drain(&mut reader, |rec| {
            let len = rec.len();
            assert_eq!(rec.as_ptr() as usize % 8, 0, "record of {len} bytes");
            match rec.view_prefix::<Seq>() {
                Ok((s, tail)) => {
                    assert!(len >= 16);
                    assert_eq!(s.check(len), next);
                    assert_eq!(tail.len(), len - 16);
                }
                Err(Error::RecordSize { actual, .. }) => assert!(actual < 16 && actual == len),
                Err(e) => panic!("{e:?}"),
            }
            assert_eq!(rec.view::<Seq>().is_ok(), len == 16);
            assert_eq!(rec.view_slice::<u64>().is_ok(), len % 8 == 0);
            if len == 16 {
                match rec.view::<Over>() {
                    Ok(_) => over[0] += 1,
                    Err(Error::RecordMisaligned {
                        addr, align: 16, ..
                    }) => {
                        assert_eq!(addr % 16, 8);
                        over[1] += 1;
                    }
                    Err(e) => panic!("{e:?}"),
                }
            }
            next += 1;
        });
        assert_eq!(n, 65);
    }
    assert!(
        ring.producer_position() > 4 * ring.size(),
        "the ring wrapped"
    );
    // Over-aligned types view only the records that happen to sit on 16.
    assert!(over[0] > 0 && over[1] > 0, "{over:?}");
}

/// The kernel's ring: records from the kernel producer, of 16 bytes (viewed
/// whole as `Seq`) and of mixed sizes (viewed as a `Seq` header and a tail),
/// each 8-aligned, in place, every one in order, over many wraparounds.
#[test]
fn kernel_records_view_in_place() {
    privileged!();
    let mixed = ProducerConfig {
        size: RecordSize::Mixed(vec![8, 13, 16, 20, 64, 200]),
        ..ProducerConfig::default()
    };
    for cfg in [ProducerConfig::fixed(16), mixed] {
        let ring = RingBuf::create(4 * page_size()).unwrap();
        let producer = KernelProducer::new(&ring, cfg).unwrap();
        let mut reader = Reader::new(&ring).unwrap();
        let mut next = 0u64;
        for _round in 0..50 {
            assert_eq!(producer.produce(50).unwrap().dropped, 0);
            drain(&mut reader, |rec| {
                let len = rec.len();
                assert_eq!(rec.as_ptr() as usize % 8, 0, "record of {len} bytes");
                if len == 16 {
                    let s: &Seq = rec.view().unwrap();
                    assert_eq!(s.check(16), next);
                }
                match rec.view_prefix::<Seq>() {
                    Ok((s, tail)) => {
                        assert_eq!(s.check(len), next);
                        assert_eq!(tail.len(), len - 16);
                    }
                    Err(Error::RecordSize {
                        expected, actual, ..
                    }) => {
                        assert_eq!(expected, ExpectedSize::AtLeast(16));
                        assert_eq!(actual, len);
                        assert!(len < 16);
                    }
                    Err(e) => panic!("{e:?}"),
                }
                next += 1;
            });
        }
        assert_eq!(next, 2500);
    }
}
