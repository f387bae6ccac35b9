//! The tokio reader (feature `tokio`): edge-triggered waiting, cancellation
//! at every await point, cooperation inside `select!`, close and flush. The
//! `fake_` tests run on the in-memory fake ring (no privileges); the
//! `kernel_` tests on real rings, skipping loudly without CAP_BPF.

#[macro_use]
mod common;

use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use bpf_ringbuf::testing::{check_payload, FakeRing, KernelProducer, ProducerConfig, Wakeup};
use bpf_ringbuf::{AsyncReader, Error, RingBuf, WakePolicy};
use futures_core::Stream;

/// Generous bound for a whole test: a hang fails instead of blocking CI.
const LIMIT: Duration = Duration::from_secs(60);

fn page() -> usize {
    bpf_ringbuf::page_size()
}

/// Writes record `seq` (its number, then `len - 8` bytes of it) to a fake ring.
fn fake_output(ring: &FakeRing, seq: u64, wakeup: Wakeup) -> bool {
    let len = 8 + (seq % 5) as usize * 8;
    let mut buf = vec![seq as u8; len];
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    ring.output(&buf, wakeup).is_some()
}

fn fake_seq(rec: &[u8]) -> u64 {
    let seq = u64::from_le_bytes(rec[..8].try_into().unwrap());
    assert!(rec[8..].iter().all(|&b| b == seq as u8), "bad payload");
    seq
}

/// A fake ring fed by a thread: `n` records in bursts, waiting for room.
fn fake_feeder(ring: Arc<FakeRing>, n: u64, wakeup: Wakeup) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut seq = 0;
        while seq < n {
            let burst = 1 + seq % 13;
            for _ in 0..burst.min(n - seq) {
                while !fake_output(&ring, seq, wakeup) {
                    std::thread::yield_now();
                }
                seq += 1;
            }
            if seq % 7 == 0 {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    })
}

/// Polls `fut` `polls` times with a waker that does nothing, then drops it:
/// a future cancelled at its `polls`-th await point (or completed before).
fn poll_n<F: Future>(fut: F, polls: usize) -> Option<F::Output> {
    let mut fut = pin!(fut);
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    for _ in 0..polls {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return Some(out);
        }
    }
    None
}

/// The next item of a stream.
async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *s).poll_next(cx)).await
}

// ---- fake ring ----------------------------------------------------------------

#[tokio::test]
async fn fake_read_in_order_then_flush() {
    let ring = FakeRing::new(page()).unwrap();
    let mut reader = AsyncReader::from_consumer(ring.consumer().unwrap()).unwrap();
    for seq in 0..10 {
        assert!(fake_output(&ring, seq, Wakeup::Default));
    }
    reader.handle().flush();
    for seq in 0..10 {
        assert_eq!(fake_seq(&reader.read().await.unwrap().data), seq);
    }
    // Once, after the records present.
    assert!(matches!(reader.read().await, Err(Error::Flushed)));
    let waiting = tokio::time::timeout(Duration::from_millis(50), reader.read()).await;
    assert!(waiting.is_err(), "a flush is reported once");
    assert_eq!(reader.stats().records, 10);
}

#[tokio::test]
async fn fake_close_and_flush_wake_a_waiting_task() {
    let ring = FakeRing::new(page()).unwrap();
    let mut reader = AsyncReader::from_consumer(ring.consumer().unwrap()).unwrap();
    let handle = reader.handle();
    let task = tokio::spawn(async move {
        let flushed = reader.read().await;
        let closed = reader.read().await;
        (flushed, closed, reader)
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    handle.flush();
    tokio::time::sleep(Duration::from_millis(30)).await;
    // From another thread, outside the runtime.
    std::thread::spawn(move || handle.close()).join().unwrap();
    let (flushed, closed, mut reader) = tokio::time::timeout(LIMIT, task).await.unwrap().unwrap();
    assert!(matches!(flushed, Err(Error::Flushed)), "{flushed:?}");
    assert!(matches!(closed, Err(Error::Closed)), "{closed:?}");
    // Closed at once, even with records there; the stream just ends.
    assert!(fake_output(&ring, 0, Wakeup::Default));
    assert!(matches!(reader.read().await, Err(Error::Closed)));
    assert!(matches!(reader.batch().await, Err(Error::Closed)));
    assert!(next(&mut reader.stream()).await.is_none());
    // The record stays in the ring for the next reader.
    let consumer = reader.into_consumer();
    assert_eq!(consumer.available_bytes(), 16);
}

#[tokio::test]
async fn fake_every_record_once_under_cancellation() {
    let ring = Arc::new(FakeRing::new(4 * page()).unwrap());
    let mut reader = AsyncReader::from_consumer(ring.consumer().unwrap()).unwrap();
    const N: u64 = 20_000;
    let feeder = fake_feeder(ring.clone(), N, Wakeup::Default);
    let mut next_seq = 0;
    let mut step = 0usize;
    let start = Instant::now();
    while next_seq < N {
        assert!(start.elapsed() < LIMIT, "hung at {next_seq}");
        step += 1;
        let got = match step % 4 {
            // Polled by hand 0..3 times, then dropped.
            0 => poll_n(reader.read(), step / 4 % 4).map(Result::unwrap),
            // Cancelled by a tiny timeout, or not.
            1 => tokio::time::timeout(Duration::from_micros(step as u64 % 300), reader.read())
                .await
                .ok()
                .map(Result::unwrap),
            // A batch future dropped half-way, or a batch dropped after part of it.
            2 => {
                if step % 8 == 2 {
                    let _ = poll_n(reader.batch(), 1);
                    None
                } else {
                    let waited = tokio::time::timeout(Duration::from_millis(5), reader.batch());
                    if let Ok(batch) = waited.await {
                        let batch = batch.unwrap();
                        for rec in (&batch).take(step % 5) {
                            assert_eq!(fake_seq(rec), next_seq);
                            next_seq += 1;
                        }
                    }
                    None
                }
            }
            // A stream item future dropped after one poll, or awaited.
            _ => {
                let mut stream = reader.stream();
                if step % 8 == 3 {
                    poll_n(next(&mut stream), 1).map(|r| r.unwrap().unwrap())
                } else {
                    Some(next(&mut stream).await.unwrap().unwrap())
                }
            }
        };
        if let Some(rec) = got {
            assert_eq!(fake_seq(&rec.data), next_seq, "lost or duplicated");
            next_seq += 1;
        }
    }
    feeder.join().unwrap();
    // Nothing more: no record delivered twice, none left behind.
    assert!(
        tokio::time::timeout(Duration::from_millis(20), reader.read())
            .await
            .is_err()
    );
    assert_eq!(ring.consumer_position(), ring.producer_position());
}

#[tokio::test]
async fn fake_batch_commits_what_it_delivered() {
    let ring = FakeRing::new(page()).unwrap();
    let mut reader = AsyncReader::from_consumer(ring.consumer().unwrap()).unwrap();
    reader.set_yield_every(4);
    for seq in 0..10 {
        assert!(fake_output(&ring, seq, Wakeup::Default));
    }
    let batch = reader.batch().await.unwrap();
    let seqs: Vec<u64> = (&batch).take(2).map(fake_seq).collect();
    drop(batch);
    assert_eq!(seqs, [0, 1]);
    // A batch holds at most `yield_every` records, counted with the records
    // delivered since the last unit of budget was spent.
    let batch = reader.batch().await.unwrap();
    assert_eq!((&batch).map(fake_seq).collect::<Vec<_>>(), [2, 3]);
    drop(batch);
    let batch = reader.batch().await.unwrap();
    assert_eq!((&batch).map(fake_seq).collect::<Vec<_>>(), [4, 5, 6, 7]);
    drop(batch);
    let mut stream = reader.stream();
    for seq in 8..10 {
        assert_eq!(
            fake_seq(&next(&mut stream).await.unwrap().unwrap().data),
            seq
        );
    }
    let stats = reader.stats();
    assert_eq!(stats.records, 10);
    assert_eq!(ring.consumer_position(), ring.producer_position());
}

/// Records that wake nobody are read within the nap of a timer policy; a
/// `Kernel` reader does not see them (it needs a wakeup).
#[tokio::test]
async fn fake_wake_policies_pick_up_silent_records() {
    for policy in [
        WakePolicy::Interval(Duration::from_millis(2)),
        WakePolicy::Adaptive {
            max_latency: Duration::from_millis(4),
        },
    ] {
        let ring = Arc::new(FakeRing::new(page()).unwrap());
        let mut reader = AsyncReader::from_consumer(ring.consumer().unwrap()).unwrap();
        reader.set_wake_policy(policy);
        assert_eq!(reader.wake_policy(), policy);
        for seq in 0..20 {
            // Written while the reader naps, from another thread (a branch
            // of this task would poll the read again when it wakes).
            let write = write_later(&ring, seq, Wakeup::NoWakeup);
            let rec = tokio::time::timeout(Duration::from_secs(5), reader.read())
                .await
                .unwrap_or_else(|_| panic!("{policy:?}: a silent record was never read"));
            assert_eq!(fake_seq(&rec.unwrap().data), seq);
            write.join().unwrap();
        }
        assert!(reader.stats().sleeps >= 20, "{:?}", reader.stats());
    }
    // Kernel: a silent record is found by the next read; a forced one
    // wakes a waiting reader.
    let ring = Arc::new(FakeRing::new(page()).unwrap());
    let mut reader = AsyncReader::from_consumer(ring.consumer().unwrap()).unwrap();
    assert!(fake_output(&ring, 0, Wakeup::NoWakeup));
    assert_eq!(fake_seq(&reader.read().await.unwrap().data), 0);
    let write = write_later(&ring, 1, Wakeup::ForceWakeup);
    let rec = tokio::time::timeout(LIMIT, reader.read()).await.unwrap();
    write.join().unwrap();
    assert_eq!(fake_seq(&rec.unwrap().data), 1);
}

/// Writes record `seq` from another thread, 5 ms from now.
fn write_later(ring: &Arc<FakeRing>, seq: u64, wakeup: Wakeup) -> std::thread::JoinHandle<()> {
    let ring = ring.clone();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(5));
        assert!(fake_output(&ring, seq, wakeup));
    })
}

/// A BUSY head record committed without a wakeup is still read (the reader
/// naps on a timer while the head is BUSY).
#[tokio::test]
async fn fake_busy_head_committed_silently() {
    let ring = FakeRing::new(page()).unwrap();
    let mut reader = AsyncReader::from_consumer(ring.consumer().unwrap()).unwrap();
    let mut r = ring.reserve(8).unwrap();
    r.write(0, &7u64.to_le_bytes());
    let read = reader.read();
    let commit = async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        r.submit(Wakeup::NoWakeup);
    };
    let (rec, ()) = tokio::time::timeout(LIMIT, async { tokio::join!(read, commit) })
        .await
        .unwrap();
    assert_eq!(rec.unwrap().data, 7u64.to_le_bytes());
    assert_eq!(reader.stats().busy_stalls, 1);
}

/// A `select!` with a timer branch keeps ticking while the ring floods.
#[tokio::test]
async fn fake_select_timer_ticks_during_a_flood() {
    let ring = Arc::new(FakeRing::new(64 * page()).unwrap());
    let reader = AsyncReader::from_consumer(ring.consumer().unwrap()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (ring, stop) = (ring.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seq = 0;
            while !stop.load(Ordering::Relaxed) {
                if fake_output(&ring, seq, Wakeup::Default) {
                    seq += 1;
                } else {
                    std::hint::spin_loop();
                }
            }
        })
    };
    let (ticks, records) = select_flood(reader).await;
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    assert_ticks(ticks, records);
}

/// Runs `select!` over reads and a 10 ms interval for 500 ms.
///
/// With 16 records per unit of budget a turn of the task reads at most
/// 2,048 records, a few milliseconds in a debug build (the default, 64,
/// gives 8,192: 20 ms per turn in a debug build, under 2 ms optimised).
async fn select_flood(mut reader: AsyncReader) -> (u32, u64) {
    reader.set_yield_every(16);
    let mut interval = tokio::time::interval(Duration::from_millis(10));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let (mut ticks, mut records) = (0u32, 0u64);
    let end = Instant::now() + Duration::from_millis(500);
    // The clock is read in the tick branch only: a starved timer also
    // starves the end of the loop, and the test's timeout reports it.
    let run = async {
        loop {
            tokio::select! {
                rec = reader.read() => {
                    rec.unwrap();
                    records += 1;
                }
                _ = interval.tick() => {
                    ticks += 1;
                    if Instant::now() >= end {
                        break;
                    }
                }
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .is_err()
    {
        panic!("the timer branch starved: {ticks} ticks, {records} records");
    }
    (ticks, records)
}

fn assert_ticks(ticks: u32, records: u64) {
    eprintln!("{ticks} ticks of 10 ms in 500 ms, {records} records read meanwhile");
    // 50 ticks if the timer were alone; a loaded 2-CPU machine (the other
    // tests, the flooding thread) gets fewer. A starved timer gets none:
    // without cooperation a read never returns `Pending` in a flood, and
    // the loop would not end at all.
    assert!(
        ticks >= 10,
        "the timer starved: {ticks} ticks, {records} records"
    );
    assert!(records > 1000, "no flood: {records} records");
}

// ---- kernel ring ----------------------------------------------------------------

/// A kernel producer thread: `n` records in bursts of 1 to 50, pausing now
/// and then so that the reader catches up and sleeps, and waiting for room
/// when the ring is full.
fn kernel_feeder(
    ring: &RingBuf,
    n: u64,
    cfg: ProducerConfig,
) -> std::thread::JoinHandle<bpf_ringbuf::Result<()>> {
    let producer = KernelProducer::new(ring, cfg).unwrap();
    std::thread::spawn(move || {
        let mut done = 0;
        let mut burst = 0u64;
        while done < n {
            burst += 1;
            let want = (1 + burst * 7 % 50).min(n - done);
            let rep = producer.produce(want)?;
            done += rep.submitted + rep.discarded;
            match burst % 10 {
                0 => std::thread::sleep(Duration::from_micros(200)),
                3 | 6 => std::thread::yield_now(),
                _ => {}
            }
            if rep.dropped > 0 {
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        Ok(())
    })
}

/// 100,000 records in small bursts, the reader awaiting edge-triggered
/// readiness between them: every record once, in order, no hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn kernel_100k_small_bursts_in_order() {
    privileged!();
    const N: u64 = 100_000;
    let ring = RingBuf::create(16 * page()).unwrap();
    let mut reader = AsyncReader::new(&ring).unwrap();
    let feeder = kernel_feeder(&ring, N, ProducerConfig::fixed(24));
    let run = async {
        let mut next_seq = 0;
        while next_seq < N {
            if next_seq % 2 == 0 {
                let rec = reader.read().await.unwrap();
                assert_eq!(check_payload(&rec.data).unwrap(), next_seq);
                next_seq += 1;
            } else {
                let batch = reader.batch().await.unwrap();
                for rec in &batch {
                    assert_eq!(check_payload(rec).unwrap(), next_seq);
                    next_seq += 1;
                }
            }
        }
    };
    tokio::time::timeout(LIMIT, run)
        .await
        .expect("hung: a wakeup was lost");
    feeder.join().unwrap().unwrap();
    let stats = reader.stats();
    eprintln!("{stats:?}");
    assert_eq!(stats.records, N);
    assert!(stats.sleeps > 0 && stats.wakeups > 0, "{stats:?}");
}

/// The same stream through `into_stream`, on a current-thread runtime.
#[tokio::test]
async fn kernel_stream_of_owned_records() {
    privileged!();
    const N: u64 = 20_000;
    let ring = RingBuf::create(16 * page()).unwrap();
    let reader = AsyncReader::new(&ring).unwrap();
    let cfg = ProducerConfig {
        discard_every: Some(5),
        ..ProducerConfig::fixed(40)
    };
    let feeder = kernel_feeder(&ring, N, cfg.clone());
    let mut stream = pin!(reader.into_stream());
    let run = async {
        let mut next_seq = 0;
        let mut seen = 0;
        while seen < N - N / 5 {
            let rec = next(&mut stream).await.unwrap().unwrap();
            while cfg.is_discarded(next_seq) {
                next_seq += 1;
            }
            assert_eq!(check_payload(&rec.data).unwrap(), next_seq);
            next_seq += 1;
            seen += 1;
        }
    };
    tokio::time::timeout(LIMIT, run).await.expect("hung");
    feeder.join().unwrap().unwrap();
}

/// Reads cancelled at every await point (polled by hand 0..N times, or cut
/// by tiny timeouts) on a kernel ring: nothing lost, nothing twice.
#[tokio::test]
async fn kernel_cancellation_loses_nothing() {
    privileged!();
    const N: u64 = 30_000;
    let ring = RingBuf::create(8 * page()).unwrap();
    let mut reader = AsyncReader::new(&ring).unwrap();
    let feeder = kernel_feeder(&ring, N, ProducerConfig::fixed(16));
    let mut next_seq = 0;
    let mut step = 0usize;
    let start = Instant::now();
    while next_seq < N {
        assert!(start.elapsed() < LIMIT, "hung at {next_seq}");
        step += 1;
        let got = if step % 2 == 0 {
            poll_n(reader.read(), step / 2 % 5).map(Result::unwrap)
        } else {
            tokio::time::timeout(Duration::from_micros(step as u64 % 500), reader.read())
                .await
                .ok()
                .map(Result::unwrap)
        };
        if let Some(rec) = got {
            assert_eq!(
                check_payload(&rec.data).unwrap(),
                next_seq,
                "lost or duplicated"
            );
            next_seq += 1;
        }
    }
    feeder.join().unwrap().unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(20), reader.read())
            .await
            .is_err()
    );
    assert_eq!(reader.consumer().available_bytes(), 0);
}

/// A kernel ring flooded by a producer thread: the timer branch of the
/// reader's `select!` keeps ticking.
#[tokio::test]
async fn kernel_select_timer_ticks_during_a_flood() {
    privileged!();
    let ring = RingBuf::create(1 << 20).unwrap();
    let reader = AsyncReader::new(&ring).unwrap();
    let producer = KernelProducer::new(&ring, ProducerConfig::fixed(16)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                producer.produce(5_000).unwrap();
            }
        })
    };
    let (ticks, records) = select_flood(reader).await;
    stop.store(true, Ordering::Relaxed);
    flood.join().unwrap();
    assert_ticks(ticks, records);
}

/// Close and flush wake a task awaiting a kernel ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kernel_close_and_flush_wake_a_waiting_task() {
    privileged!();
    let ring = RingBuf::create(page()).unwrap();
    let mut reader = AsyncReader::new(&ring).unwrap();
    let handle = reader.handle();
    let producer = KernelProducer::new(&ring, ProducerConfig::fixed(8)).unwrap();
    producer.produce(3).unwrap();
    let task = tokio::spawn(async move {
        let mut got = Vec::new();
        let end = loop {
            match reader.read().await {
                Ok(rec) => got.push(check_payload(&rec.data).unwrap()),
                Err(e) => break e,
            }
        };
        let closed = reader.read().await;
        (got, end, closed)
    });
    tokio::time::sleep(Duration::from_millis(30)).await;
    handle.flush();
    tokio::time::sleep(Duration::from_millis(30)).await;
    handle.close();
    let (got, end, closed) = tokio::time::timeout(LIMIT, task).await.unwrap().unwrap();
    assert_eq!(got, [0, 1, 2]);
    assert!(matches!(end, Error::Flushed), "{end:?}");
    assert!(matches!(closed, Err(Error::Closed)), "{closed:?}");
}

/// Forced wakeups end a nap at once (the first default wakeup is napped through).
#[tokio::test]
async fn kernel_interval_answers_forced_wakeups() {
    privileged!();
    let ring = RingBuf::create(page()).unwrap();
    let mut reader = AsyncReader::new(&ring).unwrap();
    reader.set_wake_policy(WakePolicy::Interval(Duration::from_secs(30)));
    let cfg = ProducerConfig {
        wakeup: Wakeup::ForceWakeup,
        ..ProducerConfig::fixed(8)
    };
    let producer = KernelProducer::new(&ring, cfg).unwrap();
    let feeder = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        producer.produce(1).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        producer.produce(1).unwrap();
    });
    let start = Instant::now();
    let rec = tokio::time::timeout(Duration::from_secs(10), reader.read())
        .await
        .expect("a forced wakeup did not end the nap")
        .unwrap();
    assert_eq!(check_payload(&rec.data).unwrap(), 0);
    assert!(start.elapsed() < Duration::from_secs(10));
    feeder.join().unwrap();
}

/// Outside a tokio runtime an async reader is a typed error, not tokio's
/// panic; the consumer's claim on the ring is released with it.
#[test]
fn outside_a_runtime_is_a_typed_error() {
    let ring = FakeRing::new(page()).unwrap();
    let e = AsyncReader::from_consumer(ring.consumer().unwrap()).unwrap_err();
    assert!(matches!(e, Error::NoAsyncRuntime), "{e:?}");
    ring.consumer().unwrap();
}
