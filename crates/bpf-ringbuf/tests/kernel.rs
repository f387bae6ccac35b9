//! Privileged tests against the real kernel. Each skips loudly without
//! CAP_BPF, and fails instead under BPF_RINGBUF_REQUIRE_PRIVILEGED=1.

#[macro_use]
mod common;

use std::ops::ControlFlow;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bpf_ringbuf::testing::{
    check_payload, create_map, temp_pin_path, KernelProducer, ProducerConfig, RecordSize, Wakeup,
};
use bpf_ringbuf::{Budget, Error, Reader, Record, RingBuf, StopReason};

fn page() -> usize {
    bpf_ringbuf::page_size()
}

fn mixed() -> ProducerConfig {
    ProducerConfig {
        size: RecordSize::Mixed(vec![8, 13, 64, 200, 1000]),
        ..ProducerConfig::default()
    }
}

/// Checks a record's bytes and that it is the next expected sequence number.
fn expect_seq(rec: &[u8], next: &mut u64, cfg: &ProducerConfig) {
    while cfg.is_discarded(*next) {
        *next += 1;
    }
    let seq = check_payload(rec).unwrap_or_else(|e| panic!("bad record: {e}"));
    assert_eq!(seq, *next, "records out of order or lost");
    *next += 1;
}

fn now() -> Option<Instant> {
    Some(Instant::now())
}

/// Drives one read mode over many wraparounds of a small ring: produce a
/// chunk, read all of it, check sequence numbers and every byte.
fn every_record_once(mode: &str) {
    let ring = RingBuf::create(4 * page()).unwrap();
    let cfg = mixed();
    let producer = KernelProducer::new(&ring, cfg.clone()).unwrap();
    let mut reader = Reader::new(&ring).unwrap();
    reader.set_deadline(now());
    let mut next = 0u64;
    let mut total = 0u64;
    let mut rec = Record::default();
    for round in 0..60 {
        let rep = producer.produce(10 + round % 7).unwrap();
        assert_eq!(rep.dropped, 0, "ring too small for a chunk");
        total += rep.submitted;
        match mode {
            "zero_copy" => loop {
                // Hold a few slices at once, then commit.
                let mut held = Vec::new();
                let mut end = None;
                for _ in 0..3 {
                    match reader.read_zero_copy() {
                        Ok(r) => held.push(r),
                        Err(e) => {
                            end = Some(e);
                            break;
                        }
                    }
                }
                for r in &held {
                    expect_seq(r, &mut next, &cfg);
                }
                let had = !held.is_empty();
                drop(held);
                reader.commit();
                match end {
                    None => {}
                    Some(Error::CommitRequired) if had => {}
                    Some(Error::DeadlineExceeded) => break,
                    Some(e) => panic!("{e}"),
                }
            },
            "consume" => {
                let stats = reader
                    .consume(|r| {
                        expect_seq(r, &mut next, &cfg);
                        ControlFlow::Continue(())
                    })
                    .unwrap();
                assert_eq!(stats.stop, StopReason::Empty);
                assert_eq!(stats.records as u64, rep.submitted);
            }
            "budget" => loop {
                let stats = reader
                    .consume_with_budget(Budget::records(4), |r| {
                        expect_seq(r, &mut next, &cfg);
                        ControlFlow::Continue(())
                    })
                    .unwrap();
                assert!(stats.records <= 4);
                if stats.stop == StopReason::Empty {
                    break;
                }
                assert_eq!(stats.stop, StopReason::Budget);
            },
            "read_into" => loop {
                match reader.read_into(&mut rec) {
                    Ok(()) => expect_seq(&rec.data, &mut next, &cfg),
                    Err(Error::DeadlineExceeded) => break,
                    Err(e) => panic!("{e}"),
                }
                assert_eq!(reader.consumer_position(), reader.read_position());
            },
            "read" => loop {
                match reader.read() {
                    Ok(r) => expect_seq(&r.data, &mut next, &cfg),
                    Err(Error::DeadlineExceeded) => break,
                    Err(e) => panic!("{e}"),
                }
            },
            "batch" => loop {
                match reader.batch() {
                    Ok(batch) => {
                        for r in &batch {
                            expect_seq(r, &mut next, &cfg);
                        }
                    }
                    Err(Error::DeadlineExceeded) => break,
                    Err(e) => panic!("{e}"),
                }
            },
            _ => unreachable!(),
        }
        assert_eq!(reader.available_bytes(), 0, "{mode}: everything consumed");
        reader.set_deadline(now());
    }
    assert_eq!(next, producer.next_seq().unwrap());
    assert!(total > 0);
    // Many wraparounds: the positions went round the 16 KiB ring many times.
    assert!(
        reader.consumer_position() > 10 * reader.buffer_size(),
        "{mode}: only {} bytes read",
        reader.consumer_position()
    );
}

#[test]
fn zero_copy_reads_every_record_once() {
    privileged!();
    every_record_once("zero_copy");
}

#[test]
fn consume_reads_every_record_once() {
    privileged!();
    every_record_once("consume");
}

#[test]
fn consume_with_budget_reads_every_record_once() {
    privileged!();
    every_record_once("budget");
}

#[test]
fn read_into_reads_every_record_once() {
    privileged!();
    every_record_once("read_into");
}

#[test]
fn read_reads_every_record_once() {
    privileged!();
    every_record_once("read");
}

#[test]
fn batch_reads_every_record_once() {
    privileged!();
    every_record_once("batch");
}

#[test]
fn streaming_with_blocking_zero_copy_reads() {
    privileged!();
    // A producer thread and a blocking reader: exercises the wakeup path.
    let ring = RingBuf::create(64 * page()).unwrap();
    let cfg = ProducerConfig::fixed(48);
    let producer = KernelProducer::new(&ring, cfg.clone()).unwrap();
    let mut reader = Reader::new(&ring).unwrap();
    let handle = reader.handle();
    let mut t = Some(thread::spawn(move || {
        let mut submitted = 0;
        for i in 0..400 {
            submitted += producer.produce(50).unwrap().submitted;
            if i % 50 == 0 {
                thread::sleep(Duration::from_millis(2)); // let the reader sleep
            }
        }
        submitted
    }));
    let mut next = 0u64;
    let mut in_batch = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    reader.set_deadline(Some(deadline));
    let mut submitted = None;
    loop {
        match reader.read_zero_copy() {
            Ok(r) => {
                expect_seq(r, &mut next, &cfg);
                in_batch += 1;
                if in_batch == 64 {
                    reader.commit();
                    in_batch = 0;
                }
            }
            Err(Error::CommitRequired) => {
                reader.commit();
                in_batch = 0;
            }
            Err(Error::Flushed) => break,
            Err(e) => panic!("after {next} records: {e}"),
        }
        if t.as_ref().is_some_and(|t| t.is_finished()) {
            submitted = Some(t.take().unwrap().join().unwrap());
            handle.flush(); // ends the loop once everything is read
        }
        if submitted.is_none() {
            reader.set_deadline(Some(
                deadline.min(Instant::now() + Duration::from_millis(100)),
            ));
        }
    }
    let submitted = submitted.expect("producer finished");
    assert_eq!(next, submitted, "every submitted record was read");
}

#[test]
fn discarded_records_are_skipped() {
    privileged!();
    let ring = RingBuf::create(16 * page()).unwrap();
    let cfg = ProducerConfig {
        discard_every: Some(3),
        ..mixed()
    };
    let producer = KernelProducer::new(&ring, cfg.clone()).unwrap();
    let rep = producer.produce(90).unwrap();
    assert_eq!((rep.submitted, rep.discarded, rep.dropped), (60, 30, 0));
    let mut reader = Reader::new(&ring).unwrap();
    let mut seen = Vec::new();
    let stats = reader
        .consume(|r| {
            seen.push(check_payload(r).unwrap());
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(stats.records, 60);
    let want: Vec<u64> = (0..90).filter(|s| (s + 1) % 3 != 0).collect();
    assert_eq!(seen, want);
    assert_eq!(reader.available_bytes(), 0, "discards are consumed too");
}

#[test]
fn no_wakeup_records_are_read_through_a_deadline() {
    privileged!();
    let ring = RingBuf::create(16 * page()).unwrap();
    let cfg = ProducerConfig {
        wakeup: Wakeup::NoWakeup,
        ..ProducerConfig::fixed(32)
    };
    let producer = KernelProducer::new(&ring, cfg.clone()).unwrap();
    let mut reader = Reader::new(&ring).unwrap();
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        producer.produce(10).unwrap()
    });
    // The reader blocks with nothing there; NO_WAKEUP records do not wake it,
    // the deadline does, and then the records come before DeadlineExceeded.
    let deadline = Instant::now() + Duration::from_millis(400);
    reader.set_deadline(Some(deadline));
    let mut next = 0;
    loop {
        match reader.read() {
            Ok(r) => expect_seq(&r.data, &mut next, &cfg),
            Err(Error::DeadlineExceeded) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(Instant::now() >= deadline);
    assert_eq!(t.join().unwrap().submitted, 10);
    assert_eq!(next, 10);
}

#[test]
fn flush_wakes_a_blocked_read_then_reports_once() {
    privileged!();
    let ring = RingBuf::create(16 * page()).unwrap();
    let cfg = ProducerConfig {
        wakeup: Wakeup::NoWakeup,
        ..ProducerConfig::fixed(24)
    };
    let producer = KernelProducer::new(&ring, cfg.clone()).unwrap();
    let mut reader = Reader::new(&ring).unwrap();
    let handle = reader.handle();
    let (tx, rx) = mpsc::channel();
    let t = thread::spawn(move || {
        let mut got = Vec::new();
        let end = loop {
            match reader.read() {
                Ok(r) => got.push(check_payload(&r.data).unwrap()),
                Err(e) => break e,
            }
        };
        tx.send(()).unwrap();
        // Flushed is reported once: the next empty read waits again.
        reader.set_deadline(Some(Instant::now() + Duration::from_millis(20)));
        let after = reader.read().unwrap_err();
        (got, end, after)
    });
    thread::sleep(Duration::from_millis(50));
    assert_eq!(producer.produce(5).unwrap().submitted, 5); // wakes nobody
    assert!(
        rx.recv_timeout(Duration::from_millis(100)).is_err(),
        "read returned before flush"
    );
    handle.flush();
    let (got, end, after) = t.join().unwrap();
    assert_eq!(got, vec![0, 1, 2, 3, 4]);
    assert!(matches!(end, Error::Flushed), "{end}");
    assert!(matches!(after, Error::DeadlineExceeded), "{after}");
}

#[test]
fn flush_without_a_blocked_read_stays_pending() {
    privileged!();
    let ring = RingBuf::create(16 * page()).unwrap();
    let producer = KernelProducer::new(&ring, ProducerConfig::fixed(16)).unwrap();
    let mut reader = Reader::new(&ring).unwrap();
    reader.handle().flush();
    producer.produce(3).unwrap();
    for want in 0..3 {
        assert_eq!(check_payload(&reader.read().unwrap().data).unwrap(), want);
    }
    assert!(matches!(reader.read(), Err(Error::Flushed)));
    reader.set_deadline(now());
    assert!(matches!(reader.read(), Err(Error::DeadlineExceeded)));
}

#[test]
fn close_from_another_thread_while_blocked() {
    privileged!();
    let ring = RingBuf::create(16 * page()).unwrap();
    let producer = KernelProducer::new(&ring, ProducerConfig::fixed(16)).unwrap();
    let reader = Reader::new(&ring).unwrap();
    let handle = reader.handle();
    let clone = handle.clone();
    let t = thread::spawn(move || {
        let e = reader.read_zero_copy().unwrap_err();
        (reader, e)
    });
    thread::sleep(Duration::from_millis(50));
    clone.close();
    let (mut reader, e) = t.join().unwrap();
    assert!(matches!(e, Error::Closed), "{e}");
    assert!(handle.is_closed());
    handle.close(); // idempotent
                    // Records present: every read still says Closed at once.
    producer.produce(4).unwrap();
    assert!(matches!(reader.read(), Err(Error::Closed)));
    assert!(matches!(reader.read_zero_copy(), Err(Error::Closed)));
    assert!(matches!(
        reader.consume(|_| ControlFlow::Continue(())),
        Err(Error::Closed)
    ));
    assert!(matches!(reader.wait(), Err(Error::Closed)));
    // Closed is not released: a second reader of the map is refused until
    // the first is dropped. The map is untouched: the new reader reads them.
    assert!(matches!(
        Reader::new(&ring),
        Err(Error::ConsumerExists { map_id: Some(id) }) if id == ring.id()
    ));
    drop(reader);
    let mut other = Reader::new(&ring).unwrap();
    assert_eq!(check_payload(&other.read().unwrap().data).unwrap(), 0);
}

#[test]
fn pinned_ring_reopened_continues_after_last_commit() {
    privileged!();
    let path = temp_pin_path("reopen").unwrap();
    let ring = RingBuf::create(16 * page()).unwrap();
    ring.pin(&path).unwrap();
    let producer = KernelProducer::new(&ring, ProducerConfig::fixed(40)).unwrap();
    producer.produce(100).unwrap();
    {
        let mut reader = Reader::new(&ring).unwrap();
        for want in 0..40 {
            let r = reader.read_zero_copy().unwrap();
            assert_eq!(check_payload(r).unwrap(), want);
        }
        reader.commit();
        // Ten more read but not committed: dropping the reader does not commit.
        for _ in 0..10 {
            reader.read_zero_copy().unwrap();
        }
    }
    drop(ring);
    let reopened = RingBuf::open_pinned(&path).unwrap();
    assert_eq!(reopened.size(), 16 * page());
    let mut reader = Reader::new(&reopened).unwrap();
    reader.set_deadline(now());
    let mut seqs = Vec::new();
    while let Ok(r) = reader.read() {
        seqs.push(check_payload(&r.data).unwrap());
    }
    assert_eq!(seqs, (40..100).collect::<Vec<_>>());
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn open_by_id_and_from_fd() {
    privileged!();
    let ring = RingBuf::create(8 * page()).unwrap();
    let by_id = RingBuf::from_id(ring.id()).unwrap();
    assert_eq!((by_id.size(), by_id.id()), (ring.size(), ring.id()));
    let fd: OwnedFd = ring.as_fd().try_clone_to_owned().unwrap();
    let adopted = RingBuf::from_fd(fd).unwrap();
    assert_eq!(adopted.size(), 8 * page());
}

#[test]
fn reader_outlives_the_ringbuf_handle() {
    privileged!();
    let ring = RingBuf::create(8 * page()).unwrap();
    let producer = KernelProducer::new(&ring, ProducerConfig::fixed(16)).unwrap();
    let mut reader = Reader::new(&ring).unwrap();
    drop(ring);
    producer.produce(7).unwrap();
    reader.set_deadline(now());
    let mut n = 0;
    while let Ok(r) = reader.read() {
        assert_eq!(check_payload(&r.data).unwrap(), n);
        n += 1;
    }
    assert_eq!(n, 7);
}

#[test]
fn wrong_map_types_are_rejected() {
    privileged!();
    let array = create_map(2, 4, 8, 1).unwrap();
    let e = Reader::new(&array).unwrap_err();
    assert!(
        matches!(
            e,
            Error::WrongMapType {
                found: 2,
                found_name: "ARRAY",
                expected: 27,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("ARRAY"), "{e}");
    assert!(matches!(
        RingBuf::from_fd(array),
        Err(Error::WrongMapType { found: 2, .. })
    ));
    let user = create_map(31, 0, 0, page() as u32).unwrap();
    assert!(matches!(
        Reader::new(&user),
        Err(Error::WrongMapType {
            found: 31,
            found_name: "USER_RINGBUF",
            ..
        })
    ));
    assert!(matches!(
        KernelProducer::new(&user, ProducerConfig::default()),
        Err(Error::WrongMapType { found: 31, .. })
    ));
}

#[test]
fn non_map_descriptors_are_rejected() {
    privileged!();
    let file = std::fs::File::open("/dev/null").unwrap();
    assert!(matches!(Reader::new(&file), Err(Error::NotAMap { .. })));
    assert!(matches!(
        RingBuf::from_fd(OwnedFd::from(file)),
        Err(Error::NotAMap { .. })
    ));
    // A descriptor number that is not open.
    // SAFETY: the descriptor is only inspected (fcntl) and found closed.
    let closed = unsafe { BorrowedFd::borrow_raw(1_000_000) };
    assert!(matches!(
        Reader::new(closed),
        Err(Error::BadFd { fd: 1_000_000 })
    ));
}

#[test]
fn bad_sizes_are_rejected_with_a_suggestion() {
    privileged!();
    let p = page();
    for (size, suggested) in [(0, p), (1, p), (p + 1, p), (3 * p, 4 * p), (5 * p, 4 * p)] {
        match RingBuf::create(size) {
            Err(Error::BadSize {
                size: s,
                suggested: g,
                page_size,
            }) => {
                assert_eq!((s, g, page_size), (size, suggested, p));
            }
            other => panic!("{size}: {other:?}"),
        }
    }
    let msg = RingBuf::create(3 * p).unwrap_err().to_string();
    assert!(
        msg.contains("power of two") && msg.contains(&(4 * p).to_string()),
        "{msg}"
    );
    assert_eq!(RingBuf::round_up_size(3 * p), 4 * p);
    assert!(RingBuf::create(RingBuf::round_up_size(3 * p)).is_ok());
}

#[test]
fn missing_pin_is_reported() {
    privileged!();
    let path = temp_pin_path("missing").unwrap();
    match RingBuf::open_pinned(&path) {
        Err(Error::PinNotFound { path: p }) => assert_eq!(p, path),
        other => panic!("{other:?}"),
    }
}

#[test]
fn held_records_stay_intact_until_commit() {
    privileged!();
    let ring = RingBuf::create(4 * page()).unwrap();
    let cfg = ProducerConfig::fixed(100);
    let producer = KernelProducer::new(&ring, cfg.clone()).unwrap();
    producer.produce(20).unwrap();
    let mut reader = Reader::new(&ring).unwrap();
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(reader.read_zero_copy().unwrap());
    }
    // The ring is empty with records uncommitted: no wait (there is no
    // deadline), a clear error.
    assert!(matches!(
        reader.read_zero_copy(),
        Err(Error::CommitRequired)
    ));
    // The producer keeps writing; it fills what is free, then fails to reserve.
    let rep = producer.produce(200).unwrap();
    assert!(rep.dropped > 0, "the held space was not reused: {rep:?}");
    for (i, r) in held.iter().enumerate() {
        assert_eq!(check_payload(r).unwrap(), i as u64, "held record changed");
    }
    reader.commit();
    reader.set_deadline(now());
    let mut next = 20;
    while let Ok(r) = reader.read_zero_copy() {
        expect_seq(r, &mut next, &cfg);
    }
    assert_eq!(next, 20 + rep.submitted);
}

#[test]
fn consume_break_counts_the_record_as_consumed() {
    privileged!();
    let ring = RingBuf::create(8 * page()).unwrap();
    let producer = KernelProducer::new(&ring, ProducerConfig::fixed(16)).unwrap();
    producer.produce(10).unwrap();
    let mut reader = Reader::new(&ring).unwrap();
    let mut seen = Vec::new();
    let stats = reader
        .consume(|r| {
            seen.push(check_payload(r).unwrap());
            if seen.len() == 3 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert_eq!(
        (stats.records, stats.bytes, stats.stop),
        (3, 48, StopReason::Callback)
    );
    let stats = reader
        .consume_with_budget(Budget::bytes(40), |r| {
            seen.push(check_payload(r).unwrap());
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!((stats.records, stats.stop), (3, StopReason::Budget));
    reader
        .consume(|r| {
            seen.push(check_payload(r).unwrap());
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
}

#[test]
fn introspection_and_remaining() {
    privileged!();
    let ring = RingBuf::create(8 * page()).unwrap();
    let producer = KernelProducer::new(&ring, ProducerConfig::fixed(20)).unwrap();
    let mut reader = Reader::new(&ring).unwrap();
    assert_eq!(reader.buffer_size(), 8 * page());
    producer.produce(4).unwrap();
    // 20 bytes + 8 header = 28, rounded to 32 per record.
    assert_eq!(reader.available_bytes(), 4 * 32);
    assert_eq!(reader.producer_position(), 128);
    let r = reader.read().unwrap();
    assert_eq!(r.remaining, 3 * 32);
    assert_eq!(reader.consumer_position(), 32);
    assert_eq!(reader.available_bytes(), 3 * 32);
    let _ = reader.read_zero_copy().unwrap();
    // Zero-copy reads do not change what the kernel sees until commit.
    assert_eq!(reader.available_bytes(), 3 * 32);
    assert_eq!(reader.read_position(), 64);
    reader.commit();
    assert_eq!(reader.available_bytes(), 2 * 32);
    // Every `&mut self` call publishes outstanding zero-copy reads first:
    // `set_deadline` ...
    let _ = reader.read_zero_copy().unwrap();
    assert_eq!(reader.available_bytes(), 2 * 32);
    reader.set_deadline(None);
    assert_eq!(reader.available_bytes(), 32);
    // ... and `read`.
    producer.produce(1).unwrap();
    let _ = reader.read_zero_copy().unwrap();
    let r = reader.read().unwrap();
    assert_eq!((r.remaining, reader.consumer_position()), (0, 160));
}

#[test]
fn deadline_in_the_past_reads_what_is_there() {
    privileged!();
    let ring = RingBuf::create(8 * page()).unwrap();
    let producer = KernelProducer::new(&ring, ProducerConfig::fixed(16)).unwrap();
    producer.produce(3).unwrap();
    let mut reader = Reader::new(&ring).unwrap();
    reader.set_deadline(Some(Instant::now() - Duration::from_secs(1)));
    for want in 0..3 {
        assert_eq!(check_payload(&reader.read().unwrap().data).unwrap(), want);
    }
    assert!(matches!(reader.read(), Err(Error::DeadlineExceeded)));
    assert!(matches!(reader.wait(), Err(Error::DeadlineExceeded)));
    assert!(matches!(reader.batch(), Err(Error::DeadlineExceeded)));
}

#[test]
fn reader_is_send_and_handle_is_sync() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync + Clone>() {}
    send::<Reader>();
    send_sync::<bpf_ringbuf::ReaderHandle>();
    send::<RingBuf>();
}

#[test]
fn producer_config_is_validated() {
    privileged!();
    let ring = RingBuf::create(page()).unwrap();
    for cfg in [
        ProducerConfig::fixed(4),
        ProducerConfig::fixed(page()),
        ProducerConfig {
            discard_every: Some(0),
            ..ProducerConfig::default()
        },
        ProducerConfig {
            size: RecordSize::Mixed(vec![]),
            ..ProducerConfig::default()
        },
    ] {
        assert!(
            matches!(
                KernelProducer::new(&ring, cfg.clone()),
                Err(Error::InvalidArgument { .. })
            ),
            "{cfg:?}"
        );
    }
    // The largest record that fits a one-page ring, and a big one elsewhere.
    assert!(KernelProducer::new(&ring, ProducerConfig::fixed(page() - 16)).is_ok());
    let big = RingBuf::create(64 * page()).unwrap();
    let p = KernelProducer::new(&big, ProducerConfig::fixed(4096)).unwrap();
    assert_eq!(p.produce(8).unwrap().submitted, 8);
    let mut reader = Reader::new(&big).unwrap();
    let mut n = 0;
    reader
        .consume(|r| {
            assert_eq!((r.len(), check_payload(r).unwrap()), (4096, n));
            n += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(n, 8);
}

extern "C" fn on_signal(_: libc::c_int) {}

#[test]
fn signals_do_not_end_a_blocked_read_early() {
    privileged!();
    // A handler (so the signal interrupts epoll_wait with EINTR instead of
    // being ignored or killing the process).
    // SAFETY: installs an async-signal-safe no-op handler for SIGUSR2.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut()), 0);
    }
    let ring = RingBuf::create(8 * page()).unwrap();
    let producer = KernelProducer::new(
        &ring,
        ProducerConfig {
            wakeup: Wakeup::NoWakeup,
            ..ProducerConfig::fixed(16)
        },
    )
    .unwrap();
    let mut reader = Reader::new(&ring).unwrap();
    let deadline = Instant::now() + Duration::from_millis(300);
    reader.set_deadline(Some(deadline));
    let (tx, rx) = mpsc::channel();
    let t = thread::spawn(move || {
        // SAFETY: pthread_self has no preconditions.
        tx.send(unsafe { libc::pthread_self() }).unwrap();
        let mut got = Vec::new();
        let end = loop {
            match reader.read() {
                Ok(r) => got.push(check_payload(&r.data).unwrap()),
                Err(e) => break e,
            }
        };
        (got, end, Instant::now())
    });
    let tid = rx.recv().unwrap();
    for i in 0..5 {
        thread::sleep(Duration::from_millis(30));
        if i == 2 {
            producer.produce(3).unwrap(); // NO_WAKEUP: only the deadline finds them
        }
        // SAFETY: the thread is alive until it returns (joined below).
        unsafe { libc::pthread_kill(tid, libc::SIGUSR2) };
    }
    let (got, end, at) = t.join().unwrap();
    assert!(matches!(end, Error::DeadlineExceeded), "{end}");
    assert!(at >= deadline, "returned before the deadline");
    assert_eq!(got, vec![0, 1, 2]);
}

#[test]
fn concurrent_producers_share_one_sequence() {
    privileged!();
    let ring = RingBuf::create(256 * page()).unwrap();
    let a = std::sync::Arc::new(KernelProducer::new(&ring, ProducerConfig::fixed(24)).unwrap());
    let b = KernelProducer::new(&ring, mixed()).unwrap();
    let mut reader = Reader::new(&ring).unwrap();
    let (submitted, seen) = thread::scope(|s| {
        // Two threads on one producer, a third on another producer of the same map.
        let workers: Vec<_> = [a.clone(), a.clone()]
            .into_iter()
            .map(|p| {
                s.spawn(move || {
                    (0..20)
                        .map(|_| p.produce(100).unwrap().submitted)
                        .sum::<u64>()
                })
            })
            .chain([s.spawn(|| {
                (0..20)
                    .map(|_| b.produce(100).unwrap().submitted)
                    .sum::<u64>()
            })])
            .collect();
        let mut seen = Vec::new();
        reader.set_deadline(Some(Instant::now() + Duration::from_secs(30)));
        while seen.len() < 6000 {
            reader
                .consume(|r| {
                    seen.push(check_payload(r).unwrap());
                    ControlFlow::Continue(())
                })
                .unwrap();
            if seen.len() < 6000 && !workers.iter().all(|w| w.is_finished()) {
                reader.set_deadline(Some(Instant::now() + Duration::from_millis(50)));
                match reader.wait() {
                    Ok(()) | Err(Error::DeadlineExceeded) => {}
                    Err(e) => panic!("{e}"),
                }
            } else if workers.iter().all(|w| w.is_finished()) {
                reader
                    .consume(|r| {
                        seen.push(check_payload(r).unwrap());
                        ControlFlow::Continue(())
                    })
                    .unwrap();
                break;
            }
        }
        let submitted: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
        (submitted, seen)
    });
    assert_eq!(submitted, 6000, "a 1 MiB ring holds all of them");
    let mut sorted = seen.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..6000).collect::<Vec<_>>(),
        "each sequence number exactly once"
    );
    assert_eq!(a.next_seq().unwrap(), 6000);
}

#[test]
fn skipped_discards_are_handed_back_even_when_a_read_ends_in_error() {
    privileged!();
    let ring = RingBuf::create(8 * page()).unwrap();
    let cfg = ProducerConfig {
        discard_every: Some(1), // every record discarded
        ..ProducerConfig::fixed(16)
    };
    let producer = KernelProducer::new(&ring, cfg).unwrap();
    assert_eq!(producer.produce(5).unwrap().discarded, 5);
    let mut reader = Reader::new(&ring).unwrap();
    reader.set_deadline(now());
    assert!(matches!(
        reader.read_zero_copy(),
        Err(Error::DeadlineExceeded)
    ));
    assert_eq!(
        reader.available_bytes(),
        0,
        "the discarded space went back to the kernel"
    );
    assert_eq!(reader.consumer_position(), 5 * 24);
}

#[test]
fn poll_interval_mode_reads_without_kernel_wakeups() {
    privileged!();
    let ring = RingBuf::create(16 * page()).unwrap();
    let loud = KernelProducer::new(&ring, ProducerConfig::fixed(32)).unwrap();
    let quiet = KernelProducer::new(
        &ring,
        ProducerConfig {
            wakeup: Wakeup::NoWakeup,
            ..ProducerConfig::fixed(48)
        },
    )
    .unwrap();
    let mut reader = Reader::new(&ring).unwrap();
    reader.set_poll_interval(Some(Duration::from_millis(2)));
    assert_eq!(reader.poll_interval(), Some(Duration::from_millis(2)));
    reader.set_deadline(Some(Instant::now() + Duration::from_secs(60)));
    let handle = reader.handle();
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        loud.produce(10).unwrap();
        thread::sleep(Duration::from_millis(20));
        quiet.produce(10).unwrap(); // found by the next look, no wakeup needed
        thread::sleep(Duration::from_millis(20));
        handle.flush();
    });
    let mut seqs = Vec::new();
    loop {
        match reader.read() {
            Ok(r) => seqs.push(check_payload(&r.data).unwrap()),
            Err(Error::Flushed) => break,
            Err(e) => panic!("{e}"),
        }
    }
    t.join().unwrap();
    assert_eq!(seqs, (0..20).collect::<Vec<_>>());
}

#[test]
fn close_wakes_a_reader_in_poll_interval_mode() {
    privileged!();
    let ring = RingBuf::create(4 * page()).unwrap();
    let mut reader = Reader::new(&ring).unwrap();
    // An interval far longer than the test: only the close can end the nap.
    reader.set_poll_interval(Some(Duration::from_secs(3600)));
    let handle = reader.handle();
    let t = thread::spawn(move || reader.read().unwrap_err());
    thread::sleep(Duration::from_millis(20));
    handle.close();
    assert!(matches!(t.join().unwrap(), Error::Closed));
}

/// The largest mixed config `ProducerConfig` accepts: 64 sizes summing to
/// `MAX_MIXED_TOTAL`, from 8 bytes to `MAX_RECORD`, many not multiples of 8.
fn largest_mixed_sizes() -> Vec<usize> {
    let mut sizes = vec![ProducerConfig::MAX_RECORD, 8, 9, 13, 4095, 12345, 1001];
    let fixed: usize = sizes.iter().sum();
    let rest = 64 - sizes.len();
    let left = ProducerConfig::MAX_MIXED_TOTAL - fixed;
    // Pairs around the mean, one above and one below, so the sum stays exact.
    let mean = left / rest;
    for i in 0..rest {
        let d = (i / 2) % 7 + 1;
        sizes.push(if i % 2 == 0 { mean + d } else { mean - d });
    }
    let short = ProducerConfig::MAX_MIXED_TOTAL - sizes.iter().sum::<usize>();
    *sizes.last_mut().unwrap() += short;
    sizes
}

/// Produces `rounds` cycles of `sizes` on a fresh 1 MiB ring and reads them
/// all back: every length, sequence number and byte as the config says.
fn mixed_sizes_round_trip(sizes: Vec<usize>, discard_every: Option<u32>, rounds: u64) {
    let ring = RingBuf::create(1 << 20).unwrap();
    let cfg = ProducerConfig {
        size: RecordSize::Mixed(sizes.clone()),
        discard_every,
        ..ProducerConfig::default()
    };
    let producer = KernelProducer::new(&ring, cfg.clone())
        .unwrap_or_else(|e| panic!("{} sizes: {e}", sizes.len()));
    assert!(producer.instructions() <= 1_000_000);
    let n = rounds * sizes.len() as u64;
    let rep = producer.produce(n).unwrap();
    assert_eq!(rep.dropped, 0, "the ring holds {rounds} rounds");
    assert_eq!(rep.submitted + rep.discarded, n);
    let mut reader = Reader::new(&ring).unwrap();
    let mut next = 0u64;
    let stats = reader
        .consume(|r| {
            expect_seq(r, &mut next, &cfg);
            let seq = next - 1;
            assert_eq!(
                r.len(),
                sizes[(seq % sizes.len() as u64) as usize],
                "seq {seq}"
            );
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(stats.stop, StopReason::Empty);
    assert_eq!(stats.records as u64, rep.submitted);
    assert_eq!(next, producer.next_seq().unwrap(), "every record was read");
    assert_eq!(reader.available_bytes(), 0);
}

#[test]
fn largest_mixed_configs_load_and_produce_correct_records() {
    privileged!();
    // Each block alone is 16 KiB of unrolled stores: jumps across all four
    // did not fit the 16-bit offset ("jump out of range" panic).
    mixed_sizes_round_trip(vec![16384; 4], None, 10);
    let sizes = largest_mixed_sizes();
    assert_eq!(sizes.len(), 64);
    assert_eq!(sizes.iter().sum::<usize>(), ProducerConfig::MAX_MIXED_TOTAL);
    assert!(sizes
        .iter()
        .all(|s| (8..=ProducerConfig::MAX_RECORD).contains(s)));
    assert!(sizes.iter().filter(|s| *s % 8 != 0).count() > 32);
    mixed_sizes_round_trip(sizes.clone(), None, 3);
    mixed_sizes_round_trip(sizes, Some(7), 3);
    // A ring that holds three: the fourth reservation and later ones fail,
    // and each block's own drop path counts them and returns.
    let ring = RingBuf::create(64 << 10).unwrap();
    let cfg = ProducerConfig {
        size: RecordSize::Mixed(vec![16384; 4]),
        ..ProducerConfig::default()
    };
    let producer = KernelProducer::new(&ring, cfg.clone()).unwrap();
    let rep = producer.produce(8).unwrap();
    assert_eq!((rep.submitted, rep.dropped), (3, 5));
    let mut reader = Reader::new(&ring).unwrap();
    let mut next = 0;
    reader
        .consume(|r| {
            assert_eq!(r.len(), 16384);
            expect_seq(r, &mut next, &cfg);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(next, 3);
}

/// Issue 7 §1.2 on a kernel map: open, read zero-copy, a second reader (or
/// consumer) is refused; drop the first, the second continues after the last
/// commit.
#[test]
fn second_consumer_of_a_map_is_refused_until_the_first_is_dropped() {
    privileged!();
    let ring = RingBuf::create(16 * page()).unwrap();
    let producer = KernelProducer::new(&ring, ProducerConfig::fixed(32)).unwrap();
    producer.produce(10).unwrap();
    let mut first = Reader::new(&ring).unwrap();
    first.set_deadline(now());
    for seq in 0..3 {
        assert_eq!(check_payload(first.read_zero_copy().unwrap()), Ok(seq));
    }
    first.commit();
    let lent = first.read_zero_copy().unwrap();
    let id = ring.id();
    assert!(matches!(
        Reader::new(&ring),
        Err(Error::ConsumerExists { map_id: Some(m) }) if m == id
    ));
    // Another descriptor of the same map is the same map.
    let by_id = RingBuf::from_id(id).unwrap();
    assert!(matches!(
        bpf_ringbuf::Consumer::new(&by_id),
        Err(Error::ConsumerExists { .. })
    ));
    assert_eq!(check_payload(lent), Ok(3));
    drop(first);
    let second = bpf_ringbuf::Consumer::new(&by_id).unwrap();
    let mut seqs = Vec::new();
    while let Some(rec) = second.try_read_zero_copy().unwrap() {
        seqs.push(check_payload(rec).unwrap());
    }
    assert_eq!(seqs, (3..10).collect::<Vec<_>>());
    // Another map is another claim.
    let other = RingBuf::create(page()).unwrap();
    Reader::new(&other).unwrap();
}

/// Issue 7 §1.6: a read-only descriptor cannot map the consumer page
/// writable; the error names that cause, not a missing capability.
#[test]
fn read_only_descriptor_is_a_read_only_map_error() {
    privileged!();
    let ring = RingBuf::create(page()).unwrap();
    let ro = bpf_ringbuf::testing::open_map_read_only(ring.id()).unwrap();
    let e = Reader::new(&ro).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::ReadOnlyMap {
                call: "mmap(consumer page)",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("read-only"), "{e}");
    // The refusal released the claim: a read-write reader opens.
    Reader::new(&ring).unwrap();
}

/// An edge-triggered epoll on a ring buffer's descriptor: each kernel wakeup
/// of the ring (`wake_up_all(&rb->waitq)` from the commit's irq_work) is
/// reported once, and nothing else is, so it counts wakeups, not data.
struct EdgeWatch(OwnedFd);

impl EdgeWatch {
    fn new(ring: BorrowedFd<'_>) -> EdgeWatch {
        use std::os::fd::{AsRawFd, FromRawFd};
        // SAFETY: epoll_create1 has no memory preconditions.
        let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(ep >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: `ep` is a new descriptor that nothing else owns.
        let ep = unsafe { OwnedFd::from_raw_fd(ep) };
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: 0,
        };
        // SAFETY: both descriptors are open; `ev` is a valid epoll_event.
        let r = unsafe {
            libc::epoll_ctl(
                ep.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                ring.as_raw_fd(),
                &mut ev,
            )
        };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        EdgeWatch(ep)
    }

    /// Whether a wakeup arrives within `timeout` (the kernel sends it from
    /// an irq_work, on this CPU, right after the commit: far sooner).
    fn woken(&self, timeout: Duration) -> bool {
        use std::os::fd::AsRawFd;
        let mut ev = [libc::epoll_event { events: 0, u64: 0 }];
        loop {
            // SAFETY: `ev` is a writable array of one epoll_event.
            let n = unsafe {
                libc::epoll_wait(
                    self.0.as_raw_fd(),
                    ev.as_mut_ptr(),
                    1,
                    timeout.as_millis() as i32,
                )
            };
            match n {
                0 => return false,
                1 => return true,
                _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
                _ => panic!("epoll_wait: {}", std::io::Error::last_os_error()),
            }
        }
    }
}

/// Issue 8: a producer that samples its wakeups (`Wakeup::Sampled`, as the
/// kernel's ringbuf_bench.c) commits with NO_WAKEUP while the unconsumed
/// data (`bpf_ringbuf_query(BPF_RB_AVAIL_DATA)`, this record included) is
/// below the threshold, so a consumer that has caught up and sleeps is not
/// woken; at the threshold and above, every commit forces a wakeup.
#[test]
fn sampled_wakeups_start_at_the_threshold_of_unconsumed_bytes() {
    privileged!();
    const QUIET: Duration = Duration::from_millis(100);
    let stride = bpf_ringbuf::abi::record_stride(8);

    // The control: with default wakeups, the first record committed at the
    // (caught-up) consumer position wakes the watcher.
    let ring = RingBuf::create(page()).unwrap();
    let watch = EdgeWatch::new(ring.as_fd());
    let loud = KernelProducer::new(&ring, ProducerConfig::fixed(8)).unwrap();
    assert_eq!(loud.produce(1).unwrap().submitted, 1);
    assert!(
        watch.woken(QUIET),
        "a default commit wakes a caught-up consumer"
    );

    let ring = RingBuf::create(page()).unwrap();
    let watch = EdgeWatch::new(ring.as_fd());
    let sampled = KernelProducer::new(
        &ring,
        ProducerConfig {
            wakeup: Wakeup::Sampled {
                threshold: 4 * stride as u64,
            },
            ..ProducerConfig::fixed(8)
        },
    )
    .unwrap();
    let mut consumer = bpf_ringbuf::Consumer::new(&ring).unwrap();
    let mut woke = Vec::new();
    for _ in 0..6 {
        assert_eq!(sampled.produce(1).unwrap().submitted, 1);
        woke.push(watch.woken(QUIET));
    }
    // 16, 32, 48 bytes unconsumed: quiet; 64 (the threshold) and more: each
    // commit wakes.
    assert_eq!(woke, [false, false, false, true, true, true]);
    assert_eq!(consumer.available_bytes(), 6 * stride);

    // The consumer catches up and publishes: the count starts from 0 again.
    let stats = consumer.consume(|_| ControlFlow::Continue(())).unwrap();
    assert_eq!(stats.records, 6);
    assert_eq!(consumer.available_bytes(), 0);
    let mut woke = Vec::new();
    for _ in 0..4 {
        assert_eq!(sampled.produce(1).unwrap().submitted, 1);
        woke.push(watch.woken(QUIET));
    }
    assert_eq!(woke, [false, false, false, true]);

    // Several records in one call: still below the threshold, no wakeup;
    // the next record reaches it.
    consumer.consume(|_| ControlFlow::Continue(())).unwrap();
    assert_eq!(sampled.produce(3).unwrap().submitted, 3);
    assert!(!watch.woken(QUIET));
    assert_eq!(sampled.produce(1).unwrap().submitted, 1);
    assert!(watch.woken(QUIET));
}

/// Issue 8 §4: the lost-event convention. A producer into a one-page ring
/// that nobody reads fails its reservations once the ring is full; each
/// failure is counted in the per-CPU counter map, with the times of the
/// first and the latest one.
#[test]
fn lost_counter_counts_every_failed_reservation() {
    use bpf_ringbuf::{LostCounter, LostEvents};
    privileged!();
    let ring = RingBuf::create(page()).unwrap();
    let lost = LostCounter::create(&LostCounter::name_for("rb_test")).unwrap();
    let empty = lost.read().unwrap();
    assert_eq!(
        empty,
        LostEvents {
            per_cpu: empty.per_cpu.clone(),
            ..LostEvents::default()
        }
    );
    assert!(empty.per_cpu.len() >= bpf_ringbuf::testing::available_cpus());
    assert!(empty.per_cpu.iter().all(|&n| n == 0));

    let producer =
        KernelProducer::with_lost_counter(&ring, ProducerConfig::fixed(64), &lost).unwrap();
    // At most size - 8 bytes are outstanding: whole 72-byte records.
    let fit = ((page() - 8) / bpf_ringbuf::abi::record_stride(64)) as u64;
    let first = producer.produce(fit + 100).unwrap();
    assert_eq!((first.submitted, first.dropped), (fit, 100));
    let after = lost.read().unwrap();
    assert_eq!(after.total, first.dropped);
    assert_eq!(after.per_cpu.iter().sum::<u64>(), after.total);
    let (since, latest) = (after.first_ns.unwrap(), after.last_ns.unwrap());
    assert!(0 < since && since < latest, "{after:?}");

    // More losses later: the count adds up, the first time stays, the
    // latest moves on.
    thread::sleep(Duration::from_millis(2));
    let second = producer.produce(10).unwrap();
    assert_eq!(second.dropped, 10);
    let later = lost.read().unwrap();
    assert_eq!(later.total, first.dropped + second.dropped);
    assert_eq!(later.first_ns, Some(since));
    assert!(later.last_ns.unwrap() >= latest + 2_000_000, "{later:?}");

    // The same map, opened by id and by its conventional pin path.
    assert_eq!(
        LostCounter::from_id(lost.id()).unwrap().read().unwrap(),
        later
    );
    let ring_pin = temp_pin_path("lost").unwrap();
    let pin = LostCounter::pin_path_for(&ring_pin);
    lost.pin(&pin).unwrap();
    let reopened = LostCounter::open_pinned(&pin);
    std::fs::remove_file(&pin).unwrap();
    assert_eq!(reopened.unwrap().read().unwrap(), later);
}

/// The counter's map is checked: its type, key and value sizes; the
/// count-only layout (a bare `u64`) works too, without times.
#[test]
fn lost_counter_layout_is_checked() {
    use bpf_ringbuf::LostCounter;
    privileged!();
    const PERCPU_ARRAY: u32 = 6;
    let count_only = LostCounter::from_fd(create_map(PERCPU_ARRAY, 4, 8, 1).unwrap()).unwrap();
    assert_eq!(count_only.value_size(), LostCounter::COUNT_ONLY_VALUE_SIZE);
    let ring = RingBuf::create(page()).unwrap();
    let producer =
        KernelProducer::with_lost_counter(&ring, ProducerConfig::fixed(page() / 2), &count_only)
            .unwrap();
    let report = producer.produce(5).unwrap();
    assert_eq!((report.submitted, report.dropped), (1, 4));
    let lost = count_only.read().unwrap();
    assert_eq!((lost.total, lost.first_ns, lost.last_ns), (4, None, None));

    // An ARRAY (2) of the same layout, and a RINGBUF (27).
    let array = create_map(2, 4, 24, 1).unwrap();
    let ringbuf = OwnedFd::from(RingBuf::create(page()).unwrap());
    for (fd, found) in [(array, 2), (ringbuf, 27)] {
        assert!(matches!(
            LostCounter::from_fd(fd),
            Err(Error::WrongMapType { found: f, expected: 6, .. }) if f == found
        ));
    }
    // (The kernel refuses an array key other than 4 bytes at creation.)
    let e = LostCounter::from_fd(create_map(PERCPU_ARRAY, 4, 16, 1).unwrap()).unwrap_err();
    assert!(
        matches!(&e, Error::WrongMapLayout { layout: "a lost-event counter", reason, .. }
            if reason.starts_with("value size 16")),
        "{e:?}"
    );
    assert!(e.to_string().contains("is not a lost-event counter"), "{e}");
    assert!(matches!(
        LostCounter::open_pinned("/sys/fs/bpf/bpf_ringbuf_no_such_lost"),
        Err(Error::PinNotFound { .. })
    ));
}
