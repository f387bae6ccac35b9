//! Wake policies and telemetry (issue 8): every record exactly once under
//! each policy on the real kernel; forced wakeups, flush and close answered
//! while napping; the counters against known workloads; the publish cadence
//! of a long drain.
#![cfg(feature = "testing")]

#[macro_use]
mod common;

use std::ops::ControlFlow;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use bpf_ringbuf::testing::{check_payload, FakeRing, KernelProducer, ProducerConfig, Wakeup};
use bpf_ringbuf::{page_size, Consumer, Error, Reader, RingBuf, WakePolicy};

/// The two napping policies, with 5 ms naps.
const NAPPING: [WakePolicy; 2] = [
    WakePolicy::Interval(Duration::from_millis(5)),
    WakePolicy::Adaptive {
        max_latency: Duration::from_millis(5),
    },
];

const POLICIES: [WakePolicy; 3] = [
    WakePolicy::Kernel,
    WakePolicy::Interval(Duration::from_millis(1)),
    WakePolicy::Adaptive {
        max_latency: Duration::from_millis(2),
    },
];

/// A producer thread writes in bursts with pauses (so the reader catches up,
/// naps and sleeps); a blocking reader under each policy reads every record
/// once, in order, and its telemetry agrees.
#[test]
fn every_policy_reads_every_record_once() {
    privileged!();
    for policy in POLICIES {
        let ring = RingBuf::create(16 * page_size()).unwrap();
        let cfg = ProducerConfig {
            discard_every: Some(9),
            ..ProducerConfig::fixed(40)
        };
        let producer = KernelProducer::new(&ring, cfg.clone()).unwrap();
        let mut reader = Reader::new(&ring).unwrap();
        reader.set_wake_policy(policy);
        assert_eq!(reader.wake_policy(), policy);
        let handle = reader.handle();
        let t = thread::spawn(move || {
            let mut report = (0, 0, 0);
            for i in 0..200 {
                let r = producer.produce(20).unwrap();
                report.0 += r.submitted;
                report.1 += r.discarded;
                report.2 += r.dropped;
                if i % 20 == 0 {
                    thread::sleep(Duration::from_millis(3));
                }
            }
            handle.flush(); // the reader stops once everything is read
            report
        });
        let mut next = 0u64;
        let mut records = 0u64;
        reader.set_deadline(Some(Instant::now() + Duration::from_secs(60)));
        loop {
            match reader.read_zero_copy() {
                Ok(rec) => {
                    let seq = check_payload(rec).unwrap();
                    assert!(seq >= next, "{policy:?}: order: {seq} after {next}");
                    // Only discards (and drops, which use no number) are skipped.
                    for skipped in next..seq {
                        assert!(cfg.is_discarded(skipped), "{policy:?}: lost {skipped}");
                    }
                    next = seq + 1;
                    records += 1;
                }
                Err(Error::CommitRequired) => reader.commit(),
                Err(Error::Flushed) => break,
                Err(e) => panic!("{policy:?} after {records} records: {e}"),
            }
        }
        let (submitted, discarded, _dropped) = t.join().unwrap();
        // The flush may land before the last records: read what is left.
        reader.set_deadline(Some(Instant::now()));
        while let Ok(rec) = reader.read() {
            assert_eq!(check_payload(&rec.data).unwrap(), next);
            next += 1;
            records += 1;
            while cfg.is_discarded(next) {
                next += 1;
            }
        }
        assert_eq!(records, submitted, "{policy:?}");
        let stats = reader.stats();
        assert_eq!(stats.records, submitted, "{policy:?}: {stats:?}");
        assert_eq!(stats.discarded, discarded, "{policy:?}: {stats:?}");
        assert!(
            stats.sleeps > 0,
            "{policy:?}: the reader never waited: {stats:?}"
        );
        assert!(stats.max_fill <= ring.size(), "{policy:?}: {stats:?}");
    }
}

/// A reader napping for a long interval answers a wakeup the producer forces
/// at once; a default wakeup for the first record after it caught up is
/// slept through (it is not a request).
#[test]
fn forced_wakeup_ends_a_nap() {
    for policy in [
        WakePolicy::Interval(Duration::from_secs(3600)),
        WakePolicy::Adaptive {
            max_latency: Duration::from_secs(3600),
        },
    ] {
        let ring = std::sync::Arc::new(FakeRing::new(page_size()).unwrap());
        let mut reader = ring.reader().unwrap();
        reader.set_wake_policy(policy);
        let (tx, rx) = mpsc::channel();
        let t = thread::spawn(move || {
            let rec = reader.read().map(|r| r.data);
            let _ = tx.send(());
            (rec, reader)
        });
        thread::sleep(Duration::from_millis(50));
        // The reader had caught up: the kernel's rule wakes it for this one.
        assert!(ring.output(b"first", Wakeup::Default).is_some());
        assert!(
            rx.recv_timeout(Duration::from_millis(300)).is_err(),
            "{policy:?}: a default wakeup ended the nap"
        );
        // Forced: answered at once (the nap is an hour long).
        assert!(ring.output(b"second", Wakeup::ForceWakeup).is_some());
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{policy:?}: a forced wakeup did not end the nap"));
        let (rec, mut reader) = t.join().unwrap();
        assert_eq!(rec.unwrap(), b"first");
        reader.set_deadline(Some(Instant::now()));
        assert_eq!(reader.read().unwrap().data, b"second");
        let stats = reader.stats();
        assert_eq!(stats.wakeups, 2, "{policy:?}: {stats:?}");
        assert_eq!(stats.records, 2);
    }
}

/// Flush and close end a nap (or a sleep) at once, under every policy.
#[test]
fn flush_and_close_end_a_nap() {
    for policy in [
        WakePolicy::Kernel,
        WakePolicy::Interval(Duration::from_secs(3600)),
        WakePolicy::Adaptive {
            max_latency: Duration::from_secs(3600),
        },
    ] {
        let ring = FakeRing::new(page_size()).unwrap();
        let mut reader = ring.reader().unwrap();
        reader.set_wake_policy(policy);
        let handle = reader.handle();
        let (tx, rx) = mpsc::channel();
        let t = thread::spawn(move || {
            let first = reader.read().map(drop);
            let _ = tx.send(());
            let second = reader.read().map(drop);
            let _ = tx.send(());
            (first, second)
        });
        thread::sleep(Duration::from_millis(30));
        handle.flush();
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{policy:?}: flush did not end the nap"));
        thread::sleep(Duration::from_millis(30));
        handle.close();
        rx.recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("{policy:?}: close did not end the nap"));
        let (first, second) = t.join().unwrap();
        assert!(matches!(first, Err(Error::Flushed)), "{policy:?}");
        assert!(matches!(second, Err(Error::Closed)), "{policy:?}");
    }
}

/// The counters against a known workload: records, discards, bytes handed
/// back, commits, and the fill high-water mark.
#[test]
fn telemetry_counts_a_known_workload() {
    let ring = FakeRing::new(4 * page_size()).unwrap();
    // 30 records of 24 bytes (stride 32), every third one discarded.
    for i in 0..30u8 {
        let mut r = ring.reserve(24).unwrap();
        r.write(0, &[i; 24]);
        if i % 3 == 2 {
            r.discard(Wakeup::Default);
        } else {
            r.submit(Wakeup::Default);
        }
    }
    let mut reader = ring.reader().unwrap();
    reader.set_deadline(Some(Instant::now()));
    assert_eq!(reader.stats(), bpf_ringbuf::Stats::default());
    for _ in 0..5 {
        reader.read_zero_copy().unwrap();
    }
    reader.commit();
    let s = reader.stats();
    assert_eq!((s.records, s.commits), (5, 1), "{s:?}");
    // The fill seen at the first load: everything produced.
    assert_eq!(s.max_fill, 30 * 32);
    let mut n = 0;
    reader
        .consume(|_| {
            n += 1;
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(n, 15);
    let s = reader.stats();
    assert_eq!(s.records, 20, "{s:?}");
    assert_eq!(s.discarded, 10, "{s:?}");
    assert_eq!(s.bytes, 30 * 32, "{s:?}");
    assert_eq!(s.commits, 2, "{s:?}");
    assert!(matches!(reader.read(), Err(Error::DeadlineExceeded)));
    assert_eq!(reader.stats().busy_stalls, 0);
    // A record reserved and never committed makes a read stall on it.
    let stuck = ring.reserve(8).unwrap().leak();
    assert!(stuck > 0);
    reader.set_deadline(Some(Instant::now() + Duration::from_millis(20)));
    assert!(matches!(reader.read(), Err(Error::DeadlineExceeded)));
    assert_eq!(reader.stats().busy_stalls, 1);
}

/// A long drain publishes at the cadence set, so a producer that samples the
/// unconsumed data sees the reader's progress while it drains.
#[test]
fn a_long_consume_publishes_every_n_bytes() {
    let ring = FakeRing::new(16 * page_size()).unwrap();
    for i in 0..1000u32 {
        ring.output(&i.to_le_bytes(), Wakeup::NoWakeup).unwrap(); // stride 16
    }
    let mut c = ring.consumer().unwrap();
    // The default: a page of ring bytes, or a quarter of a smaller ring.
    assert_eq!(c.publish_every(), Consumer::PUBLISH_EVERY);
    let small = FakeRing::new(page_size()).unwrap();
    assert_eq!(small.consumer().unwrap().publish_every(), page_size() / 4);
    c.set_publish_every(1600); // every 100 records
    let mut seen = Vec::new();
    c.consume(|rec| {
        let i = u32::from_le_bytes(rec.try_into().unwrap());
        if i % 100 == 50 {
            seen.push((i, ring.consumer_position()));
        }
        ControlFlow::Continue(())
    })
    .unwrap();
    // At record 50 + 100k the position published is 1600 * k: the chunks
    // before it were handed back while the drain went on.
    for (i, published) in seen {
        assert_eq!(published, 1600 * (i as usize / 100), "at record {i}");
    }
    assert_eq!(ring.consumer_position(), 16_000);
    assert_eq!(c.stats().commits, 10);
}

/// A record that wakes nobody (`BPF_RB_NO_WAKEUP`) is seen by the next look
/// of a napping reader: its latency is bounded by the nap (here only "it is
/// seen"; the benchmark measures how soon).
#[test]
fn a_nap_bounds_the_latency_of_records_that_wake_nobody() {
    for policy in [
        WakePolicy::Interval(Duration::from_millis(20)),
        WakePolicy::Adaptive {
            max_latency: Duration::from_millis(20),
        },
    ] {
        let ring = std::sync::Arc::new(FakeRing::new(page_size()).unwrap());
        let mut reader = ring.reader().unwrap();
        reader.set_wake_policy(policy);
        let (tx, rx) = mpsc::channel();
        let t = thread::spawn(move || {
            for _ in 0..3 {
                let rec = reader.read().unwrap();
                tx.send(rec.data).unwrap();
            }
            reader.stats()
        });
        for i in 0..3u8 {
            thread::sleep(Duration::from_millis(30));
            ring.output(&[i; 8], Wakeup::NoWakeup).unwrap();
            // Without the nap's bound it would wait forever: nothing wakes
            // the reader. (How soon is the benchmark's to measure.)
            let data = rx
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("{policy:?}: a NO_WAKEUP record was never seen"));
            assert_eq!(data, [i; 8]);
        }
        let stats = t.join().unwrap();
        assert_eq!(
            stats.wakeups, 0,
            "{policy:?}: NO_WAKEUP woke the reader: {stats:?}"
        );
        assert!(stats.sleeps >= 3, "{policy:?}: {stats:?}");
    }
}

/// Under a napping policy a `consume` that empties the ring hands back all
/// but its last record, so the kernel sees the reader behind and sends no
/// default wakeups for a trickle of records (the producer pays none); the
/// record is handed back when the reader drops, and never delivered twice.
/// Also with a deadline set before every wait, as loops with a timeout per
/// wait do: `set_deadline` keeps the record held.
#[test]
fn a_napping_reader_stays_behind_and_the_producer_pays_no_wakeups() {
    for (policy, deadline_per_wait) in NAPPING.into_iter().flat_map(|p| [(p, false), (p, true)]) {
        let ring = std::sync::Arc::new(FakeRing::new(page_size()).unwrap());
        let mut reader = ring.reader().unwrap();
        reader.set_wake_policy(policy);
        let producer = {
            let ring = std::sync::Arc::clone(&ring);
            thread::spawn(move || {
                for i in 0..40u64 {
                    ring.output(&i.to_le_bytes(), Wakeup::Default).unwrap();
                    thread::sleep(Duration::from_millis(2));
                }
            })
        };
        let mut next = 0u64;
        reader.set_deadline(Some(Instant::now() + Duration::from_secs(30)));
        while next < 40 {
            if deadline_per_wait {
                reader.set_deadline(Some(Instant::now() + Duration::from_secs(30)));
            }
            reader.wait().unwrap();
            reader
                .consume(|rec| {
                    assert_eq!(u64::from_le_bytes(rec.try_into().unwrap()), next);
                    next += 1;
                    ControlFlow::Continue(())
                })
                .unwrap();
        }
        producer.join().unwrap();
        // Only the first record, committed while the reader had caught up
        // (nothing to hold back yet), may have woken it.
        assert!(
            ring.wakeups() <= 1,
            "{policy:?} (a deadline per wait: {deadline_per_wait}): the producer paid {} wakeups for 40 records",
            ring.wakeups()
        );
        // The last record is held back: the kernel sees one record unconsumed.
        assert_eq!(ring.producer_position() - ring.consumer_position(), 16);
        // A consume that finds nothing new keeps it held (else the next
        // record would wake the reader).
        let st = reader.consume(|_| panic!("nothing new")).unwrap();
        assert_eq!(st.records, 0);
        assert_eq!(ring.producer_position() - ring.consumer_position(), 16);
        drop(reader);
        assert_eq!(ring.consumer_position(), ring.producer_position());
        let mut again = ring.reader().unwrap();
        again.set_deadline(Some(Instant::now()));
        assert!(matches!(again.read(), Err(Error::DeadlineExceeded)));
    }
}

/// A napping reader holds back only what takes at most 1/32 of the ring:
/// the kernel counts held bytes as unconsumed, so a held record of half
/// the ring would make every later one of that size fail to reserve, and
/// discards piling up behind a held record would fill the ring. Records of
/// half the ring all come and are handed back at once; discards behind a
/// held record are handed back before they pass 1/32 of the ring.
#[test]
fn a_napping_reader_holds_back_only_small_records_and_loses_none() {
    for policy in NAPPING {
        let ring = FakeRing::new(page_size()).unwrap();
        let mut reader = ring.reader().unwrap();
        reader.set_wake_policy(policy);
        let big = page_size() / 2 - 8;
        for i in 0..10u8 {
            ring.output(&vec![i; big], Wakeup::Default)
                .expect("room in the ring: nothing big is held back");
            reader.set_deadline(Some(Instant::now() + Duration::from_secs(30)));
            reader.wait().unwrap();
            let mut got = Vec::new();
            reader
                .consume(|rec| {
                    got.push(rec.to_vec());
                    ControlFlow::Continue(())
                })
                .unwrap();
            assert_eq!(got, vec![vec![i; big]], "{policy:?}: record {i}");
            assert_eq!(ring.consumer_position(), ring.producer_position());
        }
        // A small record is held back...
        ring.output(&[1u8; 8], Wakeup::Default).unwrap();
        assert_eq!(
            reader
                .consume(|_| ControlFlow::Continue(()))
                .unwrap()
                .records,
            1
        );
        assert_eq!(ring.producer_position() - ring.consumer_position(), 16);
        // ... and the discards after it only while they stay small.
        let limit = page_size() / 32;
        let mut handed_back = false;
        for _ in 0..20 {
            ring.reserve(8).unwrap().discard(Wakeup::NoWakeup);
            let st = reader.consume(|_| panic!("only discards")).unwrap();
            assert_eq!(st.records, 0);
            let held = ring.producer_position() - ring.consumer_position();
            assert!(held <= limit, "{policy:?}: {held} bytes held back");
            handed_back |= held == 0;
        }
        assert!(
            handed_back,
            "{policy:?}: the discards were never handed back"
        );
    }
}

/// Discards skipped after a hold by a read that does not drain
/// (`read_zero_copy`) are handed back before they pass 1/32 of the ring,
/// as a drain's are. Before, they piled up behind the held record until
/// the producer could not reserve, and the reader waited for a record
/// that could never be written.
#[test]
fn discards_skipped_by_read_zero_copy_after_a_hold_are_handed_back() {
    let ring = FakeRing::new(page_size()).unwrap();
    let mut reader = ring.reader().unwrap();
    reader.set_wake_policy(WakePolicy::Interval(Duration::from_millis(1)));
    ring.output(&1u64.to_le_bytes(), Wakeup::Default).unwrap();
    assert_eq!(
        reader
            .consume(|_| ControlFlow::Continue(()))
            .unwrap()
            .records,
        1
    );
    assert_eq!(ring.consumer_position(), 0, "the record is held back");
    for _ in 0..5 {
        // Half a ring of discards each time: the reader skips them all.
        for _ in 0..page_size() / 2 / 16 {
            ring.reserve(8)
                .expect("room in the ring: the skipped discards were handed back")
                .discard(Wakeup::Default);
        }
        reader.set_deadline(Some(Instant::now() + Duration::from_millis(5)));
        assert!(matches!(
            reader.read_zero_copy(),
            Err(Error::DeadlineExceeded)
        ));
        assert!(ring.producer_position() - ring.consumer_position() <= page_size() / 32);
    }
    ring.output(&7u64.to_le_bytes(), Wakeup::Default).unwrap();
    reader.set_deadline(Some(Instant::now() + Duration::from_secs(30)));
    assert_eq!(reader.read_zero_copy().unwrap(), 7u64.to_le_bytes());
}

/// A napping reader that finds the head record reserved, not committed,
/// keeps the record it holds back while it waits for the commit, which
/// then finds it behind and wakes nobody. Before, its wait published
/// everything and the commit paid a wakeup.
#[test]
fn a_napping_reader_stays_behind_a_reserved_record() {
    for policy in NAPPING {
        let ring = FakeRing::new(page_size()).unwrap();
        let mut reader = ring.reader().unwrap();
        reader.set_wake_policy(policy);
        reader.set_deadline(Some(Instant::now() + Duration::from_secs(30)));
        ring.output(&0u64.to_le_bytes(), Wakeup::Default).unwrap();
        reader.wait().unwrap();
        assert_eq!(
            reader
                .consume(|_| ControlFlow::Continue(()))
                .unwrap()
                .records,
            1
        );
        let woken = ring.wakeups();
        let got = common::with_a_record_committed_later(&ring, 1, || {
            reader.wait().unwrap();
            let mut got = Vec::new();
            reader
                .consume(|rec| {
                    got.push(u64::from_le_bytes(rec.try_into().unwrap()));
                    ControlFlow::Continue(())
                })
                .unwrap();
            got
        });
        assert_eq!(got, vec![1], "{policy:?}");
        assert_eq!(
            ring.wakeups(),
            woken,
            "{policy:?}: the commit of the reserved record woke the reader"
        );
        assert_eq!(reader.stats().busy_stalls, 1, "{policy:?}");
    }
}
