//! Reads that never consume: `Spectator` and `FlightRecorder`, on the real
//! kernel (privileged: skipped loudly without CAP_BPF, failing under
//! BPF_RINGBUF_REQUIRE_PRIVILEGED=1) and on fake rings (unprivileged),
//! including the fake's overwrite mode (Linux 6.19's rules) and the
//! kernel selftest's vector.

#[macro_use]
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bpf_ringbuf::abi::{record_stride, HEADER_SIZE};
use bpf_ringbuf::testing::{
    check_payload, create_map, fill_payload, FakeRing, KernelProducer, ProducerConfig, RecordSize,
    Wakeup,
};
use bpf_ringbuf::{
    page_size, Entry, Error, Event, FlightRecorder, Gap, Reader, RingBuf, Spectator, Start,
};

const OVERWRITE: u32 = 1 << 19;

fn payload(seq: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill_payload(seq, &mut v);
    v
}

/// Every record a spectator can read now, checked, as sequence numbers.
fn drain_seqs(s: &mut Spectator) -> Vec<u64> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while let Some(r) = s.try_read_into(&mut buf).unwrap() {
        assert_eq!(r.len, buf.len());
        out.push(check_payload(&buf).unwrap_or_else(|e| panic!("torn record: {e}")));
    }
    out
}

// ---- kernel -----------------------------------------------------------------

#[test]
fn spectator_never_writes_consumer_pos_and_leaves_the_reader_its_records() {
    privileged!();
    let ring = RingBuf::create(RingBuf::round_up_size(1 << 17)).unwrap();
    let producer = KernelProducer::new(&ring, ProducerConfig::fixed(64)).unwrap();
    producer.produce(1000).unwrap();
    let mut s = Spectator::new(&ring, Start::Consumer).unwrap();
    assert!(!s.is_overwrite());
    assert_eq!(s.overwrite_position(), None);
    assert_eq!(drain_seqs(&mut s), (0..1000).collect::<Vec<_>>());
    assert_eq!(s.consumer_position(), 0, "a spectator never publishes");
    assert_eq!(s.stats().records, 1000);
    assert_eq!(s.position(), s.producer_position());
    assert_eq!(s.available_bytes(), 1000 * record_stride(64) as u64);

    // Not this process's consumer: a reader opens next to it and gets all.
    let mut reader = Reader::new(&ring).unwrap();
    reader.set_deadline(Some(Instant::now()));
    let mut n = 0;
    while let Ok(rec) = reader.read_zero_copy() {
        assert_eq!(check_payload(rec).unwrap(), n);
        n += 1;
    }
    reader.commit();
    assert_eq!(n, 1000);
    assert_eq!(s.consumer_position(), s.producer_position());

    let mut s2 = Spectator::new(&ring, Start::Oldest).unwrap();
    producer.produce(3).unwrap();
    assert_eq!(drain_seqs(&mut s2), vec![1000, 1001, 1002]);
    // Start::Now sees only what comes next.
    let mut s3 = Spectator::from_id(ring.id(), Start::Now).unwrap();
    assert!(drain_seqs(&mut s3).is_empty());
    producer.produce(1).unwrap();
    assert_eq!(drain_seqs(&mut s3), vec![1003]);
}

#[test]
fn spectator_next_to_a_zero_copy_reader_and_a_flat_out_producer() {
    privileged!();
    // A small ring, so the producer laps the trailing spectator often.
    let ring = RingBuf::create(4 * page_size()).unwrap();
    let cfg = ProducerConfig {
        size: RecordSize::Mixed(vec![8, 24, 64, 200, 333]),
        ..ProducerConfig::default()
    };
    let producer = KernelProducer::new(&ring, cfg).unwrap();
    let total = if cfg!(debug_assertions) {
        200_000
    } else {
        1_000_000
    };
    let done = Arc::new(AtomicBool::new(false));

    let mut reader = Reader::new(&ring).unwrap();
    let reader_done = Arc::clone(&done);
    let reader_thread = thread::spawn(move || {
        let mut next = 0u64;
        loop {
            reader.set_deadline(Some(Instant::now() + Duration::from_millis(20)));
            let mut got = false;
            loop {
                match reader.read_zero_copy() {
                    Ok(rec) => {
                        let seq = check_payload(rec).unwrap();
                        assert_eq!(seq, next, "the reader gets every record once, in order");
                        next += 1;
                        got = true;
                    }
                    Err(Error::CommitRequired) => break,
                    Err(Error::DeadlineExceeded) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            reader.commit();
            if !got && reader_done.load(Ordering::Acquire) {
                return next;
            }
        }
    });
    let producer_thread = thread::spawn(move || {
        let mut submitted = 0;
        let mut left = total;
        while left > 0 {
            let chunk = left.min(64);
            let rep = producer.produce(chunk).unwrap();
            submitted += rep.submitted;
            left -= chunk;
            // Let the reader drain now and then (the ring holds ~100 records).
            if rep.dropped > 0 {
                thread::sleep(Duration::from_micros(50));
            }
        }
        submitted
    });

    let mut s = Spectator::new(&ring, Start::Consumer).unwrap();
    let start = s.position();
    let mut buf = Vec::new();
    let mut last: Option<u64> = None;
    let mut strides = 0u64;
    let mut seen = 0u64;
    let mut idle = 0;
    loop {
        match s.try_next(&mut buf).unwrap() {
            Some(Event::Record(r)) => {
                let seq = check_payload(&buf).unwrap_or_else(|e| panic!("torn record: {e}"));
                assert!(last.is_none_or(|l| seq > l), "in ring order");
                last = Some(seq);
                strides += record_stride(r.len) as u64;
                seen += 1;
                idle = 0;
            }
            Some(Event::Gap(_)) => {}
            None => {
                if producer_thread.is_finished() {
                    idle += 1;
                    if idle > 3 {
                        break;
                    }
                }
                thread::yield_now();
            }
        }
    }
    let submitted = producer_thread.join().unwrap();
    done.store(true, Ordering::Release);
    let read = reader_thread.join().unwrap();
    assert_eq!(read, submitted, "the reader got every record exactly once");
    let st = s.stats();
    assert_eq!(st.records, seen);
    // Exact accounting: every byte the spectator passed is a record it
    // returned or a lapped one (the producer discards nothing here).
    assert_eq!(
        start.wrapping_add(strides + st.lapped_bytes),
        s.position(),
        "{st:?}"
    );
    assert_eq!(s.position(), s.producer_position());
    eprintln!(
        "spectator: {seen} of {submitted} records intact, {} lapped records, {} lapped bytes, {} resyncs",
        st.lapped_records, st.lapped_bytes, st.resyncs
    );
}

#[test]
fn lapping_on_the_kernel_resumes_at_the_consumer() {
    privileged!();
    let ring = RingBuf::create(page_size()).unwrap();
    let producer = KernelProducer::new(&ring, ProducerConfig::fixed(64)).unwrap();
    let mut reader = Reader::new(&ring).unwrap();
    let mut s = Spectator::new(&ring, Start::Consumer).unwrap();
    let stride = record_stride(64) as u64;
    producer.produce(10).unwrap();
    let mut buf = Vec::new();
    let first = s.try_read_into(&mut buf).unwrap().unwrap();
    assert_eq!((first.position, check_payload(&buf).unwrap()), (0, 0));
    let per = (page_size() as u64 - 8) / stride;
    let mut produced = 10;
    for _ in 0..3 {
        reader
            .consume(|_| std::ops::ControlFlow::Continue(()))
            .unwrap();
        assert_eq!(producer.produce(per).unwrap().submitted, per);
        produced += per;
    }
    reader
        .consume(|_| std::ops::ControlFlow::Continue(()))
        .unwrap();
    let cons = reader.consumer_position() as u64;
    assert_eq!(cons, produced * stride);
    producer.produce(5).unwrap();
    assert_eq!(
        s.try_next(&mut buf).unwrap(),
        Some(Event::Gap(Gap {
            position: stride,
            bytes: cons - stride,
            records: None
        }))
    );
    assert_eq!(
        drain_seqs(&mut s),
        (produced..produced + 5).collect::<Vec<_>>()
    );
    let st = s.stats();
    assert_eq!(
        (st.lapped_bytes, st.resyncs, st.records),
        (cons - stride, 1, 6)
    );
}

#[test]
fn blocking_reads_honour_deadline_and_close() {
    privileged!();
    let ring = RingBuf::create(page_size()).unwrap();
    let producer = KernelProducer::new(&ring, ProducerConfig::fixed(16)).unwrap();
    let mut s = Spectator::new(&ring, Start::Now).unwrap();
    s.set_poll_interval(Duration::from_millis(1));
    s.set_deadline(Some(Instant::now() + Duration::from_millis(20)));
    let mut buf = Vec::new();
    assert!(matches!(
        s.read_into(&mut buf),
        Err(Error::DeadlineExceeded)
    ));
    producer.produce(2).unwrap();
    let r = s.read_into(&mut buf).unwrap();
    assert_eq!((r.len, check_payload(&buf).unwrap()), (16, 0));
    s.set_deadline(None);
    let h = s.handle();
    let t = thread::spawn(move || s.read_into(&mut Vec::new()).map(|r| r.len));
    // One record is left: the blocked read returns it; then close.
    assert_eq!(t.join().unwrap().unwrap(), 16);
    let mut s = Spectator::new(&ring, Start::Now).unwrap();
    let h2 = s.handle();
    let t = thread::spawn(move || s.read_into(&mut Vec::new()).map(|r| r.len));
    thread::sleep(Duration::from_millis(10));
    h2.close();
    assert!(matches!(t.join().unwrap(), Err(Error::Closed)));
    drop(h);
}

#[test]
fn spectator_refuses_other_map_types() {
    privileged!();
    let arr = create_map(2, 4, 8, 1).unwrap();
    assert!(matches!(
        Spectator::new(&arr, Start::Consumer),
        Err(Error::WrongMapType { found: 2, .. })
    ));
    let user = create_map(31, 0, 0, page_size() as u32).unwrap();
    assert!(matches!(
        FlightRecorder::new(&user),
        Err(Error::WrongMapType { found: 31, .. })
    ));
}

/// Linux 6.19+: a real overwrite-mode ring, filled far past its size by a
/// kernel producer. On a kernel without the flag (map creation fails with
/// EINVAL) this skips loudly, also under BPF_RINGBUF_REQUIRE_PRIVILEGED=1:
/// the kernel lacks the feature, not the process a privilege.
#[test]
fn overwrite_mode_on_the_kernel() {
    privileged!();
    let size = 4 * page_size();
    let ring = match RingBuf::create_overwrite(size) {
        Ok(ring) => ring,
        Err(e) if e.os_error().and_then(|e| e.raw_os_error()) == Some(libc_einval()) => {
            eprintln!(
                "SKIPPED overwrite_mode_on_the_kernel: this kernel lacks BPF_F_RB_OVERWRITE \
                 (Linux 6.19+; BPF_MAP_CREATE with the flag returned EINVAL: {e})"
            );
            return;
        }
        Err(e) => panic!("creating an overwrite-mode ring: {e}"),
    };
    assert!(ring.is_overwrite());
    assert!(matches!(
        Reader::new(&ring),
        Err(Error::UnsupportedMapFlags { .. })
    ));
    let producer = KernelProducer::new(&ring, ProducerConfig::fixed(64)).unwrap();
    let mut rec = FlightRecorder::new(&ring).unwrap();
    let rep = producer.produce(10_000).unwrap();
    assert_eq!(
        rep.submitted, 10_000,
        "overwrite mode never runs out of room"
    );
    let spec = rec.spectator();
    assert!(spec.is_overwrite());
    let over = spec.overwrite_position().unwrap();
    let prod = spec.producer_position();
    assert!(prod - over < size as u64);
    assert_eq!(prod, 10_000 * record_stride(64) as u64);
    let last = rec.last(10).unwrap();
    let seqs: Vec<u64> = last
        .iter()
        .map(|r| check_payload(&r.data).unwrap())
        .collect();
    assert_eq!(seqs, (9_990..10_000).collect::<Vec<_>>());
    // Everything since a position long overwritten: a gap first, then the
    // oldest intact records to the newest.
    let entries = rec.since(0).unwrap();
    assert!(matches!(entries[0], Entry::Gap(Gap { position: 0, bytes, .. }) if bytes == over));
    let n = entries.len() as u64 - 1;
    assert_eq!(n, (prod - over) / record_stride(64) as u64);
    // Following: a gap in-band after the producer laps the follower.
    producer.produce(1000).unwrap();
    let mut buf = Vec::new();
    assert!(matches!(
        rec.try_follow(&mut buf).unwrap(),
        Some(Event::Gap(_))
    ));
    let mut last_seq = None;
    while let Some(e) = rec.try_follow(&mut buf).unwrap() {
        if let Event::Record(_) = e {
            last_seq = Some(check_payload(&buf).unwrap());
        }
    }
    assert_eq!(last_seq, Some(10_999));
}

fn libc_einval() -> i32 {
    22
}

// ---- fake rings ---------------------------------------------------------------

/// The kernel selftest `ringbuf_overwrite_mode`
/// (tools/testing/selftests/bpf/prog_tests/ringbuf.c and
/// progs/test_ringbuf_overwrite.c): a one-page ring, reserves of page/2 and
/// page/4, a third that must fail, then two that fit, in the program's order
/// of reserves and commits; then the records read back.
#[test]
fn fake_overwrite_mode_reproduces_the_kernel_selftest() {
    let size = page_size();
    let ring = FakeRing::with_flags(size, OVERWRITE).unwrap();
    let (len1, len2) = (size / 2, size / 4);
    let len3 = size - len1 - len2 - 3 * HEADER_SIZE;
    let (len4, len5) = (len3 - 8, len3);
    let mut rec1 = ring.reserve(len1).expect("reserve 1");
    let mut rec2 = ring.reserve(len2).expect("reserve 2");
    assert!(ring.reserve(len3).is_none(), "reserve 3 must fail");
    let mut rec4 = ring.reserve(len4).expect("reserve 4");
    rec1.write(0, &payload(1, len1));
    rec2.write(0, &payload(2, len2));
    rec4.write(0, &payload(4, len4));
    let (pos2, pos4) = (rec2.position(), rec4.position());
    rec1.submit(Wakeup::Default);
    rec2.submit(Wakeup::Default);
    rec4.submit(Wakeup::Default);
    let mut rec5 = ring.reserve(len5).expect("reserve 5");
    rec5.write(0, &vec![0xdd; len5]);
    let pos5 = rec5.position();
    rec5.submit(Wakeup::Default);

    assert_eq!(ring.overwrite_position(), Some(len1 + HEADER_SIZE));
    assert_eq!(
        ring.producer_position(),
        len1 + len2 + len4 + len5 + 4 * HEADER_SIZE
    );
    assert_eq!(ring.consumer_position(), 0);
    let mut rec = FlightRecorder::from_spectator(ring.spectator(Start::Oldest).unwrap());
    assert_eq!(
        rec.spectator().available_bytes(),
        (len2 + len4 + len5 + 3 * HEADER_SIZE) as u64
    );
    let last = rec.last(10).unwrap();
    let got: Vec<(u64, Vec<u8>)> = last.into_iter().map(|r| (r.position, r.data)).collect();
    assert_eq!(
        got,
        vec![
            (pos2 as u64, payload(2, len2)),
            (pos4 as u64, payload(4, len4)),
            (pos5 as u64, vec![0xdd; len5]),
        ]
    );
    // The zero-copy reader still refuses such a ring.
    assert!(matches!(
        ring.reader(),
        Err(Error::UnsupportedMapFlags { .. })
    ));
}

#[test]
fn fake_lapped_counts_are_exact() {
    // 56-byte records, stride 64: 63 fit behind overwrite_pos in a page
    // (new_prod - overwrite_pos <= size - 1).
    let size = page_size();
    let stride = 64;
    let fits = (size - 1) / stride;
    let ring = FakeRing::with_flags(size, OVERWRITE).unwrap();
    let mut seq = 0u64;
    let mut out = |n: u64| {
        for _ in 0..n {
            ring.output(&payload(seq, 56), Wakeup::NoWakeup).unwrap();
            seq += 1;
        }
    };
    out(10);
    let mut s = ring.spectator(Start::Oldest).unwrap();
    let mut buf = Vec::new();
    for want in 0..3 {
        s.try_read_into(&mut buf).unwrap().unwrap();
        assert_eq!(check_payload(&buf).unwrap(), want);
    }
    out(200);
    let over = ring.overwrite_position().unwrap();
    assert_eq!(over, (210 - fits) * stride);
    assert_eq!(
        s.try_next(&mut buf).unwrap(),
        Some(Event::Gap(Gap {
            position: 3 * stride as u64,
            bytes: (over - 3 * stride) as u64,
            records: None
        }))
    );
    let rest = drain_seqs(&mut s);
    assert_eq!(rest, ((210 - fits) as u64..210).collect::<Vec<_>>());
    let st = s.stats();
    assert_eq!(st.records, 3 + fits as u64);
    assert_eq!(st.lapped_bytes, (over - 3 * stride) as u64);
    assert_eq!((st.lapped_records, st.resyncs), (0, 1));
}

#[test]
fn fake_spectator_next_to_a_reader_takes_nothing() {
    let ring = FakeRing::new(page_size()).unwrap();
    let mut reader = ring.reader().unwrap();
    let mut s = ring.spectator(Start::Consumer).unwrap();
    for seq in 0..5 {
        ring.output(&payload(seq, 20), Wakeup::Default).unwrap();
    }
    assert_eq!(drain_seqs(&mut s), vec![0, 1, 2, 3, 4]);
    assert_eq!(ring.consumer_position(), 0);
    reader.set_deadline(Some(Instant::now()));
    for seq in 0..5 {
        assert_eq!(check_payload(&reader.read().unwrap().data).unwrap(), seq);
    }
    // Discards are skipped and counted; BUSY stops the spectator.
    let r = ring.reserve(8).unwrap();
    r.discard(Wakeup::Default);
    let busy = ring.reserve(8).unwrap();
    ring.output(&payload(9, 8), Wakeup::Default).unwrap();
    assert!(drain_seqs(&mut s).is_empty());
    assert_eq!(s.stats().discarded, 1);
    let mut busy = busy;
    busy.write(0, &payload(8, 8));
    busy.submit(Wakeup::Default);
    assert_eq!(drain_seqs(&mut s), vec![8, 9]);
}

#[test]
fn fake_flight_recorder_last_since_and_follow() {
    let size = page_size();
    let ring = FakeRing::with_flags(size, OVERWRITE).unwrap();
    let mut rec = FlightRecorder::from_spectator(ring.spectator(Start::Oldest).unwrap());
    assert!(rec.last(5).unwrap().is_empty());
    let mut positions = Vec::new();
    for seq in 0..20 {
        positions.push(ring.output(&payload(seq, 100), Wakeup::NoWakeup).unwrap() as u64);
    }
    let last: Vec<u64> = rec
        .last(4)
        .unwrap()
        .iter()
        .map(|r| check_payload(&r.data).unwrap())
        .collect();
    assert_eq!(last, vec![16, 17, 18, 19]);
    assert_eq!(rec.position(), ring.producer_position() as u64);
    // Since a position still in the ring: no gap.
    let since = rec.since(positions[15]).unwrap();
    assert_eq!(since.len(), 5);
    assert!(matches!(&since[0], Entry::Record(r) if r.position == positions[15]));
    // Since a position ahead of the producer, or misaligned: refused.
    assert!(matches!(
        rec.since(ring.producer_position() as u64 + 8),
        Err(Error::BadPosition { .. })
    ));
    assert!(matches!(rec.since(4), Err(Error::BadPosition { .. })));
    // Follow: records as they come; a gap in-band once the producer laps.
    let mut buf = Vec::new();
    ring.output(&payload(20, 100), Wakeup::NoWakeup).unwrap();
    rec.spectator_mut()
        .set_deadline(Some(Instant::now() + Duration::from_millis(50)));
    match rec.follow(&mut buf).unwrap() {
        Event::Record(r) => assert_eq!((r.len, check_payload(&buf).unwrap()), (100, 20)),
        e => panic!("{e:?}"),
    }
    assert!(matches!(rec.follow(&mut buf), Err(Error::DeadlineExceeded)));
    for seq in 21..200 {
        ring.output(&payload(seq, 100), Wakeup::NoWakeup).unwrap();
    }
    assert!(matches!(
        rec.follow(&mut buf).unwrap(),
        Event::Gap(Gap { records: None, .. })
    ));
    let mut seqs = Vec::new();
    while let Some(Event::Record(_)) = rec.try_follow(&mut buf).unwrap() {
        seqs.push(check_payload(&buf).unwrap());
    }
    assert_eq!(seqs.last(), Some(&199));
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1));
    // Everything since the first record: one gap, then the survivors.
    let since = rec.since(positions[0]).unwrap();
    assert!(matches!(since[0], Entry::Gap(Gap { position: 0, .. })));
    assert!(since[1..].iter().all(|e| matches!(e, Entry::Record(_))));
}

#[test]
fn fake_close_from_another_thread_wakes_a_blocked_spectator() {
    let ring = FakeRing::with_flags(page_size(), OVERWRITE).unwrap();
    let mut s = ring.spectator(Start::Now).unwrap();
    s.set_poll_interval(Duration::from_secs(3600));
    let h = s.handle();
    let t = thread::spawn(move || s.next_event(&mut Vec::new()));
    thread::sleep(Duration::from_millis(10));
    h.close();
    assert!(matches!(t.join().unwrap(), Err(Error::Closed)));
}

/// A producer thread laps a spectator that reads concurrently, on the fake
/// overwrite ring: every record returned is intact, and every byte passed
/// is a record returned or counted as lapped.
#[test]
fn fake_concurrent_producer_never_tears_a_returned_record() {
    let size = page_size();
    let ring = Arc::new(FakeRing::with_flags(size, OVERWRITE).unwrap());
    let total = if cfg!(debug_assertions) {
        20_000
    } else {
        200_000
    };
    let p = Arc::clone(&ring);
    let producer = thread::spawn(move || {
        for seq in 0..total {
            let len = 8 + (seq as usize * 37) % 300;
            p.output(&payload(seq, len), Wakeup::NoWakeup).unwrap();
        }
    });
    let mut s = ring.spectator(Start::Oldest).unwrap();
    let start = s.position();
    let mut buf = Vec::new();
    let (mut strides, mut last) = (0u64, None::<u64>);
    loop {
        match s.try_next(&mut buf).unwrap() {
            Some(Event::Record(r)) => {
                let seq = check_payload(&buf).unwrap_or_else(|e| panic!("torn: {e}"));
                assert!(last.is_none_or(|l| seq > l));
                assert_eq!(r.len, 8 + (seq as usize * 37) % 300);
                last = Some(seq);
                strides += record_stride(r.len) as u64;
            }
            Some(Event::Gap(_)) => {}
            None if producer.is_finished() && s.lag() == 0 => break,
            None => thread::yield_now(),
        }
    }
    producer.join().unwrap();
    let st = s.stats();
    assert_eq!(start + strides + st.lapped_bytes, s.position(), "{st:?}");
    assert_eq!(last, Some(total - 1));
}
