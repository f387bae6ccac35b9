//! The user ring buffer producer (`UserRingBuf`): on the real kernel, a
//! round trip userspace -> kernel (`bpf_user_ringbuf_drain` in a
//! hand-assembled program) -> a normal ring buffer -> our `Reader`, byte for
//! byte; and, without privileges, the same producer over `FakeUserRing`.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use bpf_ringbuf::testing::{FakeUserRing, KernelDrain};
use bpf_ringbuf::{abi, Error, Reader, RingBuf, UserRingBuf};

/// A payload for sample `seq` of `len` bytes: every byte depends on both.
fn payload(seq: u64, len: usize, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = (seq
            .wrapping_mul(31)
            .wrapping_add(i as u64 * 7)
            .wrapping_add(len as u64)) as u8;
    }
}

fn expected(seq: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    payload(seq, len, &mut v);
    v
}

/// Reads every record now in `reader` (a past deadline: no waiting).
fn read_all(reader: &mut Reader) -> Vec<Vec<u8>> {
    reader.set_deadline(Some(Instant::now()));
    let mut out = Vec::new();
    loop {
        match reader.read() {
            Ok(rec) => out.push(rec.data),
            Err(Error::DeadlineExceeded) => return out,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn round_trip_one_sample() {
    privileged!();
    let user = UserRingBuf::create(1 << 14).unwrap();
    let out = RingBuf::create(1 << 16).unwrap();
    let drain = KernelDrain::into_ring(&user, &out).unwrap();
    let mut reader = Reader::new(&out).unwrap();
    let mut s = user.reserve(13).unwrap();
    payload(1, 13, &mut s);
    s.submit();
    assert_eq!(drain.drain().unwrap(), 1);
    assert_eq!(read_all(&mut reader), vec![expected(1, 13)]);
}
