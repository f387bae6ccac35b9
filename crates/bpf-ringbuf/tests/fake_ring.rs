//! The fake ring (feature `testing`): its layout and producer follow the
//! kernel, and the public `Reader` runs on it unchanged. No privileges needed.
#![cfg(feature = "testing")]

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use bpf_ringbuf::testing::{check_payload, fill_payload, FakeRing, Wakeup};
use bpf_ringbuf::{page_size, Budget, Error, Reader, Readiness, StopReason};

use bpf_ringbuf::abi::{BUSY_BIT as BUSY, DISCARD_BIT as DISCARD};

fn now_deadline(r: &mut Reader) {
    r.set_deadline(Some(Instant::now()));
}

fn record(seq: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    fill_payload(seq, &mut v);
    v
}

#[test]
fn sizes_are_checked() {
    let page = page_size();
    for bad in [0, 8, page / 2, page + 8, 3 * page] {
        assert!(
            matches!(FakeRing::new(bad), Err(Error::BadSize { size, .. }) if size == bad),
            "{bad}"
        );
    }
    assert_eq!(FakeRing::new(2 * page).unwrap().size(), 2 * page);
}

#[test]
fn kernel_layout_data_pages_mapped_twice() {
    let mut ring = FakeRing::new(page_size()).unwrap();
    let size = ring.size();
    // A write near the end continues into the second copy, which is the start.
    let bytes: Vec<u8> = (0..16).collect();
    ring.write_data(size - 8, &bytes).unwrap();
    let mut start = [0u8; 8];
    ring.read_data(0, &mut start);
    assert_eq!(start, bytes[8..]);
}

#[test]
fn reserve_refuses_like_the_kernel() {
    let ring = FakeRing::new(page_size()).unwrap();
    let size = ring.size();
    assert!(ring.reserve(1 << 30).is_none(), "length with flag bits");
    assert!(ring.reserve(size).is_none(), "larger than the ring");
    assert!(
        ring.reserve(size - 8).is_none(),
        "needs size bytes: > size-1"
    );
    // The largest record: stride size - 8, so new_prod - cons = size - 8.
    let r = ring.reserve(size - 16).expect("fits");
    assert_eq!(r.position(), 0);
    assert!(ring.reserve(0).is_none(), "the 8 bytes left are never used");
    r.submit(Wakeup::Default);
    assert_eq!(ring.producer_position(), size - 8);

    // The consumer releases it: room again, and the next record wraps.
    let mut reader = ring.reader().unwrap();
    now_deadline(&mut reader);
    assert_eq!(reader.read().unwrap().data.len(), size - 16);
    assert_eq!(ring.consumer_position(), size - 8);
    let payload = record(7, 100);
    let pos = ring.output(&payload, Wakeup::Default).unwrap();
    assert_eq!(pos, size - 8, "header at the last 8 bytes, payload wraps");
    assert_eq!(reader.read().unwrap().data, payload);
}

#[test]
fn full_ring_drops_then_recovers() {
    let ring = FakeRing::new(page_size()).unwrap();
    let mut reader = ring.reader().unwrap();
    now_deadline(&mut reader);
    let mut seq = 0;
    // 64-byte records, stride 72: fill until the producer gets None.
    while ring.output(&record(seq, 64), Wakeup::Default).is_some() {
        seq += 1;
    }
    let fitted = seq;
    assert_eq!(fitted as usize, (ring.size() - 1) / 72);
    // A zero-copy read does not free space until commit.
    let first = reader.read_zero_copy().unwrap();
    assert_eq!(check_payload(first), Ok(0));
    assert!(ring.output(&record(seq, 64), Wakeup::Default).is_none());
    reader.commit();
    assert!(ring.output(&record(seq, 64), Wakeup::Default).is_some());
    seq += 1;
    let mut got = vec![];
    reader
        .consume(|r| {
            got.push(check_payload(r).unwrap());
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(got, (1..seq).collect::<Vec<_>>());
}

#[test]
fn out_of_order_commits_are_delivered_in_ring_order() {
    let ring = FakeRing::new(page_size()).unwrap();
    let mut reader = ring.reader().unwrap();
    now_deadline(&mut reader);
    let mut a = ring.reserve(8).unwrap();
    let mut b = ring.reserve(16).unwrap();
    let mut c = ring.reserve(24).unwrap();
    b.write(0, &record(1, 16));
    b.submit(Wakeup::Default);
    c.write(0, &record(2, 24));
    c.submit(Wakeup::Default);
    // `a` is BUSY: nothing after it is returned.
    assert!(reader.try_read_zero_copy().unwrap().is_none());
    let stats = reader.consume(|_| ControlFlow::Continue(())).unwrap();
    assert_eq!(stats.records, 0);
    assert_eq!(stats.stop, bpf_ringbuf::StopReason::Busy);
    assert!(matches!(reader.read(), Err(Error::DeadlineExceeded)));
    a.write(0, &record(0, 8));
    a.submit(Wakeup::Default);
    let seqs: Vec<u64> = (0..3)
        .map(|_| check_payload(&reader.read().unwrap().data).unwrap())
        .collect();
    assert_eq!(seqs, [0, 1, 2]);
}

#[test]
fn dropped_reservation_is_discarded_and_leaked_one_blocks() {
    let ring = FakeRing::new(page_size()).unwrap();
    let mut reader = ring.reader().unwrap();
    now_deadline(&mut reader);
    drop(ring.reserve(10).unwrap());
    ring.output(b"after", Wakeup::Default).unwrap();
    assert_eq!(reader.read().unwrap().data, b"after");
    let stuck = ring.reserve(4).unwrap().leak();
    ring.output(b"never", Wakeup::Default).unwrap();
    assert_eq!(ring.header(stuck), 4 | BUSY);
    assert!(matches!(reader.read(), Err(Error::DeadlineExceeded)));
    assert_eq!(reader.read_position(), stuck);
}

#[test]
fn wakeups_follow_the_kernel_rule() {
    let ring = FakeRing::new(page_size()).unwrap();
    let mut reader = ring.reader().unwrap();
    now_deadline(&mut reader);
    // Consumer caught up (0 == 0): the first commit wakes.
    assert!(ring.reserve(8).unwrap().submit(Wakeup::Default));
    // Not caught up any more: no wakeup.
    assert!(!ring.reserve(8).unwrap().submit(Wakeup::Default));
    assert!(ring.reserve(8).unwrap().submit(Wakeup::ForceWakeup));
    assert_eq!(ring.wakeups(), 2);
    reader.consume(|_| ControlFlow::Continue(())).unwrap();
    // Caught up again, but NO_WAKEUP never wakes.
    assert!(!ring.reserve(8).unwrap().submit(Wakeup::NoWakeup));
    assert!(!ring.reserve(8).unwrap().discard(Wakeup::NoWakeup));
    // Out of order: the later record commits first at a position the consumer
    // is not at; the earlier one, at the consumer position, wakes.
    reader.consume(|_| ControlFlow::Continue(())).unwrap();
    let a = ring.reserve(8).unwrap();
    let b = ring.reserve(8).unwrap();
    assert!(!b.submit(Wakeup::Default));
    assert!(a.submit(Wakeup::Default));
    assert_eq!(ring.wakeups(), 3);
}

#[test]
fn blocked_reader_is_woken_by_a_producer_thread() {
    let ring = FakeRing::new(4 * page_size()).unwrap();
    let mut reader = ring.reader().unwrap();
    // Generous safety net only; the test checks contents, not time.
    reader.set_deadline(Some(Instant::now() + Duration::from_secs(60)));
    const N: u64 = 20_000;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut seq = 0;
            while seq < N {
                let len = 8 + (seq as usize * 7) % 120;
                if ring.output(&record(seq, len), Wakeup::Default).is_some() {
                    seq += 1;
                    if seq % 64 == 0 {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                } else {
                    std::thread::yield_now();
                }
            }
        });
        let mut next = 0;
        let mut buf = Default::default();
        while next < N {
            reader.read_into(&mut buf).unwrap();
            assert_eq!(check_payload(&buf.data), Ok(next));
            next += 1;
        }
    });
    now_deadline(&mut reader);
    assert!(matches!(reader.read(), Err(Error::DeadlineExceeded)));
}

#[test]
fn no_wakeup_records_need_a_deadline_or_flush() {
    let ring = FakeRing::new(page_size()).unwrap();
    let mut reader = ring.reader().unwrap();
    let handle = reader.handle();
    std::thread::scope(|s| {
        s.spawn(|| {
            ring.output(b"quiet", Wakeup::NoWakeup).unwrap();
            // No wakeup went out, so the blocked reader sleeps on: flush it.
            std::thread::sleep(Duration::from_millis(20));
            handle.flush();
        });
        // Blocks until the flush (the record was committed without a wakeup,
        // unless the reader had not gone to sleep yet and saw it first).
        match reader.read() {
            Ok(rec) => {
                assert_eq!(rec.data, b"quiet");
                assert!(matches!(reader.read(), Err(Error::Flushed)));
            }
            Err(Error::Flushed) => assert_eq!(reader.read().unwrap().data, b"quiet"),
            Err(e) => panic!("{e}"),
        }
    });
    assert_eq!(ring.wakeups(), 0);
}

#[test]
fn new_reader_starts_at_published_position() {
    let ring = FakeRing::new(page_size()).unwrap();
    for seq in 0..10 {
        ring.output(&record(seq, 32), Wakeup::Default).unwrap();
    }
    let mut r1 = ring.reader().unwrap();
    now_deadline(&mut r1);
    // Three read and committed, two read zero-copy and not committed.
    for want in 0..3 {
        assert_eq!(check_payload(&r1.read().unwrap().data), Ok(want));
    }
    assert_eq!(check_payload(r1.read_zero_copy().unwrap()), Ok(3));
    assert_eq!(check_payload(r1.read_zero_copy().unwrap()), Ok(4));
    drop(r1); // Drop does not commit.
    let mut r2 = ring.reader().unwrap();
    now_deadline(&mut r2);
    let mut seqs = vec![];
    r2.consume(|r| {
        seqs.push(check_payload(r).unwrap());
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(seqs, (3..10).collect::<Vec<_>>());
}

#[test]
fn positions_wrap_around_usize() {
    let mut ring = FakeRing::new(page_size()).unwrap();
    let start = usize::MAX - 63; // 8-aligned, 64 bytes before the wrap
    ring.set_producer_position(start).unwrap();
    ring.set_consumer_position(start).unwrap();
    let mut reader = ring.reader().unwrap();
    now_deadline(&mut reader);
    for seq in 0..20 {
        ring.output(&record(seq, 24), Wakeup::Default).unwrap();
    }
    for seq in 0..20 {
        assert_eq!(check_payload(&reader.read().unwrap().data), Ok(seq));
    }
    assert_eq!(ring.consumer_position(), start.wrapping_add(20 * 32));
}

#[test]
fn corrupt_headers_are_errors() {
    let page = page_size();
    // (header word, expected claimed length)
    let cases: [(u32, usize); 4] = [
        (64, 64),                             // past the producer position
        (page as u32 * 4, page * 4),          // past the ring
        (DISCARD | 0x3fff_fff0, 0x3fff_fff0), // discard flag with a huge length
        (DISCARD | 100, 100),                 // a discard running past the data
    ];
    for (word, len) in cases {
        let mut ring = FakeRing::new(page).unwrap();
        let pos = ring.output(&record(0, 16), Wakeup::Default).unwrap();
        ring.output(&record(1, 16), Wakeup::Default).unwrap();
        ring.set_header(pos + 24, word).unwrap();
        let mut r = ring.reader().unwrap();
        now_deadline(&mut r);
        assert_eq!(check_payload(&r.read().unwrap().data), Ok(0));
        let e = r.read().unwrap_err();
        assert!(
            matches!(e, Error::Corrupt { pos: p, len: l, available: 24 } if p == 24 && l == len),
            "{word:#x}: {e:?}"
        );
        // Every read mode reports it, and keeps reporting it.
        assert!(matches!(r.read_zero_copy(), Err(Error::Corrupt { .. })));
        assert!(matches!(r.try_read_zero_copy(), Err(Error::Corrupt { .. })));
        assert!(matches!(
            r.consume(|_| ControlFlow::Continue(())),
            Err(Error::Corrupt { .. })
        ));
        assert_eq!(ring.consumer_position(), 24, "records before it committed");
    }
}

#[test]
fn corrupt_positions_are_errors() {
    let mut ring = FakeRing::new(page_size()).unwrap();
    let size = ring.size();
    // More outstanding than the ring holds.
    ring.set_producer_position(size + 8).unwrap();
    let mut r = ring.reader().unwrap();
    now_deadline(&mut r);
    assert!(matches!(
        r.read(),
        Err(Error::CorruptProducerPosition { consumer: 0, producer, size: s })
            if producer == size + 8 && s == size
    ));
    drop(r);
    // Producer behind the consumer.
    ring.set_consumer_position(64).unwrap();
    ring.set_producer_position(32).unwrap();
    let mut r = ring.reader().unwrap();
    now_deadline(&mut r);
    assert!(matches!(
        r.read_zero_copy(),
        Err(Error::CorruptProducerPosition {
            consumer: 64,
            producer: 32,
            ..
        })
    ));
    assert!(matches!(
        r.consume(|_| ControlFlow::Continue(())),
        Err(Error::CorruptProducerPosition { .. })
    ));
    drop(r);
    // Misaligned producer position.
    ring.set_consumer_position(0).unwrap();
    ring.set_producer_position(12).unwrap();
    let mut r = ring.reader().unwrap();
    now_deadline(&mut r);
    assert!(matches!(
        r.read(),
        Err(Error::CorruptProducerPosition { producer: 12, .. })
    ));
    drop(r);
    // Misaligned consumer position: the reader refuses to start.
    ring.set_consumer_position(4).unwrap();
    assert!(matches!(
        ring.reader(),
        Err(Error::MisalignedConsumerPosition { pos: 4 })
    ));
}

/// `wait()` and `batch()` must report a corrupt head record, not loop on it.
#[test]
fn wait_and_batch_report_corrupt_head() {
    let mut ring = FakeRing::new(page_size()).unwrap();
    let pos = ring.output(&record(0, 16), Wakeup::Default).unwrap();
    ring.set_header(pos, 200).unwrap(); // runs past the 24 bytes produced
    let mut r = ring.reader().unwrap();
    now_deadline(&mut r);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let w = r.wait().map(drop);
        let b = r.batch().map(drop);
        let _ = tx.send((w, b));
    });
    let (w, b) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("wait()/batch() looped forever on a corrupt header");
    assert!(
        matches!(
            w,
            Err(Error::Corrupt {
                pos: 0,
                len: 200,
                ..
            })
        ),
        "{w:?}"
    );
    assert!(
        matches!(
            b,
            Err(Error::Corrupt {
                pos: 0,
                len: 200,
                ..
            })
        ),
        "{b:?}"
    );
}

#[test]
fn reads_after_close_and_deadline_in_the_past() {
    let ring = FakeRing::new(page_size()).unwrap();
    ring.output(b"one", Wakeup::Default).unwrap();
    let mut r = ring.reader().unwrap();
    r.set_deadline(Some(Instant::now() - Duration::from_secs(1)));
    // A past deadline still returns what is there, then DeadlineExceeded.
    assert_eq!(r.read().unwrap().data, b"one");
    assert!(matches!(r.read(), Err(Error::DeadlineExceeded)));
    assert!(matches!(r.read_zero_copy(), Err(Error::DeadlineExceeded)));
    ring.output(b"two", Wakeup::Default).unwrap();
    let h = r.handle();
    h.close();
    h.close(); // idempotent
    assert!(matches!(r.read(), Err(Error::Closed)));
    assert!(matches!(r.read_zero_copy(), Err(Error::Closed)));
    assert!(matches!(r.try_read_zero_copy(), Err(Error::Closed)));
    assert!(matches!(r.wait(), Err(Error::Closed)));
    assert!(matches!(
        r.consume(|_| ControlFlow::Continue(())),
        Err(Error::Closed)
    ));
    // Closing does not release the ring (its slices may still be alive);
    // dropping does. The record is still in the ring for the new reader.
    assert!(matches!(
        ring.reader(),
        Err(Error::ConsumerExists { map_id: None })
    ));
    drop(r);
    let mut r2 = ring.reader().unwrap();
    now_deadline(&mut r2);
    assert_eq!(r2.read().unwrap().data, b"two");
}

#[test]
fn a_blocked_read_waits_out_a_busy_record() {
    for wakeup in [Wakeup::Default, Wakeup::NoWakeup] {
        let ring = FakeRing::new(page_size()).unwrap();
        let mut reader = ring.reader().unwrap();
        reader.set_deadline(Some(Instant::now() + Duration::from_secs(60)));
        let mut a = ring.reserve(16).unwrap();
        std::thread::scope(|s| {
            let reader = &mut reader;
            let t = s.spawn(move || reader.read());
            // The reader finds the record BUSY and backs off (spin, yield, then
            // naps on epoll with its position published).
            std::thread::sleep(Duration::from_millis(30));
            a.write(0, &record(0, 16));
            a.submit(wakeup);
            let rec = t.join().unwrap().unwrap();
            assert_eq!(check_payload(&rec.data), Ok(0), "{wakeup:?}");
        });
    }
}

#[test]
fn a_busy_record_behind_held_slices_is_waited_out() {
    let ring = FakeRing::new(page_size()).unwrap();
    let mut reader = ring.reader().unwrap();
    reader.set_deadline(Some(Instant::now() + Duration::from_secs(60)));
    ring.output(&record(0, 24), Wakeup::Default).unwrap();
    let mut b = ring.reserve(24).unwrap();
    std::thread::scope(|s| {
        let reader = &mut reader;
        let t = s.spawn(move || {
            // A slice is held, so the position cannot be published: the
            // kernel would not wake us; the bounded naps find the commit.
            let first = reader.read_zero_copy().unwrap();
            let second = reader.read_zero_copy().unwrap();
            (check_payload(first), check_payload(second))
        });
        std::thread::sleep(Duration::from_millis(30));
        b.write(0, &record(1, 24));
        b.submit(Wakeup::Default);
        assert_eq!(t.join().unwrap(), (Ok(0), Ok(1)));
    });
    reader.commit();
    assert_eq!(reader.available_bytes(), 0);
}

/// Issue 7 §1.1: a ring whose map flags change the protocol is refused by a
/// zero-copy reader (overwrite mode rewrites records while they are borrowed;
/// this kernel cannot create such a map, so the fake ring reports the flag).
#[test]
fn overwrite_mode_and_unknown_flags_are_refused() {
    let page = page_size();
    let ring = FakeRing::with_flags(page, 1 << 19).unwrap();
    assert!(matches!(
        ring.reader(),
        Err(Error::UnsupportedMapFlags { flags, unsupported, name })
            if flags == 1 << 19 && unsupported == 1 << 19 && name.contains("BPF_F_RB_OVERWRITE")
    ));
    assert!(matches!(
        ring.consumer(),
        Err(Error::UnsupportedMapFlags { .. })
    ));
    let ring = FakeRing::with_flags(page, 1 << 30).unwrap();
    assert!(matches!(
        ring.reader(),
        Err(Error::UnsupportedMapFlags { unsupported, name: "an unknown flag", .. }) if unsupported == 1 << 30
    ));
    // BPF_F_NUMA_NODE does not change the protocol.
    let ring = FakeRing::with_flags(page, 1 << 2).unwrap();
    ring.output(b"numa", Wakeup::Default).unwrap();
    let mut r = ring.reader().unwrap();
    now_deadline(&mut r);
    assert_eq!(r.read().unwrap().data, b"numa");
}

/// Issue 7 §1.2: a second live consumer of one ring is refused until the
/// first is dropped; the second continues after the first one's last commit.
#[test]
fn second_reader_is_refused_until_the_first_is_dropped() {
    let ring = FakeRing::new(page_size()).unwrap();
    for seq in 0..10 {
        ring.output(&record(seq, 16), Wakeup::Default).unwrap();
    }
    let mut first = ring.reader().unwrap();
    now_deadline(&mut first);
    for seq in 0..3 {
        assert_eq!(check_payload(first.read_zero_copy().unwrap()), Ok(seq));
    }
    first.commit();
    // Two more lent and not committed: a second consumer must not be able to
    // hand them back to the producer.
    let a = first.read_zero_copy().unwrap();
    let b = first.read_zero_copy().unwrap();
    assert!(matches!(
        ring.reader(),
        Err(Error::ConsumerExists { map_id: None })
    ));
    assert!(matches!(
        ring.consumer(),
        Err(Error::ConsumerExists { map_id: None })
    ));
    assert_eq!((check_payload(a), check_payload(b)), (Ok(3), Ok(4)));
    // Closing is not enough: only dropping releases the ring.
    first.handle().close();
    assert!(matches!(ring.reader(), Err(Error::ConsumerExists { .. })));
    drop(first);
    let mut second = ring.reader().unwrap();
    now_deadline(&mut second);
    let mut seqs = Vec::new();
    while let Ok(rec) = second.read() {
        seqs.push(check_payload(&rec.data).unwrap());
    }
    assert_eq!(seqs, (3..10).collect::<Vec<_>>());
}

/// Issue 7 §1.4: the corruption helpers could rewrite bytes under a slice a
/// reader still lends, so they refuse while a reader is alive.
#[test]
fn corruption_helpers_refuse_while_a_reader_is_alive() {
    let mut ring = FakeRing::new(page_size()).unwrap();
    let pos = ring.output(&record(0, 16), Wakeup::Default).unwrap();
    let r = ring.reader().unwrap();
    let busy = |e: Result<(), Error>| matches!(e, Err(Error::ConsumerExists { map_id: None }));
    assert!(busy(ring.set_header(pos, 1000)));
    assert!(busy(ring.write_data(pos + 8, &[0xff; 16])));
    assert!(busy(ring.set_producer_position(64)));
    assert!(busy(ring.set_consumer_position(64)));
    // Nothing was written.
    assert_eq!(ring.header(pos), 16);
    assert_eq!(ring.producer_position(), 24);
    assert_eq!(ring.consumer_position(), 0);
    drop(r);
    ring.set_header(pos, 1000).unwrap();
    assert_eq!(ring.header(pos), 1000);
}

/// Issue 7 §1.6: a poll interval too long to add to `Instant::now()` panicked
/// on the first empty read; it now means "until the deadline, flush or close".
#[test]
fn poll_interval_of_duration_max_waits_for_the_deadline() {
    let ring = FakeRing::new(page_size()).unwrap();
    let mut r = ring.reader().unwrap();
    r.set_poll_interval(Some(Duration::MAX));
    r.set_deadline(Some(Instant::now() + Duration::from_millis(20)));
    assert!(matches!(r.read(), Err(Error::DeadlineExceeded)));
    let h = r.handle();
    r.set_deadline(None);
    let t = std::thread::spawn(move || r.read().map(drop));
    std::thread::sleep(Duration::from_millis(20));
    h.flush();
    assert!(matches!(t.join().unwrap(), Err(Error::Flushed)));
}

/// Issue 7 §1.6: `prepare_wait` tells an empty ring (sleep) from a record in
/// progress (sleep with a timeout) and a record to read.
#[test]
fn prepare_wait_tells_empty_in_progress_and_ready_apart() {
    let ring = FakeRing::new(page_size()).unwrap();
    let mut c = ring.consumer().unwrap();
    assert_eq!(c.prepare_wait().unwrap(), Readiness::Empty);
    let mut res = ring.reserve(8).unwrap();
    assert_eq!(c.prepare_wait().unwrap(), Readiness::InProgress);
    assert_eq!(c.try_read_zero_copy().unwrap(), None);
    res.write(0, b"12345678");
    // The consumer published its position before looking at the BUSY
    // header, so the commit wakes it (the kernel's rule).
    assert!(res.submit(Wakeup::Default));
    assert_eq!(c.prepare_wait().unwrap(), Readiness::Ready);
    assert_eq!(c.try_read_zero_copy().unwrap(), Some(&b"12345678"[..]));
    assert_eq!(c.prepare_wait().unwrap(), Readiness::Empty);
    assert_eq!(c.consumer_position(), 16);
}

/// A NUL byte in a path is bad input, not a failed system call.
#[test]
fn nul_in_a_path_is_invalid_path() {
    let p = std::path::Path::new("/sys/fs/bpf/a\0b");
    assert!(matches!(
        bpf_ringbuf::RingBuf::open_pinned(p),
        Err(Error::InvalidPath { path }) if path == p
    ));
}

/// Issue 8: `Wakeup::Sampled` follows `get_flags()` of the kernel's
/// ringbuf_bench.c: just before the commit, the unconsumed bytes
/// (`producer_pos - consumer_pos` as published, the records still BUSY
/// included) pick FORCE_WAKEUP at or above the threshold, else NO_WAKEUP,
/// whether or not the consumer had caught up.
#[test]
fn sampled_wakeups_start_at_the_threshold_of_unconsumed_bytes() {
    let stride = bpf_ringbuf::abi::record_stride(8) as u64;
    let sampled = Wakeup::Sampled {
        threshold: 4 * stride,
    };
    let ring = FakeRing::new(page_size()).unwrap();
    let mut reader = ring.reader().unwrap();
    // Caught up (0 == 0), yet below the threshold: no wakeup, where
    // Wakeup::Default would have sent one.
    let woke: Vec<bool> = (0..6)
        .map(|_| ring.reserve(8).unwrap().submit(sampled))
        .collect();
    // 16, 32, 48 bytes: quiet; 64 (the threshold) and above: every commit
    // forces one.
    assert_eq!(woke, [false, false, false, true, true, true]);
    assert_eq!(ring.wakeups(), 3);

    // The reader catches up and publishes: the count starts again from 0.
    reader.consume(|_| ControlFlow::Continue(())).unwrap();
    assert_eq!(ring.consumer_position(), ring.producer_position());
    assert!(!ring.reserve(8).unwrap().submit(sampled));
    assert!(!ring.reserve(8).unwrap().discard(sampled));
    assert_eq!(ring.wakeups(), 3);

    // Reserved records count before they are committed: with two more
    // reserved, the first commit already sees 4 strides unconsumed.
    let a = ring.reserve(8).unwrap();
    let b = ring.reserve(8).unwrap();
    assert!(b.discard(sampled), "discards follow the same rule");
    assert!(a.submit(sampled));
    assert_eq!(ring.wakeups(), 5);

    // The edges: a threshold of 0 always wakes, u64::MAX never does.
    reader.consume(|_| ControlFlow::Continue(())).unwrap();
    assert!(!ring.reserve(8).unwrap().submit(Wakeup::Sampled {
        threshold: u64::MAX
    }));
    assert!(ring
        .reserve(8)
        .unwrap()
        .submit(Wakeup::Sampled { threshold: 0 }));
    assert_eq!(ring.wakeups(), 6);
}

/// `consume_with_budget` stops exactly where a per-record check would:
/// before the first record once `max_records` were delivered or their
/// payload reached `max_bytes` (the loop looks at the byte budget only at
/// marks; this checks every mark against the simple rule), over mixed
/// sizes (0 to 300 bytes), discards in between, and budgets from nothing to
/// more than the ring holds.
#[test]
fn budgets_stop_exactly_where_the_rule_says() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _ in 0..300 {
        let ring = FakeRing::new(4 * page_size()).unwrap();
        // (sequence, payload length) of the committed records, in order.
        let mut records = Vec::new();
        let mut seq = 0u32;
        loop {
            // The last entry is a record (after a trailing discard the drain
            // would stop at its budget, not at the end).
            let last = ring.size() - ring.producer_position() < 2 * 320;
            let len = rand(301) as usize;
            let mut r = ring.reserve(len.max(4)).expect("room, see `last`");
            r.write(0, &seq.to_le_bytes());
            if !last && rand(5) == 0 {
                r.discard(Wakeup::NoWakeup);
            } else {
                r.submit(Wakeup::NoWakeup);
                records.push((seq, len.max(4)));
            }
            seq += 1;
            if last {
                break;
            }
        }
        let mut c = ring.consumer().unwrap();
        let mut at = 0;
        while at < records.len() {
            let budget = Budget {
                max_records: rand(records.len() as u64 + 2) as usize,
                max_bytes: rand(20_000) as usize,
            };
            // The rule: deliver while under both budgets.
            let (mut n, mut bytes) = (0, 0);
            while at + n < records.len() && n < budget.max_records && bytes < budget.max_bytes {
                bytes += records[at + n].1;
                n += 1;
            }
            let mut got = Vec::new();
            let st = c
                .consume_with_budget(budget, |rec| {
                    got.push(u32::from_le_bytes(rec[..4].try_into().unwrap()));
                    ControlFlow::Continue(())
                })
                .unwrap();
            let want: Vec<u32> = records[at..at + n].iter().map(|r| r.0).collect();
            assert_eq!(got, want, "{budget:?}");
            assert_eq!((st.records, st.bytes), (n, bytes), "{budget:?}");
            let stop = if at + n == records.len() {
                StopReason::Empty
            } else {
                StopReason::Budget
            };
            assert_eq!(st.stop, stop, "{budget:?}");
            at += n;
        }
    }
}
