//! `RingSet`: many rings on one epoll. Privileged tests on the real kernel
//! (each skips loudly without CAP_BPF, and fails instead under
//! BPF_RINGBUF_REQUIRE_PRIVILEGED=1), and fake-ring tests that need nothing.

#[macro_use]
mod common;

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bpf_ringbuf::testing::{
    check_payload, create_map_of_maps, set_inner_map, FakeRing, KernelProducer, ProducerConfig,
    RecordSize, Wakeup,
};
use bpf_ringbuf::{Budget, Consumer, Error, Readiness, RingBuf, RingSet, WakePolicy};

fn page() -> usize {
    bpf_ringbuf::page_size()
}

/// `n` kernel rings of `size` bytes, all in a new set under keys `0..n`.
fn kernel_set(n: usize, size: usize) -> (Vec<RingBuf>, RingSet<usize>) {
    let rings: Vec<RingBuf> = (0..n).map(|_| RingBuf::create(size).unwrap()).collect();
    let mut set = RingSet::new().unwrap();
    for (i, r) in rings.iter().enumerate() {
        set.insert(i, r).unwrap();
    }
    (rings, set)
}

/// `n` fake rings, all in a new set under keys `0..n`.
fn fake_set(n: usize) -> (Vec<FakeRing>, RingSet<usize>) {
    let rings: Vec<FakeRing> = (0..n).map(|_| FakeRing::new(4 * page()).unwrap()).collect();
    let mut set = RingSet::new().unwrap();
    for (i, r) in rings.iter().enumerate() {
        set.insert_consumer(i, r.consumer().unwrap()).unwrap();
    }
    (rings, set)
}

/// Polls until the deadline set is reported.
fn poll_to_deadline<K>(set: &mut RingSet<K>, mut f: impl FnMut(&K, &[u8]))
where
    K: Clone + Eq + std::hash::Hash,
{
    loop {
        match set.poll(|k, rec| {
            f(k, rec);
            ControlFlow::Continue(())
        }) {
            Ok(_) => {}
            Err(Error::DeadlineExceeded) => break,
            Err(e) => panic!("{e}"),
        }
    }
}

/// The next sequence number a ring's consumer expects, skipping discards.
#[derive(Debug, Clone)]
struct Expect {
    cfg: ProducerConfig,
    next: u64,
    records: u64,
}

impl Expect {
    fn new(cfg: ProducerConfig) -> Expect {
        Expect {
            cfg,
            next: 0,
            records: 0,
        }
    }

    /// Checks every byte of `rec` and that it is the next record of its ring.
    fn check(&mut self, rec: &[u8]) {
        while self.cfg.is_discarded(self.next) {
            self.next += 1;
        }
        let seq = check_payload(rec).unwrap_or_else(|e| panic!("bad record: {e}"));
        assert_eq!(seq, self.next, "records out of order, lost or repeated");
        self.next += 1;
        self.records += 1;
    }

    /// Records of `0..total` sequence numbers that are not discarded.
    fn wanted(&self, total: u64) -> u64 {
        (0..total).filter(|&s| !self.cfg.is_discarded(s)).count() as u64
    }
}

/// Produces sequence numbers `0..total` (records and discards), retrying
/// while the ring is full, in chunks of `chunk`.
fn produce_all(p: &KernelProducer, total: u64, chunk: u64) {
    let mut done = 0;
    while done < total {
        let r = p.produce(chunk.min(total - done)).unwrap();
        done += r.submitted + r.discarded;
        if r.dropped > 0 {
            thread::sleep(Duration::from_micros(200));
        }
    }
}

fn config(i: usize) -> ProducerConfig {
    ProducerConfig {
        size: match i % 3 {
            0 => RecordSize::Fixed(16),
            1 => RecordSize::Mixed(vec![8, 13, 64, 200, 1000]),
            _ => RecordSize::Fixed(256),
        },
        discard_every: (i % 2 == 1).then_some(5),
        // Some rings never wake the reader: the nap of the Interval policy
        // picks their records up.
        wakeup: if i % 4 == 3 {
            Wakeup::NoWakeup
        } else {
            Wakeup::Default
        },
    }
}

#[test]
fn eight_rings_eight_producers_every_record_once_in_order() {
    privileged!();
    const TOTAL: u64 = 20_000;
    let rings: Vec<Arc<RingBuf>> = (0..8)
        .map(|i| Arc::new(RingBuf::create((4 << (i % 4)) * page()).unwrap()))
        .collect();
    let mut set = RingSet::new().unwrap();
    let mut expect = HashMap::new();
    for (i, ring) in rings.iter().enumerate() {
        set.insert(i, ring.as_fd()).unwrap();
        expect.insert(i, Expect::new(config(i)));
    }
    set.set_wake_policy(WakePolicy::Interval(Duration::from_millis(1)));
    set.set_budget(Budget {
        max_records: 64,
        max_bytes: 16 << 10,
    });
    let producers: Vec<_> = rings
        .iter()
        .enumerate()
        .map(|(i, ring)| {
            let ring = Arc::clone(ring);
            thread::spawn(move || {
                let p = KernelProducer::new(ring.as_fd(), config(i)).unwrap();
                produce_all(&p, TOTAL, 37 + i as u64 * 11);
            })
        })
        .collect();
    let wanted: HashMap<usize, u64> = expect.iter().map(|(&k, e)| (k, e.wanted(TOTAL))).collect();
    let start = Instant::now();
    set.set_deadline(Some(start + Duration::from_secs(60)));
    while expect.iter().any(|(k, e)| e.records < wanted[k]) {
        set.poll(|ring, rec| {
            expect.get_mut(ring).unwrap().check(rec);
            ControlFlow::Continue(())
        })
        .unwrap_or_else(|e| panic!("poll: {e}; {expect:?}"));
    }
    for p in producers {
        p.join().unwrap();
    }
    // Nothing more, nothing twice.
    set.set_deadline(Some(Instant::now()));
    let extra = set.poll(|_, _| ControlFlow::Continue(()));
    assert!(matches!(extra, Err(Error::DeadlineExceeded)), "{extra:?}");
    // A napping set holds each ring's last record back; an external loop's
    // prepare_wait hands them all back.
    assert_eq!(set.prepare_wait().unwrap(), Readiness::Empty);
    for i in 0..8 {
        let s = set.stats(&i).unwrap();
        assert_eq!(s.records, wanted[&i], "ring {i}");
        let cons = set.consumer(&i).unwrap();
        assert_eq!(cons.available_bytes(), 0, "ring {i}: everything committed");
    }
    let t = set.totals();
    assert!(t.rounds > 0 && t.budget_exhausted > 0, "{t:?}");
}

#[test]
fn add_and_remove_rings_while_producers_run() {
    privileged!();
    const TOTAL: u64 = 30_000;
    let rings: Vec<Arc<RingBuf>> = (0..4)
        .map(|_| Arc::new(RingBuf::create(16 * page()).unwrap()))
        .collect();
    let cfg = ProducerConfig {
        discard_every: Some(7),
        ..ProducerConfig::fixed(40)
    };
    let mut set = RingSet::new().unwrap();
    let mut expect: Vec<Expect> = (0..4).map(|_| Expect::new(cfg.clone())).collect();
    // Rings 0 and 1 from the start; 2 and 3 join while their producers run.
    set.insert(0, rings[0].as_fd()).unwrap();
    set.insert(1, rings[1].as_fd()).unwrap();
    let producers: Vec<_> = rings
        .iter()
        .map(|ring| {
            let ring = Arc::clone(ring);
            let cfg = cfg.clone();
            thread::spawn(move || {
                let p = KernelProducer::new(ring.as_fd(), cfg).unwrap();
                produce_all(&p, TOTAL, 50);
            })
        })
        .collect();
    set.set_budget(Budget::records(32));
    let wanted = expect[0].wanted(TOTAL);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut polls = 0u64;
    let mut removed: Option<(usize, Consumer)> = None;
    while expect.iter().any(|e| e.records < wanted) {
        assert!(Instant::now() < deadline, "stuck: {expect:?}");
        // Short deadlines: a removed ring's records must wait without
        // stalling the loop.
        set.set_deadline(Some(Instant::now() + Duration::from_millis(5)));
        match set.poll(|&k, rec| {
            expect[k].check(rec);
            ControlFlow::Continue(())
        }) {
            Ok(_) | Err(Error::DeadlineExceeded) => {}
            Err(e) => panic!("{e}"),
        }
        polls += 1;
        if polls == 20 {
            set.insert(2, rings[2].as_fd()).unwrap();
        }
        if polls == 40 {
            set.insert(3, rings[3].as_fd()).unwrap();
        }
        if polls > 40 && polls % 25 == 0 {
            if let Some((k, consumer)) = removed.take() {
                // Back, as the Consumer it was, or as a fresh one of the map
                // (which starts where the removal committed).
                if k % 2 == 0 {
                    set.insert_consumer(k, consumer).unwrap();
                } else {
                    drop(consumer);
                    set.insert(k, rings[k].as_fd()).unwrap();
                }
            } else {
                let k = (polls / 25 % 4) as usize;
                let consumer = set.remove(&k).expect("the ring is in the set");
                assert!(!set.contains_key(&k));
                // Everything delivered from it is committed.
                assert_eq!(consumer.read_position(), consumer.consumer_position());
                // One consumer per map: it cannot be added twice meanwhile.
                assert!(matches!(
                    RingSet::<usize>::new().unwrap().insert(9, rings[k].as_fd()),
                    Err(Error::ConsumerExists { .. })
                ));
                removed = Some((k, consumer));
            }
        }
        if removed.is_none() && polls > 40 {
            assert_eq!(set.len(), 4);
        }
    }
    for p in producers {
        p.join().unwrap();
    }
    assert!(expect.iter().all(|e| e.records == wanted));
}

#[test]
fn a_flooding_ring_delays_a_trickling_one_by_one_round_at_most() {
    privileged!();
    const BUDGET: usize = 50;
    let flood = RingBuf::create(1 << 22).unwrap();
    let trickle = RingBuf::create(4 * page()).unwrap();
    let fp = KernelProducer::new(&flood, ProducerConfig::fixed(32)).unwrap();
    let tp = KernelProducer::new(&trickle, ProducerConfig::fixed(32)).unwrap();
    assert_eq!(fp.produce(50_000).unwrap().dropped, 0);
    let mut set = RingSet::new().unwrap();
    set.insert("flood", &flood).unwrap();
    set.insert("trickle", &trickle).unwrap();
    set.set_budget(Budget::records(BUDGET));
    set.set_deadline(Some(Instant::now() + Duration::from_secs(30)));
    let (mut flood_seen, mut trickle_seen) = (0u64, 0u64);
    // Flood records delivered since the last trickle record was produced,
    // while it is not yet delivered.
    let mut since: Option<u64> = None;
    let mut worst = 0;
    let mut trickles = 0;
    while flood_seen < 50_000 {
        set.poll(|&k, rec| {
            let seq = check_payload(rec).unwrap();
            if k == "flood" {
                assert_eq!(seq, flood_seen);
                flood_seen += 1;
                if let Some(n) = since.as_mut() {
                    *n += 1;
                } else if flood_seen % 997 == 0 {
                    // A trickling record, committed by the kernel (its
                    // wakeup reaches the set's epoll) in the middle of the
                    // flooding ring's turn.
                    assert_eq!(tp.produce(1).unwrap().submitted, 1);
                    trickles += 1;
                    since = Some(0);
                }
            } else {
                assert_eq!(seq, trickle_seen);
                trickle_seen += 1;
                worst = worst.max(since.take().expect("a trickle record was produced"));
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    }
    assert!(trickles > 40, "{trickles}");
    assert_eq!(trickle_seen, trickles, "every trickle record delivered");
    // The rest of the flooding ring's turn, then at most its turn in the
    // next round.
    assert!(
        worst <= 2 * BUDGET as u64,
        "a trickle record waited behind {worst} flood records (budget {BUDGET})"
    );
    assert!(set.budget_exhausted(&"flood").unwrap() > 900);
    assert_eq!(set.budget_exhausted(&"trickle"), Some(0));
}

#[test]
fn flush_and_close_from_another_thread() {
    privileged!();
    let (rings, mut set) = kernel_set(3, 4 * page());
    // NO_WAKEUP records wake nobody: only the flush gets them read.
    let cfg = ProducerConfig {
        wakeup: Wakeup::NoWakeup,
        ..ProducerConfig::fixed(24)
    };
    let p = KernelProducer::new(&rings[1], cfg.clone()).unwrap();
    let handle = set.handle();
    let seen = Arc::new(AtomicBool::new(false));
    let reader = {
        let seen = Arc::clone(&seen);
        thread::spawn(move || {
            let mut got = Expect::new(cfg);
            let started = Instant::now();
            let res = loop {
                match set.poll(|&k, rec| {
                    assert_eq!(k, 1);
                    got.check(rec);
                    ControlFlow::Continue(())
                }) {
                    Ok(_) => continue,
                    Err(e) => break e,
                }
            };
            assert!(matches!(res, Error::Flushed), "{res}");
            assert_eq!(got.records, 10, "the records present, then Flushed");
            assert!(started.elapsed() >= Duration::from_millis(40));
            seen.store(true, Ordering::Release);
            // The next poll blocks until the close.
            let started = Instant::now();
            let res = set.poll(|_, _| ControlFlow::Continue(()));
            assert!(matches!(res, Err(Error::Closed)), "{res:?}");
            assert!(started.elapsed() >= Duration::from_millis(40));
            // Closed stays closed, at once, even with records.
            assert!(matches!(
                set.poll(|_, _| ControlFlow::Continue(())),
                Err(Error::Closed)
            ));
            assert!(matches!(
                set.try_consume(|_, _| ControlFlow::Continue(())),
                Err(Error::Closed)
            ));
        })
    };
    thread::sleep(Duration::from_millis(10));
    p.produce(10).unwrap();
    thread::sleep(Duration::from_millis(40));
    let flushed = Instant::now();
    handle.flush();
    while !seen.load(Ordering::Acquire) {
        assert!(
            flushed.elapsed() < Duration::from_secs(5),
            "flush not answered"
        );
        thread::sleep(Duration::from_millis(1));
    }
    thread::sleep(Duration::from_millis(50));
    p.produce(5).unwrap();
    handle.close();
    assert!(handle.is_closed());
    reader.join().unwrap();
}

#[test]
fn deadline_in_the_past_reads_what_every_ring_holds() {
    privileged!();
    let (rings, mut set) = kernel_set(4, 4 * page());
    // Let the set find every ring empty (they leave the round), then fill
    // two of them without wakeups.
    set.set_deadline(Some(Instant::now()));
    assert!(matches!(
        set.poll(|_, _| ControlFlow::Continue(())),
        Err(Error::DeadlineExceeded)
    ));
    let cfg = ProducerConfig {
        wakeup: Wakeup::NoWakeup,
        ..ProducerConfig::fixed(64)
    };
    for i in [0, 3] {
        KernelProducer::new(&rings[i], cfg.clone())
            .unwrap()
            .produce(100)
            .unwrap();
    }
    set.set_deadline(Some(Instant::now()));
    let mut got = [0u64; 4];
    poll_to_deadline(&mut set, |&k, _| {
        got[k] += 1;
    });
    assert_eq!(got, [100, 0, 0, 100]);
}

#[test]
fn inner_rings_of_array_and_hash_of_maps() {
    privileged!();
    let size = 4 * page();
    let template = RingBuf::create(size).unwrap();
    let inner: Vec<RingBuf> = (0..3).map(|_| RingBuf::create(size).unwrap()).collect();
    // BPF_MAP_TYPE_ARRAY_OF_MAPS (12), u32 keys; BPF_MAP_TYPE_HASH_OF_MAPS (13), u64 keys.
    let array = create_map_of_maps(12, 4, 4, &template).unwrap();
    let hash = create_map_of_maps(13, 8, 4, &template).unwrap();
    set_inner_map(&array, &0u32.to_ne_bytes(), &inner[0]).unwrap();
    set_inner_map(&array, &2u32.to_ne_bytes(), &inner[1]).unwrap();
    set_inner_map(&hash, &77u64.to_ne_bytes(), &inner[2]).unwrap();

    let mut set = RingSet::new().unwrap();
    set.insert_inner("a0", &array, &0u32.to_ne_bytes()).unwrap();
    set.insert_inner("a2", &array, &2u32.to_ne_bytes()).unwrap();
    set.insert_inner("h77", &hash, &77u64.to_ne_bytes())
        .unwrap();
    // The same ring twice: one consumer per map.
    assert!(matches!(
        set.insert_inner("again", &array, &0u32.to_ne_bytes()),
        Err(Error::ConsumerExists { .. })
    ));
    // An empty slot, a wrong key size, a map that is not a map of maps.
    assert!(set.insert_inner("a1", &array, &1u32.to_ne_bytes()).is_err());
    assert!(matches!(
        set.insert_inner("short", &array, &[0u8; 2]),
        Err(Error::WrongMapLayout { .. })
    ));
    assert!(matches!(
        set.insert_inner("ring", &template, &0u32.to_ne_bytes()),
        Err(Error::WrongMapType { found: 27, .. })
    ));
    assert_eq!(set.len(), 3);

    for (i, ring) in inner.iter().enumerate() {
        KernelProducer::new(ring, ProducerConfig::fixed(48))
            .unwrap()
            .produce(10 * (i as u64 + 1))
            .unwrap();
    }
    let mut next: HashMap<&str, u64> = HashMap::new();
    set.set_deadline(Some(Instant::now() + Duration::from_millis(50)));
    poll_to_deadline(&mut set, |&k, rec| {
        let n = next.entry(k).or_default();
        assert_eq!(check_payload(rec).unwrap(), *n);
        *n += 1;
    });
    assert_eq!(next["a0"], 10);
    assert_eq!(next["a2"], 20);
    assert_eq!(next["h77"], 30);
}

#[test]
fn driven_from_another_event_loop() {
    privileged!();
    let (rings, mut set) = kernel_set(3, 4 * page());
    let producer = KernelProducer::new(&rings[2], ProducerConfig::fixed(32)).unwrap();
    let mut got = 0u64;
    let mut sleeps = 0;
    for burst in 0..20u64 {
        // The loop: consume until nothing, prepare, sleep on the set's fd.
        loop {
            let r = set
                .try_consume(|&k, rec| {
                    assert_eq!(k, 2);
                    assert_eq!(check_payload(rec).unwrap(), got);
                    got += 1;
                    ControlFlow::Continue(())
                })
                .unwrap();
            if r.records > 0 {
                continue;
            }
            match set.prepare_wait().unwrap() {
                Readiness::Ready => continue,
                _ => break,
            }
        }
        assert_eq!(got, burst * 7);
        // The set's epoll descriptor is what the other loop sleeps on; the
        // ring's wakeup is queued in it edge-triggered, so the records are
        // found by the next try_consume even if they came before the sleep.
        let _fd = set.as_fd();
        producer.produce(7).unwrap();
        sleeps += 1;
    }
    set.try_consume(|_, _| {
        got += 1;
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(got, 20 * 7);
    assert_eq!(sleeps, 20);
}

// ---- fake rings: no privileges needed ----------------------------------------

fn keyed(ring: &FakeRing, key: u64, len: usize) {
    let mut buf = vec![0u8; len.max(8)];
    buf[..8].copy_from_slice(&key.to_le_bytes());
    ring.output(&buf, Wakeup::Default)
        .expect("room in the ring");
}

fn key_of(rec: &[u8]) -> u64 {
    u64::from_le_bytes(rec[..8].try_into().unwrap())
}

#[test]
fn ordered_merge_of_interleaved_rings() {
    let (rings, mut set) = fake_set(3);
    // Keys increasing within each ring, interleaved across rings unevenly.
    let mut k = 0u64;
    let mut owner = Vec::new();
    for step in 0..300u64 {
        let ring = ((step * 7 + step / 5) % 3) as usize;
        k += 1 + step % 4;
        keyed(&rings[ring], k, 8 + (step as usize % 5) * 8);
        owner.push((k, ring));
        if step % 2 == 0 {
            // A discard between records changes nothing.
            rings[ring].reserve(16).unwrap().discard(Wakeup::NoWakeup);
        }
    }
    set.set_budget(Budget::UNLIMITED);
    set.set_deadline(Some(Instant::now()));
    let mut got = Vec::new();
    let r = set
        .poll_ordered(key_of, |&ring, rec| {
            got.push((key_of(rec), ring));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(r.records, 300, "one round takes every record present");
    assert_eq!(got, owner, "merged in key order, each with its ring");
    for (i, r) in rings.iter().enumerate() {
        assert_eq!(
            r.consumer_position(),
            r.producer_position(),
            "ring {i} committed"
        );
    }
    assert!(matches!(
        set.poll_ordered(key_of, |_, _| ControlFlow::Continue(())),
        Err(Error::DeadlineExceeded)
    ));
}

#[test]
fn ordered_merge_stops_at_a_budget_and_a_busy_head() {
    let (rings, mut set) = fake_set(2);
    for k in 0..20u64 {
        keyed(&rings[(k % 2) as usize], k, 8);
    }
    // Ring 1's next record is reserved, not committed: records after it
    // wait for it.
    let busy = rings[1].reserve(8).unwrap();
    keyed(&rings[0], 100, 8);
    set.set_budget(Budget::records(4));
    set.set_deadline(Some(Instant::now()));
    let mut got = Vec::new();
    let r = set
        .poll_ordered(key_of, |_, rec| {
            got.push(key_of(rec));
            ControlFlow::Continue(())
        })
        .unwrap();
    // Ring 0 (keys 0, 2, 4, 6) uses up its budget first: the round ends
    // after its fourth record.
    assert_eq!(got, (0..7).collect::<Vec<_>>());
    assert_eq!(r.budget_exhausted, 1);
    set.set_budget(Budget::UNLIMITED);
    got.clear();
    set.poll_ordered(key_of, |_, rec| {
        got.push(key_of(rec));
        ControlFlow::Continue(())
    })
    .unwrap();
    // Ring 1 stops at its BUSY head; ring 0 goes on to its end.
    assert_eq!(got, (7..20).chain([100]).collect::<Vec<_>>());
    let mut busy = busy;
    busy.write(0, &50u64.to_le_bytes());
    busy.submit(Wakeup::Default);
    got.clear();
    set.poll_ordered(key_of, |_, rec| {
        got.push(key_of(rec));
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(got, vec![50]);
}

#[test]
fn fake_rings_round_robin_break_and_remove() {
    let rings: Vec<FakeRing> = (0..3).map(|_| FakeRing::new(4 * page()).unwrap()).collect();
    let mut set = RingSet::new().unwrap();
    for (i, r) in rings.iter().enumerate() {
        set.insert_consumer(i, r.consumer().unwrap()).unwrap();
        for k in 0..10u64 {
            keyed(r, k, 8);
        }
    }
    set.set_budget(Budget::records(3));
    set.set_deadline(Some(Instant::now()));
    let mut order = Vec::new();
    let r = set
        .poll(|&ring, rec| {
            order.push((ring, key_of(rec)));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!((r.records, r.rings, r.budget_exhausted), (9, 3, 3));
    // Round-robin: three from each ring in turn, in order within each.
    let rings_in_order: Vec<usize> = order.iter().map(|&(r, _)| r).collect();
    let mut sorted = rings_in_order.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), 3, "{order:?}");
    // A break stops after that record, which counts as consumed.
    let mut n = 0;
    let r = set
        .poll(|_, _| {
            n += 1;
            if n == 2 {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .unwrap();
    assert!(r.interrupted && r.records == 2);
    // Removing a ring commits what was delivered from it.
    let first = order[0].0;
    let c = set.remove(&first).unwrap();
    assert_eq!(c.consumer_position(), c.read_position());
    assert_eq!(rings[first].consumer_position(), c.consumer_position());
    assert!(set.remove(&first).is_none());
    assert_eq!(set.len(), 2);
    // Replacing a key returns the ring it held.
    let old = set.insert_consumer(first, c).unwrap();
    assert!(old.is_none());
    let mut total = 9 + 2;
    poll_to_deadline(&mut set, |_, _| {
        total += 1;
    });
    assert_eq!(total, 30);
    assert!(set.stats(&0).unwrap().records > 0);
    assert!(set.stats(&7).is_none());
}

#[test]
fn a_corrupt_ring_is_named_by_failed_key_and_removing_it_lets_the_others_go_on() {
    let mut rings: Vec<FakeRing> = (0..3).map(|_| FakeRing::new(page()).unwrap()).collect();
    for (i, r) in rings.iter().enumerate() {
        for k in 0..5u64 {
            keyed(r, 10 * i as u64 + k, 8);
        }
    }
    // Ring 1's third header claims more than the ring holds.
    let pos = 2 * 16;
    rings[1].set_header(pos, 1 << 20).unwrap();
    let mut set = RingSet::new().unwrap();
    for (i, r) in rings.iter().enumerate() {
        set.insert_consumer(i, r.consumer().unwrap()).unwrap();
    }
    set.set_deadline(Some(Instant::now()));
    assert_eq!(set.failed_key(), None);
    let mut got: Vec<(usize, u64)> = Vec::new();
    let e = loop {
        match set.poll(|&k, rec| {
            got.push((k, key_of(rec)));
            ControlFlow::Continue(())
        }) {
            Ok(_) => assert_eq!(set.failed_key(), None),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(e, Error::Corrupt { pos: p, available: 48, .. } if p == pos),
        "{e:?}"
    );
    assert_eq!(set.failed_key(), Some(&1));
    // The ring stays and reports it again, under the same key.
    let again = set
        .poll(|&k, rec| {
            got.push((k, key_of(rec)));
            ControlFlow::Continue(())
        })
        .unwrap_err();
    assert!(matches!(again, Error::Corrupt { .. }), "{again:?}");
    assert_eq!(set.failed_key(), Some(&1));
    // Removed, it is no longer named, and the other two deliver everything.
    let bad = set.remove(&1).unwrap();
    assert_eq!(set.failed_key(), None);
    drop(bad);
    poll_to_deadline(&mut set, |&k, rec| got.push((k, key_of(rec))));
    for ring in [0usize, 2] {
        let keys: Vec<u64> = got
            .iter()
            .filter(|&&(k, _)| k == ring)
            .map(|&(_, v)| v)
            .collect();
        assert_eq!(
            keys,
            (0..5).map(|k| 10 * ring as u64 + k).collect::<Vec<_>>()
        );
    }
    // Ring 1 delivered its two good records before the bad header, once.
    let ones: Vec<u64> = got
        .iter()
        .filter(|&&(k, _)| k == 1)
        .map(|&(_, v)| v)
        .collect();
    assert_eq!(ones, vec![10, 11]);
}

/// Under a napping policy a set holds each drained ring's last record back,
/// as a napping Reader does: a trickle of records on several rings makes
/// the producers pay no default wakeups (only each ring's first record,
/// committed while the set had caught up, may wake it). Every record comes
/// once and in order; `prepare_wait` (an external loop's sleep) hands the
/// held records back, and so does dropping the set.
#[test]
fn a_napping_set_holds_records_back_and_the_producers_pay_no_wakeups() {
    for policy in [
        WakePolicy::Interval(Duration::from_millis(5)),
        WakePolicy::Adaptive {
            max_latency: Duration::from_millis(5),
        },
    ] {
        let rings: Vec<Arc<FakeRing>> = (0..3)
            .map(|_| Arc::new(FakeRing::new(page()).unwrap()))
            .collect();
        let mut set = RingSet::new().unwrap();
        for (i, r) in rings.iter().enumerate() {
            set.insert_consumer(i, r.consumer().unwrap()).unwrap();
        }
        set.set_wake_policy(policy);
        let producers: Vec<_> = rings
            .iter()
            .map(|r| {
                let r = Arc::clone(r);
                thread::spawn(move || {
                    for k in 0..30u64 {
                        keyed(&r, k, 8);
                        thread::sleep(Duration::from_millis(2));
                    }
                })
            })
            .collect();
        let mut next = [0u64; 3];
        while next.iter().any(|&n| n < 30) {
            set.set_deadline(Some(Instant::now() + Duration::from_secs(30)));
            set.poll(|&k, rec| {
                assert_eq!(key_of(rec), next[k], "ring {k}");
                next[k] += 1;
                ControlFlow::Continue(())
            })
            .unwrap();
        }
        for p in producers {
            p.join().unwrap();
        }
        for (i, r) in rings.iter().enumerate() {
            assert!(
                r.wakeups() <= 1,
                "{policy:?}: ring {i}'s producer paid {} wakeups for 30 records",
                r.wakeups()
            );
        }
        // Each ring's last record is held back: the kernel sees it unconsumed.
        assert!(rings
            .iter()
            .any(|r| r.producer_position() != r.consumer_position()));
        // An external loop's sleep needs them handed back.
        assert_eq!(set.prepare_wait().unwrap(), Readiness::Empty);
        for r in &rings {
            assert_eq!(r.consumer_position(), r.producer_position());
        }
        // Nothing is delivered twice.
        set.set_deadline(Some(Instant::now()));
        assert!(matches!(
            set.poll(|_, _| ControlFlow::Continue(())),
            Err(Error::DeadlineExceeded)
        ));
        for r in &rings {
            assert_eq!(r.consumer_position(), r.producer_position());
        }
    }
}

/// Under a napping policy a ring holding its last record back gets no
/// default wakeups, so the set must look at it on its own: every round
/// does (a load of its producer position), so a flooding ring delays it by
/// two budgets at most, as it would a woken ring, and whatever the nap
/// (`Duration::MAX`: until the deadline). Before, a poll that kept
/// delivering never looked at it: B's record waited as long as the flood.
#[test]
fn a_flooding_ring_does_not_starve_a_ring_holding_back() {
    for nap in [Duration::from_millis(1), Duration::MAX] {
        let a = FakeRing::new(4 * page()).unwrap();
        let b = FakeRing::new(4 * page()).unwrap();
        let mut set = RingSet::new().unwrap();
        set.insert_consumer('a', a.consumer().unwrap()).unwrap();
        set.insert_consumer('b', b.consumer().unwrap()).unwrap();
        set.set_wake_policy(WakePolicy::Interval(nap));
        set.set_budget(Budget {
            max_records: 4,
            max_bytes: usize::MAX,
        });
        set.set_deadline(Some(Instant::now() + Duration::from_secs(60)));
        // B's first record, delivered: B now holds it back.
        keyed(&b, 1, 8);
        set.poll(|&k, rec| {
            assert_eq!((k, key_of(rec)), ('b', 1));
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_ne!(b.consumer_position(), b.producer_position(), "B holds back");
        // A floods: it always has hundreds of records, so no round is empty.
        let (mut sent, mut next) = (0u64, 0u64);
        for _ in 0..500 {
            keyed(&a, sent, 8);
            sent += 1;
        }
        // A round or two of A, so that B is out of the round, holding.
        for _ in 0..2 {
            set.poll(|&k, rec| {
                assert_eq!((k, key_of(rec)), ('a', next));
                next += 1;
                ControlFlow::Continue(())
            })
            .unwrap();
        }
        keyed(&b, 2, 8);
        let before = next;
        let b_got = flood_until(&mut set, &a, (&mut sent, &mut next), 2);
        assert!(
            b_got,
            "{nap:?}: B's record never came ({} of A's did)",
            next - before
        );
        assert!(
            next - before <= 8,
            "{nap:?}: {} of A's records came before B's (two budgets: 8)",
            next - before
        );
    }
}

/// Polls while ring `'a'` floods (4 more records before each poll; `sent`
/// and `next` count A's records written and read, checked in order) until
/// the other ring's record keyed `want` comes; false if it never does
/// within a bound on the polls (so that starvation fails a test rather
/// than hanging it: each poll takes microseconds, the record needs one
/// look, at most a millisecond away).
fn flood_until(
    set: &mut RingSet<char>,
    a: &FakeRing,
    (sent, next): (&mut u64, &mut u64),
    want: u64,
) -> bool {
    let mut got = false;
    for _ in 0..1_000_000 {
        if got {
            break;
        }
        for _ in 0..4 {
            keyed(a, *sent, 8);
            *sent += 1;
        }
        set.poll(|&k, rec| {
            if k == 'a' {
                assert_eq!(key_of(rec), *next);
                *next += 1;
            } else {
                assert_eq!(key_of(rec), want);
                got = true;
            }
            ControlFlow::Continue(())
        })
        .unwrap();
    }
    got
}

/// A publish within a long drain (the cadence) can pass the last record
/// delivered when only discards follow it; holding that record back must
/// not then publish its start: the consumer position never moves back
/// (the producer may already have reused those bytes).
#[test]
fn holding_back_never_moves_the_consumer_position_backwards() {
    let ring = FakeRing::new(page()).unwrap();
    let mut c = ring.consumer().unwrap();
    c.set_publish_every(64);
    let mut set = RingSet::new().unwrap();
    set.insert_consumer(0u8, c).unwrap();
    set.set_wake_policy(WakePolicy::Interval(Duration::from_secs(3600)));
    set.set_deadline(Some(Instant::now() + Duration::from_secs(60)));
    // 4 records of 16 ring bytes (0..64), then one discard (64..80).
    for k in 0..4 {
        keyed(&ring, k, 8);
    }
    ring.reserve(8).unwrap().discard(Wakeup::Default);
    let st = set.poll(|_, _| ControlFlow::Continue(())).unwrap();
    assert_eq!(st.records, 4);
    // The cadence published 64 (past the 4th record); what is held is the
    // discard after it. One store, none going back to 48.
    assert_eq!(ring.consumer_position(), 64);
    assert_eq!(set.stats(&0).unwrap().commits, 1);
    assert_eq!(set.prepare_wait().unwrap(), Readiness::Empty);
    assert_eq!(ring.consumer_position(), 80);
}

/// A callback that panics (the caller catching it) leaves its ring in the
/// round: the ring's records keep coming, the unpublished ones again.
/// Before, the ring was off the round but marked in it, and no wakeup or
/// sweep put it back: its records never came again.
#[test]
fn a_ring_whose_callback_panicked_is_read_again() {
    let ring = FakeRing::new(4 * page()).unwrap();
    let mut set = RingSet::new().unwrap();
    set.insert_consumer(0u8, ring.consumer().unwrap()).unwrap();
    keyed(&ring, 1, 8);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        set.poll(|_, _| panic!("the callback panics"))
    }));
    assert!(r.is_err());
    keyed(&ring, 2, 8);
    set.set_deadline(Some(Instant::now() + Duration::from_secs(30)));
    let mut got = Vec::new();
    set.poll(|_, rec| {
        got.push(key_of(rec));
        ControlFlow::Continue(())
    })
    .unwrap();
    // As for `Consumer::consume`: the records after the last publish,
    // the one the callback panicked on included, come again.
    assert_eq!(got, vec![1, 2]);
}

/// A napping set holds back only small records (at most 1/32 of the ring):
/// the kernel counts a held record as unconsumed, so a held record of half
/// the ring would make the next one of that size fail to reserve (and the
/// ring, never delivering, would keep looking empty). Every record of half
/// the ring comes, none is dropped, and each is handed back at once.
#[test]
fn a_napping_set_holds_back_only_small_records_and_loses_none() {
    let ring = FakeRing::new(page()).unwrap();
    let mut set = RingSet::new().unwrap();
    set.insert_consumer(0usize, ring.consumer().unwrap())
        .unwrap();
    set.set_wake_policy(WakePolicy::Interval(Duration::from_millis(1)));
    let big = page() / 2 - 8;
    for i in 0..10u8 {
        ring.output(&vec![i; big], Wakeup::Default)
            .expect("room in the ring: nothing big is held back");
        set.set_deadline(Some(Instant::now() + Duration::from_millis(5)));
        let mut got = Vec::new();
        poll_to_deadline(&mut set, |_, rec| got.push(rec.to_vec()));
        assert_eq!(got, vec![vec![i; big]], "record {i}");
        assert_eq!(ring.consumer_position(), ring.producer_position());
    }
}

/// Records committed with `BPF_RB_NO_WAKEUP` on a ring out of the round
/// (and not holding a record back) wake nobody; a nap's end finds them. A
/// napping set that never naps, because another ring floods, still looks
/// at every ring once per nap (at least 1 ms apart), so they come.
#[test]
fn a_flooding_ring_does_not_starve_records_committed_without_a_wakeup() {
    let a = FakeRing::new(4 * page()).unwrap();
    let c = FakeRing::new(4 * page()).unwrap();
    let mut set = RingSet::new().unwrap();
    set.insert_consumer('a', a.consumer().unwrap()).unwrap();
    set.insert_consumer('c', c.consumer().unwrap()).unwrap();
    set.set_wake_policy(WakePolicy::Interval(Duration::from_millis(1)));
    set.set_budget(Budget {
        max_records: 4,
        max_bytes: usize::MAX,
    });
    set.set_deadline(Some(Instant::now() + Duration::from_secs(60)));
    let (mut sent, mut next) = (0u64, 0u64);
    for _ in 0..500 {
        keyed(&a, sent, 8);
        sent += 1;
    }
    // C is found empty (it never delivered, so it holds nothing) and leaves
    // the round published.
    set.poll(|&k, rec| {
        assert_eq!((k, key_of(rec)), ('a', next));
        next += 1;
        ControlFlow::Continue(())
    })
    .unwrap();
    c.output(&7u64.to_le_bytes(), Wakeup::NoWakeup).unwrap();
    let c_got = flood_until(&mut set, &a, (&mut sent, &mut next), 7);
    assert!(
        c_got,
        "C's record never came while A flooded ({next} of A's did)"
    );
}

/// A napping set that finds a ring's head record reserved, not committed,
/// keeps the record it holds back: its commit then finds the consumer
/// behind and wakes nobody (the bounded busy backoff finds it). Before,
/// the drain that stopped at it published everything, and the commit paid
/// a wakeup.
#[test]
fn a_napping_set_stays_behind_a_reserved_record() {
    let ring = FakeRing::new(page()).unwrap();
    let mut set = RingSet::new().unwrap();
    set.insert_consumer(0u8, ring.consumer().unwrap()).unwrap();
    set.set_wake_policy(WakePolicy::Interval(Duration::from_millis(5)));
    set.set_deadline(Some(Instant::now() + Duration::from_secs(30)));
    keyed(&ring, 0, 8);
    set.poll(|_, rec| {
        assert_eq!(key_of(rec), 0);
        ControlFlow::Continue(())
    })
    .unwrap();
    let woken = ring.wakeups();
    let got = common::with_a_record_committed_later(&ring, 1, || {
        let mut got = Vec::new();
        while got.is_empty() {
            set.poll(|_, rec| {
                got.push(key_of(rec));
                ControlFlow::Continue(())
            })
            .unwrap();
        }
        got
    });
    assert_eq!(got, vec![1]);
    assert_eq!(
        ring.wakeups(),
        woken,
        "the commit of the reserved record woke the set"
    );
    assert_eq!(set.stats(&0).unwrap().busy_stalls, 1);
}
