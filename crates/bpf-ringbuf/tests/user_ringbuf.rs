//! The user ring buffer producer (`UserRingBuf`): on the real kernel, a
//! round trip userspace -> kernel (`bpf_user_ringbuf_drain` in a
//! hand-assembled program) -> a normal ring buffer -> our `Reader`, byte for
//! byte; and, without privileges, the same producer over `FakeUserRing`.

#[macro_use]
mod common;

use std::collections::VecDeque;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use bpf_ringbuf::testing::{create_map, temp_pin_path, FakeUserRing, KernelDrain};
use bpf_ringbuf::{abi, Error, Reader, RingBuf, Sample, UserRingBuf};

const USER_RINGBUF: u32 = 31;
const RINGBUF: u32 = 27;

fn page() -> usize {
    bpf_ringbuf::page_size()
}

/// A payload for sample `seq` of `len` bytes: every byte depends on both.
fn payload(seq: u64, out: &mut [u8]) {
    let len = out.len() as u64;
    for (i, b) in out.iter_mut().enumerate() {
        *b = (seq
            .wrapping_mul(0x9E37_79B9)
            .wrapping_add(i as u64 * 7)
            .wrapping_add(len)
            >> 3) as u8;
    }
}

fn expected(seq: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    payload(seq, &mut v);
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

/// A user ring and the way to drain it: the kernel's program into a ring
/// buffer read by our reader, or the fake ring's drain. `drain` returns the
/// samples delivered, in order.
struct Rig {
    producer: UserRingBuf,
    drain: Box<dyn FnMut() -> Vec<Vec<u8>>>,
}

/// A scenario `fn(&mut Rig)` as two tests: on the kernel (privileged) and
/// on the fake user ring, with their ring sizes.
macro_rules! on_both {
    ($kernel:ident, $fake:ident, $scenario:ident, $ksize:expr, $fsize:expr) => {
        #[test]
        fn $kernel() {
            privileged!();
            $scenario(&mut kernel_rig($ksize));
        }

        #[test]
        fn $fake() {
            $scenario(&mut fake_rig($fsize));
        }
    };
}

fn kernel_rig(size: usize) -> Rig {
    let producer = UserRingBuf::create(size).unwrap();
    // Every sample the user ring holds fits the output ring twice over.
    let out = RingBuf::create(4 * size).unwrap();
    let drain = KernelDrain::into_ring(&producer, &out).unwrap();
    let mut reader = Reader::new(&out).unwrap();
    Rig {
        producer,
        drain: Box::new(move || {
            let n = drain.drain().unwrap();
            let got = read_all(&mut reader);
            assert_eq!(got.len() as u64, n, "the helper's count");
            let _ = out.size(); // keeps the output ring alive
            got
        }),
    }
}

fn fake_rig(size: usize) -> Rig {
    let fake = std::sync::Arc::new(FakeUserRing::new(size).unwrap());
    let producer = fake.producer().unwrap();
    Rig {
        producer,
        drain: Box::new(move || {
            let mut got = Vec::new();
            let n = fake.drain(|s| got.push(s.to_vec())).unwrap();
            assert_eq!(got.len(), n);
            got
        }),
    }
}

/// The round trip: `total` samples of mixed sizes (0 bytes to 3/8 of the
/// ring), reserved up to three at a time and submitted out of order, every
/// fifth one withdrawn (discarded, or dropped), with a drain whenever the
/// ring is full. Every delivered sample is checked byte for byte, in
/// reservation order; returns how many times the producer wrapped.
fn round_trip(rig: &mut Rig, total: u64) -> usize {
    let size = rig.producer.size();
    let sizes = [
        0,
        1,
        7,
        8,
        9,
        63,
        100,
        255,
        1000,
        size * 3 / 8,
        4000 % size,
        17,
    ];
    let mut want: VecDeque<Vec<u8>> = VecDeque::new();
    let mut checked = 0u64;
    let mut check = |got: Vec<Vec<u8>>, want: &mut VecDeque<Vec<u8>>| {
        for g in got {
            let w = want.pop_front().expect("a sample that was not submitted");
            assert_eq!(g, w, "sample {checked}");
            checked += 1;
        }
    };
    let (mut seq, mut submitted, mut withdrawn) = (0u64, 0u64, 0u64);
    while seq < total {
        // Up to three outstanding samples, reserved in order.
        let group = 1 + (seq % 3) as usize;
        let mut held: Vec<(u64, Sample<'_>)> = Vec::new();
        for _ in 0..group {
            if seq >= total {
                break;
            }
            let len = sizes[(seq % sizes.len() as u64) as usize];
            match rig.producer.reserve(len) {
                Ok(mut s) => {
                    assert_eq!(s.len(), len);
                    payload(seq, &mut s);
                    held.push((seq, s));
                    seq += 1;
                }
                Err(Error::RingFull {
                    len: l,
                    needed,
                    available,
                }) => {
                    assert_eq!((l, needed), (len, abi::record_stride(len)));
                    assert!(available < needed);
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        let full = held.len() < group && seq < total;
        // Which are delivered: all but every fifth, in reservation order.
        for (q, s) in &held {
            if q % 5 != 4 {
                want.push_back(expected(*q, s.len()));
            }
        }
        // Commit out of order: last first.
        while let Some((q, s)) = held.pop() {
            if q % 5 == 4 {
                withdrawn += 1;
                if q % 2 == 0 {
                    s.discard();
                } else {
                    drop(s);
                }
            } else {
                submitted += 1;
                s.submit();
            }
        }
        if full {
            let got = (rig.drain)();
            check(got, &mut want);
        }
    }
    check((rig.drain)(), &mut want);
    assert!(want.is_empty(), "{} samples never delivered", want.len());
    assert_eq!(checked, submitted);
    let stats = rig.producer.stats();
    assert_eq!(stats.samples, submitted);
    assert_eq!(stats.discarded, withdrawn);
    assert!(stats.failed_reserves > 0, "the ring filled up");
    assert_eq!(rig.producer.available().unwrap(), size, "all drained");
    let produced = stats.bytes as usize;
    produced / size
}

#[test]
fn kernel_round_trip_many_wraparounds() {
    privileged!();
    let mut rig = kernel_rig(4 * page());
    let wraps = round_trip(&mut rig, 20_000);
    assert!(wraps >= 50, "{wraps} wraparounds");
}

#[test]
fn fake_round_trip_many_wraparounds() {
    let mut rig = fake_rig(page());
    let total = if cfg!(miri) { 300 } else { 20_000 };
    let wraps = round_trip(&mut rig, total);
    assert!(wraps >= total as usize / 200, "{wraps} wraparounds");
}

/// 0 bytes, the largest sample that fits (the whole ring, header
/// included), one byte more, and absurd lengths.
fn size_limits(rig: &mut Rig) {
    let size = rig.producer.size();
    let max = size - abi::HEADER_SIZE;
    assert_eq!(rig.producer.max_sample(), max);
    for len in [max + 1, size, usize::MAX, abi::USER_RINGBUF_MAX_SAMPLE + 1] {
        match rig.producer.reserve(len) {
            Err(Error::SampleTooLarge { len: l, max: m }) => assert_eq!((l, m), (len, max)),
            other => panic!("{len}: {other:?}"),
        }
    }
    // Too large is not "full": the ring is untouched.
    assert_eq!(rig.producer.stats().failed_reserves, 0);
    assert_eq!(rig.producer.available().unwrap(), size);

    let mut empty = rig.producer.reserve(0).unwrap();
    assert!(empty.is_empty());
    assert!(empty.iter_mut().next().is_none());
    empty.submit();
    assert_eq!((rig.drain)(), vec![Vec::<u8>::new()]);

    // The whole ring in one sample.
    let mut whole = rig.producer.reserve(max).unwrap();
    payload(7, &mut whole);
    assert_eq!(rig.producer.available().unwrap(), 0);
    // Now even 0 bytes is "full", and retryable.
    assert!(matches!(
        rig.producer.reserve(0),
        Err(Error::RingFull {
            len: 0,
            needed: 8,
            available: 0
        })
    ));
    whole.submit();
    assert_eq!((rig.drain)(), vec![expected(7, max)]);
    assert_eq!(rig.producer.stats().failed_reserves, 1);
}

on_both!(
    kernel_size_limits,
    fake_size_limits,
    size_limits,
    4 * page(),
    page()
);

#[test]
fn kernel_dynptr_limit_caps_samples_of_big_rings() {
    privileged!();
    // 32 MiB: the ring could hold more, the kernel's dynptr cannot.
    let user = UserRingBuf::create(32 << 20).unwrap();
    assert_eq!(user.max_sample(), abi::USER_RINGBUF_MAX_SAMPLE);
    assert!(matches!(
        user.reserve(abi::USER_RINGBUF_MAX_SAMPLE + 1),
        Err(Error::SampleTooLarge { max, .. }) if max == abi::USER_RINGBUF_MAX_SAMPLE
    ));
    // The largest is accepted, and the kernel consumes it (no copy: larger
    // than the drain's buffer).
    let drain = KernelDrain::sink(&user).unwrap();
    user.reserve(abi::USER_RINGBUF_MAX_SAMPLE).unwrap().submit();
    assert_eq!(drain.drain().unwrap(), 1);
    assert_eq!(user.available().unwrap(), 32 << 20);
}

/// A held (unsubmitted) sample stops the drain; the ones after it wait,
/// submitted or not, and come out in ring order once it is done. A dropped
/// sample is never delivered.
fn held_sample_is_not_overtaken(rig: &mut Rig) {
    let mut a = rig.producer.reserve(10).unwrap();
    let mut b = rig.producer.reserve(20).unwrap();
    payload(2, &mut b);
    b.submit();
    assert_eq!((rig.drain)(), Vec::<Vec<u8>>::new(), "a holds the drain");
    payload(1, &mut a);
    let mut c = rig.producer.reserve(30).unwrap();
    payload(3, &mut c);
    a.submit();
    // c is still held: a and b come out, c stays.
    assert_eq!((rig.drain)(), vec![expected(1, 10), expected(2, 20)]);
    let mut d = rig.producer.reserve(40).unwrap();
    payload(4, &mut d);
    d.submit();
    drop(c); // discarded, with its bytes written
    assert_eq!((rig.drain)(), vec![expected(4, 40)]);
    let stats = rig.producer.stats();
    assert_eq!((stats.samples, stats.discarded, stats.bytes), (3, 1, 70));
}

on_both!(
    kernel_held_sample_is_not_overtaken,
    fake_held_sample_is_not_overtaken,
    held_sample_is_not_overtaken,
    4 * page(),
    page()
);

/// Fills the ring with samples of `len` bytes; returns how many.
fn fill(producer: &UserRingBuf, len: usize) -> u64 {
    let mut n = 0;
    loop {
        match producer.reserve(len) {
            Ok(mut s) => {
                payload(n, &mut s);
                s.submit();
                n += 1;
            }
            Err(Error::RingFull { .. }) => return n,
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn kernel_reserve_blocking_waits_for_the_drain() {
    privileged!();
    let size = 4 * page();
    let user = UserRingBuf::create(size).unwrap();
    let out = RingBuf::create(4 * size).unwrap();
    let drain = KernelDrain::into_ring(&user, &out).unwrap();
    let n = fill(&user, 1000);
    assert_eq!(n as usize, size / abi::record_stride(1000));
    // Full: a deadline ends the wait.
    let t = Instant::now() + Duration::from_millis(20);
    assert!(matches!(
        user.reserve_blocking(1000, Some(t)),
        Err(Error::DeadlineExceeded)
    ));
    assert!(Instant::now() >= t);
    // The kernel drains from another thread: the wait ends with a sample.
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(30));
            assert_eq!(drain.drain().unwrap(), n);
        });
        let mut sample = user
            .reserve_blocking(1000, Some(Instant::now() + Duration::from_secs(30)))
            .expect("room after the drain");
        payload(n, &mut sample);
        sample.submit();
    });
    assert_eq!(drain.drain().unwrap(), 1);
    let mut reader = Reader::new(&out).unwrap();
    let got = read_all(&mut reader);
    assert_eq!(got.len() as u64, n + 1);
    for (q, g) in got.iter().enumerate() {
        assert_eq!(*g, expected(q as u64, 1000));
    }
    let stats = user.stats();
    assert_eq!(stats.full_waits, 2);
    assert!(stats.failed_reserves >= 3);
}

/// A close from another thread ends a blocked reserve, and every reserve
/// after it; samples already reserved can still be submitted.
fn close_wakes_a_blocked_reserve(rig: &mut Rig) {
    let held = rig.producer.reserve(8).unwrap();
    fill(&rig.producer, 8);
    let handle = rig.producer.handle();
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            handle.close();
        });
        assert!(matches!(
            rig.producer.reserve_blocking(8, None),
            Err(Error::Closed)
        ));
    });
    assert!(handle.is_closed());
    assert!(matches!(rig.producer.reserve(0), Err(Error::Closed)));
    held.submit();
    assert!(!(rig.drain)().is_empty());
}

on_both!(
    kernel_close_wakes_a_blocked_reserve,
    fake_close_wakes_a_blocked_reserve,
    close_wakes_a_blocked_reserve,
    page(),
    page()
);

#[test]
fn fake_reserve_blocking_waits_for_the_drain() {
    let fake = FakeUserRing::new(page()).unwrap();
    let producer = fake.producer().unwrap();
    let n = fill(&producer, 100);
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(20));
            let mut k = 0;
            fake.drain(|smp| {
                assert_eq!(smp, expected(k, 100));
                k += 1;
            })
            .unwrap();
            assert_eq!(k, n);
        });
        producer
            .reserve_blocking(100, Some(Instant::now() + Duration::from_secs(30)))
            .expect("room after the drain")
            .submit();
    });
    assert_eq!(fake.drain(|_| {}).unwrap(), 1);
    assert_eq!(producer.stats().full_waits, 1);
}

#[test]
fn producer_moves_to_another_thread() {
    let fake = FakeUserRing::new(page()).unwrap();
    let producer = fake.producer().unwrap();
    let producer = std::thread::spawn(move || {
        producer.reserve(3).unwrap().submit();
        producer
    })
    .join()
    .unwrap();
    producer.reserve(4).unwrap().submit();
    let mut lens = Vec::new();
    fake.drain(|s| lens.push(s.len())).unwrap();
    assert_eq!(lens, [3, 4]);
}

#[test]
fn one_producer_per_ring() {
    let fake = FakeUserRing::new(page()).unwrap();
    let p = fake.producer().unwrap();
    assert!(matches!(
        fake.producer(),
        Err(Error::ProducerExists { map_id: None })
    ));
    drop(p);
    fake.producer().unwrap();
}

#[test]
fn kernel_map_checks() {
    privileged!();
    let user = UserRingBuf::create(page()).unwrap();
    let id = user.id().unwrap();
    // One producer per map in this process, however it is opened.
    assert!(matches!(
        UserRingBuf::from_id(id),
        Err(Error::ProducerExists { map_id: Some(i) }) if i == id
    ));
    // A user ring is not a ring buffer, and the other way round.
    assert!(matches!(
        Reader::new(&user),
        Err(Error::WrongMapType {
            found: USER_RINGBUF,
            expected: RINGBUF,
            ..
        })
    ));
    assert!(matches!(
        RingBuf::from_fd(user.as_fd().try_clone_to_owned().unwrap()),
        Err(Error::WrongMapType {
            found: USER_RINGBUF,
            ..
        })
    ));
    let ring = RingBuf::create(page()).unwrap();
    let e = UserRingBuf::new(&ring).unwrap_err();
    assert!(
        matches!(
            e,
            Error::WrongMapType {
                found: RINGBUF,
                expected: USER_RINGBUF,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("USER_RINGBUF"), "{e}");
    let array = create_map(2, 4, 8, 1).unwrap();
    assert!(matches!(
        UserRingBuf::from_fd(array),
        Err(Error::WrongMapType { found: 2, .. })
    ));
    let file = std::fs::File::open("/proc/self/stat").unwrap();
    assert!(matches!(
        UserRingBuf::new(file.as_fd()),
        Err(Error::NotAMap { .. })
    ));
    assert!(matches!(
        UserRingBuf::create(3 * page()),
        Err(Error::BadSize { .. })
    ));
    // Pinned, dropped, reopened: the producer continues at the kernel's
    // positions (the sample submitted before is still there).
    let path = temp_pin_path("user_ring").unwrap();
    user.pin(&path).unwrap();
    user.reserve(5).unwrap().submit();
    drop(user);
    let user = UserRingBuf::open_pinned(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(user.id(), Some(id));
    assert_eq!(user.available().unwrap(), page() - 16);
    let out = RingBuf::create(page()).unwrap();
    let drain = KernelDrain::into_ring(&user, &out).unwrap();
    let mut s = user.reserve(3).unwrap();
    s.copy_from_slice(b"abc");
    s.submit();
    assert_eq!(drain.drain().unwrap(), 2);
    let mut reader = Reader::new(&out).unwrap();
    let got = read_all(&mut reader);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1], b"abc");
    // From an id, once the first producer is gone.
    drop(user);
    UserRingBuf::from_id(id).unwrap();
}

#[test]
fn kernel_read_only_descriptor_is_refused() {
    privileged!();
    let user = UserRingBuf::create(page()).unwrap();
    let ro = bpf_ringbuf::testing::open_map_read_only(user.id().unwrap()).unwrap();
    drop(user);
    let e = UserRingBuf::from_fd(ro).unwrap_err();
    assert!(
        matches!(&e, Error::ReadOnlyMap { call, .. } if call.contains("producer")),
        "{e:?}"
    );
    assert!(e.to_string().contains("read-write"), "{e}");
}

/// The kernel drains from another thread while the producer runs (its
/// consumer position moving under our reservations): 50k samples of 0 to
/// 300 bytes through a one-page ring, with `reserve_blocking` woken by the
/// drains, every fifth sample held across a second reservation and
/// submitted after it. Everything arrives, in order, byte for byte.
#[test]
fn kernel_concurrent_drain_round_trip() {
    privileged!();
    let total = 50_000u64;
    let user = UserRingBuf::create(page()).unwrap();
    let out = RingBuf::create(16 << 20).unwrap();
    let drain = KernelDrain::into_ring(&user, &out).unwrap();
    let done = std::sync::atomic::AtomicBool::new(false);
    let len = |seq: u64| (seq * 7 % 301) as usize;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut drained = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) || drained < total {
                let n = drain.drain().unwrap();
                drained += n;
                if n == 0 {
                    std::thread::yield_now();
                }
            }
            assert_eq!(drained, total);
        });
        let deadline = Some(Instant::now() + Duration::from_secs(60));
        let mut seq = 0;
        while seq < total {
            let mut a = user.reserve_blocking(len(seq), deadline).unwrap();
            payload(seq, &mut a);
            if seq % 5 == 0 && seq + 1 < total {
                // Hold `a` while the next one is reserved and submitted.
                let mut b = user.reserve_blocking(len(seq + 1), deadline).unwrap();
                payload(seq + 1, &mut b);
                b.submit();
                a.submit();
                seq += 2;
            } else {
                a.submit();
                seq += 1;
            }
        }
        done.store(true, std::sync::atomic::Ordering::Release);
    });
    let mut reader = Reader::new(&out).unwrap();
    let got = read_all(&mut reader);
    assert_eq!(got.len() as u64, total);
    for (q, g) in got.iter().enumerate() {
        assert_eq!(*g, expected(q as u64, len(q as u64)), "sample {q}");
    }
    let stats = user.stats();
    assert_eq!(stats.samples, total);
    assert!(stats.bytes as usize / page() >= 100, "wrapped many times");
}

/// One step of the property test below.
#[derive(Debug, Clone)]
enum Op {
    /// Reserve a sample of this many bytes (it stays outstanding).
    Reserve(usize),
    /// End the outstanding sample at this index (modulo their number):
    /// submit, discard, or drop.
    End { idx: usize, how: u8 },
    /// One drain of at most this many samples.
    Drain(usize),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        4 => prop_oneof![0usize..24, 0usize..400, Just(2000usize), Just(4088usize)].prop_map(Op::Reserve),
        4 => (any::<usize>(), 0u8..3).prop_map(|(idx, how)| Op::End { idx, how }),
        2 => (1usize..20).prop_map(Op::Drain),
    ]
}

proptest::proptest! {
    /// Random reserves, ends in any order and partial drains on a one-page
    /// `FakeUserRing`, against a model: the drain delivers, in reservation
    /// order, every submitted sample up to the first one still outstanding
    /// (or its `max`), skipping the withdrawn ones; a reserve fails with `RingFull` exactly
    /// when the model's free space is short, and with `SampleTooLarge` only
    /// past the ring.
    #[test]
    fn fake_ring_matches_the_model(ops in proptest::collection::vec(op(), 1..200)) {
        let fake = FakeUserRing::new(page()).unwrap();
        let producer = fake.producer().unwrap();
        let size = producer.size();
        // The model: every reservation in order, with its state
        // (None: outstanding; Some(true): submitted; Some(false): withdrawn).
        let mut ring: VecDeque<(u64, usize, Option<bool>)> = VecDeque::new();
        let mut held: Vec<(u64, Sample<'_>)> = Vec::new();
        let mut seq = 0u64;
        for op in ops {
            match op {
                Op::Reserve(len) => {
                    let used: usize = ring.iter().map(|r| abi::record_stride(r.1)).sum();
                    match producer.reserve(len) {
                        Ok(mut s) => {
                            proptest::prop_assert!(used + abi::record_stride(len) <= size);
                            payload(seq, &mut s);
                            held.push((seq, s));
                            ring.push_back((seq, len, None));
                            seq += 1;
                        }
                        Err(Error::RingFull { available, .. }) => {
                            proptest::prop_assert_eq!(available, size - used);
                            proptest::prop_assert!(available < abi::record_stride(len));
                        }
                        Err(Error::SampleTooLarge { .. }) => {
                            proptest::prop_assert!(abi::record_stride(len) > size);
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
                Op::End { idx, how } => {
                    if held.is_empty() {
                        continue;
                    }
                    let (q, s) = held.swap_remove(idx % held.len());
                    let submitted = how == 0;
                    match how {
                        0 => s.submit(),
                        1 => s.discard(),
                        _ => drop(s),
                    }
                    let r = ring.iter_mut().find(|r| r.0 == q).expect("in the model");
                    r.2 = Some(submitted);
                }
                Op::Drain(max) => {
                    let mut want = Vec::new();
                    let mut delivered = 0;
                    // Withdrawn samples are skipped on the way; the drain
                    // stops right after its `max`-th sample.
                    while let Some(&(q, len, Some(sub))) = ring.front() {
                        if delivered == max {
                            break;
                        }
                        if sub {
                            want.push(expected(q, len));
                            delivered += 1;
                        }
                        ring.pop_front();
                    }
                    let mut got = Vec::new();
                    let n = fake.drain_at_most(max, |s| got.push(s.to_vec())).unwrap();
                    proptest::prop_assert_eq!(n, got.len());
                    proptest::prop_assert_eq!(got, want);
                }
            }
        }
        drop(held);
    }
}
