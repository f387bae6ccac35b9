//! The tokio scenario (issue 9): `AsyncReader` on a current-thread runtime
//! against the blocking `Reader`, on the stream scenario's producer (a thread
//! on CPU 0 calling `produce(256)`, the consumer's thread on CPU 1).

use std::fmt::Write;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Barrier};
use std::time::Instant;

use bpf_ringbuf::{AsyncReader, Error, ReaderHandle, RingBuf};
use futures_core::Stream;

use crate::report::{mark, median, ratios, size_label};
use crate::{
    check, irq_work_count, make, new_ring, pin_to_cpu, thread_usage, Kind, Opts, Producer, Res,
    Tally,
};

/// Ring size: the stream scenario's larger ring, where no consumer fails reserves.
pub const RING: usize = 16 << 20;
/// Payload bytes per record.
pub const RECORD: usize = 64;
/// Records per run, as a multiple of the stream scenario's: longer runs, so
/// that one stall of either thread weighs less in a round's ratio.
pub const RECORDS_TIMES: u64 = 3;
/// Target: the async reader's records/s at least this times the blocking reader's.
pub const LIMIT: f64 = 0.9;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Blocking `Reader`: `wait` + `consume` (the stream scenario's ours `consume`).
    BlockingConsume,
    /// Blocking `Reader`: `wait` + `read` until the deadline (copy + allocation).
    BlockingRead,
    /// `AsyncReader::batch()` (records in place, default `yield_every` 64).
    Batch,
    /// `AsyncReader::into_stream()`: an owned `Record` per item.
    Stream,
    /// `batch()` with `set_yield_every(BIG_BATCH)`: batches of up to that
    /// many records, one unit of tokio's budget each. For comparison only.
    BatchBig,
}

/// `Mode::BatchBig`'s `yield_every`.
pub const BIG_BATCH: usize = 1024;

impl Mode {
    pub const ALL: [Mode; 5] = [
        Mode::BlockingConsume,
        Mode::BlockingRead,
        Mode::Batch,
        Mode::Stream,
        Mode::BatchBig,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Mode::BlockingConsume => "blocking `Reader`: `wait` + `consume`",
            Mode::BlockingRead => "blocking `Reader`: `wait` + `read` (copy + allocation)",
            Mode::Batch => "`AsyncReader::batch()` (in place, `yield_every` 64)",
            Mode::Stream => "`AsyncReader::into_stream()` (copy + allocation per item)",
            Mode::BatchBig => {
                "`AsyncReader::batch()` with `set_yield_every(1024)` (for comparison)"
            }
        }
    }
    /// The blocking reader each async one is held against: the one doing
    /// the same work per record.
    fn baseline(self) -> Option<Mode> {
        match self {
            Mode::Batch => Some(Mode::BlockingConsume),
            Mode::Stream => Some(Mode::BlockingRead),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Default)]
pub struct Round {
    pub recs_per_s: f64,
    pub cpu_ns_per_rec: f64,
    pub sleeps_per_rec: f64,
    pub dropped: u64,
    /// IRQ work interrupts on the producer's CPU per record (the wakeups its
    /// commits sent), if countable.
    pub irq_work_per_rec: Option<f64>,
}

/// The async consumer: reads until the producer's flush says everything is
/// there (`Flushed` comes once, after the records present at the flush).
async fn consume_async(
    mode: Mode,
    ring: &RingBuf,
    handle_tx: mpsc::Sender<ReaderHandle>,
    go: &Barrier,
) -> Res<(Tally, std::time::Duration)> {
    let mut r = AsyncReader::new(ring)?;
    if mode == Mode::BatchBig {
        r.set_yield_every(BIG_BATCH);
    }
    handle_tx.send(r.handle())?;
    go.wait();
    let start = Instant::now();
    let mut t = Tally::default();
    match mode {
        Mode::Batch | Mode::BatchBig => loop {
            match r.batch().await {
                Ok(b) => {
                    for rec in &b {
                        t.record(rec);
                    }
                }
                Err(Error::Flushed) => break,
                Err(e) => return Err(e.into()),
            }
        },
        Mode::Stream => {
            let mut s = r.into_stream();
            loop {
                match poll_fn(|cx| Pin::new(&mut s).poll_next(cx)).await {
                    Some(Ok(rec)) => t.record(&rec.data),
                    Some(Err(Error::Flushed)) | None => break,
                    Some(Err(e)) => return Err(e.into()),
                }
            }
        }
        _ => unreachable!("blocking modes run in consume_blocking"),
    }
    Ok((t, start.elapsed()))
}

/// One run of the stream load with `mode` consuming on CPU 1.
pub fn run_once(mode: Mode, ring: &RingBuf, prod: &mut Producer, total: u64) -> Res<Round> {
    let done = AtomicBool::new(false);
    let submitted = AtomicU64::new(0);
    let go = Barrier::new(2);
    let (htx, hrx) = mpsc::channel::<ReaderHandle>();
    std::thread::scope(|s| -> Res<Round> {
        let (done, submitted, go) = (&done, &submitted, &go);
        let cons = s.spawn(
            move || -> Res<(Tally, std::time::Duration, (u64, u64, u64))> {
                pin_to_cpu(1);
                let u0 = thread_usage();
                let (t, elapsed) = match mode {
                    Mode::Batch | Mode::Stream | Mode::BatchBig => {
                        // Current-thread runtime: the reader, the IO driver and
                        // the timers all run on this thread, so its CPU time is
                        // the whole consumer's.
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()?;
                        rt.block_on(consume_async(mode, ring, htx, go))?
                    }
                    Mode::BlockingConsume | Mode::BlockingRead => {
                        drop(htx);
                        let kind = if mode == Mode::BlockingRead {
                            Kind::OursRead
                        } else {
                            Kind::OursConsume
                        };
                        let mut c = make(kind, ring)?;
                        go.wait();
                        let start = Instant::now();
                        let mut t = Tally::default();
                        loop {
                            c.step(&mut t, 10)?;
                            if done.load(Ordering::Acquire)
                                && t.count >= submitted.load(Ordering::Relaxed)
                            {
                                break;
                            }
                        }
                        (t, start.elapsed())
                    }
                };
                let u1 = thread_usage();
                Ok((t, elapsed, (u1.0 - u0.0, u1.1 - u0.1, u1.2 - u0.2)))
            },
        );
        pin_to_cpu(0);
        let handle = hrx.recv().ok();
        go.wait();
        let mut expect = Tally::default();
        let (mut dropped, mut sent) = (0, 0);
        let iwi0 = irq_work_count(0);
        while sent < total {
            let p = prod.produce(256.min(total - sent))?;
            expect.add(&p.expect);
            dropped += p.dropped;
            sent += p.expect.count + p.dropped;
        }
        let iwi1 = irq_work_count(0);
        let last = prod.produce_forced()?;
        expect.add(&last.expect);
        dropped += last.dropped;
        submitted.store(expect.count, Ordering::Relaxed);
        done.store(true, Ordering::Release);
        if let Some(h) = handle {
            h.flush();
        }
        let (t, elapsed, (cpu, csw, _)) = cons.join().unwrap()?;
        check(mode.label(), &t, &expect);
        Ok(Round {
            recs_per_s: t.count as f64 / elapsed.as_secs_f64(),
            cpu_ns_per_rec: cpu as f64 / t.count as f64,
            sleeps_per_rec: csw as f64 / t.count as f64,
            dropped,
            irq_work_per_rec: iwi0.zip(iwi1).map(|(a, b)| (b - a) as f64 / t.count as f64),
        })
    })
}

pub struct TokioResult {
    /// Per mode (Mode::ALL order), per measured round.
    pub rounds: Vec<Vec<Round>>,
    pub records: u64,
    pub warmup: usize,
}

pub fn run(o: &Opts) -> Res<TokioResult> {
    let t0 = Instant::now();
    let rings: Vec<RingBuf> = Mode::ALL
        .iter()
        .map(|_| new_ring(RING))
        .collect::<Res<_>>()?;
    let mut prods: Vec<Producer> = rings
        .iter()
        .map(|r| Producer::new(r, RECORD))
        .collect::<Res<_>>()?;
    let mut rounds = vec![Vec::new(); Mode::ALL.len()];
    for round in 0..o.warmup + o.rounds {
        for j in 0..Mode::ALL.len() {
            let i = (j + round) % Mode::ALL.len();
            let r = run_once(
                Mode::ALL[i],
                &rings[i],
                &mut prods[i],
                o.stream_records * RECORDS_TIMES,
            )?;
            if round >= o.warmup {
                rounds[i].push(r);
            }
        }
    }
    eprintln!("tokio: {:.1}s", t0.elapsed().as_secs_f64());
    Ok(TokioResult {
        rounds,
        records: o.stream_records * RECORDS_TIMES,
        warmup: o.warmup,
    })
}

pub fn render(r: &TokioResult) -> String {
    let mut m = String::new();
    let idx = |k: Mode| Mode::ALL.iter().position(|&x| x == k).unwrap();
    let col =
        |k: Mode, f: fn(&Round) -> f64| -> Vec<f64> { r.rounds[idx(k)].iter().map(f).collect() };
    let rps = |k: Mode| col(k, |x| x.recs_per_s);
    let _ = writeln!(
        m,
        "### tokio: `AsyncReader` against the blocking `Reader`, stream, {} ring, {} B records\n\n\
         The stream scenario's load ({} records by `produce(256)` from a thread on CPU 0, \
         ended by one forced-wakeup record) read on CPU 1 by each consumer; the async ones run \
         on a current-thread runtime (`Builder::new_current_thread().enable_all()`) in that \
         thread, and stop at the `Flushed` the producer's `ReaderHandle::flush` sends after its \
         last record. {} warm-up + {} measured rounds. Records/s and \
         CPU are the consumer thread's (its `getrusage`, runtime included), from the start \
         barrier to its last record. \
         Each async reader is held against the blocking one doing the same work per record.\n",
        size_label(RING),
        RECORD,
        r.records,
        r.warmup,
        r.rounds[0].len()
    );
    let _ = writeln!(
        m,
        "| target | ratio of records/s (median) | per-round min–max | result |\n|---|---:|---:|---|"
    );
    for k in Mode::ALL {
        let Some(base) = k.baseline() else { continue };
        let v = ratios(&rps(k), &rps(base));
        let (mn, mx) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        let _ = writeln!(
            m,
            "| {} ≥ {LIMIT:.1}× {} | {:.3}× | {mn:.2}–{mx:.2} | {} |",
            k.label(),
            base.label(),
            median(&v),
            mark(median(&v) >= LIMIT)
        );
    }
    let _ = writeln!(
        m,
        "\n| consumer | M records/s | consumer CPU ns/record | sleeps/record | producer irq_work/record | failed reserves (all rounds, rounds with any) |\n|---|---:|---:|---:|---:|---:|"
    );
    for k in Mode::ALL {
        let _ = writeln!(
            m,
            "| {} | {:.2} | {:.1} | {:.4} | {:.4} | {}, {} of {} |",
            k.label(),
            median(&rps(k)) / 1e6,
            median(&col(k, |x| x.cpu_ns_per_rec)),
            median(&col(k, |x| x.sleeps_per_rec)),
            median(&col(k, |x| x.irq_work_per_rec.unwrap_or(f64::NAN))),
            r.rounds[idx(k)].iter().map(|x| x.dropped).sum::<u64>(),
            r.rounds[idx(k)].iter().filter(|x| x.dropped > 0).count(),
            r.rounds[idx(k)].len()
        );
    }
    m.push('\n');
    m
}
