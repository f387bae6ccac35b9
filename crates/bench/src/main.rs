//! ringbuf-bench: side-by-side benchmark of BPF ring buffer consumers.

mod asyncs;
mod libs;
mod ours;
mod policies;
mod raw;
mod report;
mod rings;
mod spectate;

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use bpf_ringbuf::testing::{KernelProducer, ProducerConfig, RecordSize, Wakeup};
use bpf_ringbuf::{RingBuf, Stats, WakePolicy};

/// Errors from any library, the kernel or a failed check.
pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// What every consumer accumulates: count, sum of sequence numbers, payload bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    pub seq_sum: u64,
    pub bytes: u64,
}

impl Tally {
    /// Counts one record: its sequence number (the first 8 bytes) and length.
    pub fn record(&mut self, rec: &[u8]) {
        self.count += 1;
        self.seq_sum = self
            .seq_sum
            .wrapping_add(u64::from_le_bytes(rec[..8].try_into().unwrap()));
        self.bytes += rec.len() as u64;
    }
    pub fn add(&mut self, o: &Tally) {
        self.count += o.count;
        self.seq_sum = self.seq_sum.wrapping_add(o.seq_sum);
        self.bytes += o.bytes;
    }
}

/// One consumer of one ring.
pub trait Consumer {
    /// Non-blocking: read every committed record, then return.
    fn drain(&mut self, t: &mut Tally) -> Res<()>;
    /// One call of the library's own blocking wait (bounded by `timeout_ms`),
    /// followed by consuming what is there.
    fn step(&mut self, t: &mut Tally, timeout_ms: i32) -> Res<()>;
    /// The reader's telemetry (ours only).
    fn stats(&self) -> Option<Stats> {
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    OursZeroCopy,
    /// `Consumer::try_read_zero_copy`: the non-blocking core's per-record
    /// path, no close check, no wait.
    OursTryZeroCopy,
    OursConsume,
    OursReadInto,
    OursRead,
    RawRef,
    RawCopy,
    Libbpf,
    LibbpfRs,
    Aya,
    /// `read_zero_copy` in poll-interval mode (1 ms): stream and producer
    /// cost only; its drain is `OursZeroCopy`'s.
    OursPoll,
    /// `wait` + `consume` with `WakePolicy::Interval(POLL_INTERVAL)`: a wake
    /// policy (issue 8); its drain is `OursConsume`'s.
    OursInterval,
    /// `wait` + `consume` with `WakePolicy::Adaptive { max_latency:
    /// ADAPTIVE_MAX_LATENCY }`; its drain is `OursConsume`'s.
    OursAdaptive,
}

impl Kind {
    /// Every consumer, in report order. The ones that only differ in how
    /// they wait (`WAIT_ONLY` of them) are last, so the drain consumers
    /// (`DRAIN`) have the same index in both lists.
    pub const ALL: &'static [Kind] = &[
        Kind::OursZeroCopy,
        Kind::OursTryZeroCopy,
        Kind::OursConsume,
        Kind::OursReadInto,
        Kind::OursRead,
        Kind::Libbpf,
        Kind::LibbpfRs,
        Kind::Aya,
        Kind::RawRef,
        Kind::RawCopy,
        Kind::OursPoll,
        Kind::OursInterval,
        Kind::OursAdaptive,
    ];
    /// How many kinds at the end of `ALL` differ from a drain consumer only
    /// in their wait.
    const WAIT_ONLY: usize = 3;
    /// The consumers of the drain scenario and the callgrind table: all but
    /// the wait-only ones, whose drain is the same code as `OursZeroCopy`'s
    /// or `OursConsume`'s.
    pub const DRAIN: &'static [Kind] = Kind::ALL.split_at(Kind::ALL.len() - Kind::WAIT_ONLY).0;
    pub fn label(self) -> &'static str {
        match self {
            Kind::OursZeroCopy => "ours `read_zero_copy` + one `commit` per drain",
            Kind::OursTryZeroCopy => "ours `Consumer::try_read_zero_copy` + one `commit` per drain",
            Kind::OursConsume => "ours `consume`",
            Kind::OursReadInto => "ours `read_into` (copy)",
            Kind::OursRead => "ours `read` (copy + allocation)",
            Kind::RawRef => "raw reference (batched publish)",
            Kind::RawCopy => "raw copy (copy + per-record publish)",
            Kind::Libbpf => "libbpf C `ring_buffer__consume`",
            Kind::LibbpfRs => "libbpf-rs `RingBuffer::consume`",
            Kind::Aya => "aya `RingBuf::next`",
            Kind::OursPoll => "ours `read_zero_copy`, poll interval 1 ms",
            Kind::OursInterval => "ours `wait` + `consume`, `WakePolicy::Interval(1 ms)`",
            Kind::OursAdaptive => {
                "ours `wait` + `consume`, `WakePolicy::Adaptive { max_latency: 1 ms }`"
            }
        }
    }
}

pub fn make(kind: Kind, ring: &RingBuf) -> Res<Box<dyn Consumer + '_>> {
    Ok(match kind {
        Kind::OursZeroCopy => Box::new(ours::Ours::new(ring, ours::Mode::ZeroCopy)?),
        Kind::OursTryZeroCopy => Box::new(ours::Ours::new(ring, ours::Mode::TryZeroCopy)?),
        Kind::OursConsume => Box::new(ours::Ours::new(ring, ours::Mode::Consume)?),
        Kind::OursReadInto => Box::new(ours::Ours::new(ring, ours::Mode::ReadInto)?),
        Kind::OursRead => Box::new(ours::Ours::new(ring, ours::Mode::Read)?),
        Kind::RawRef => Box::new(libs::RawRef(raw::RawRing::new(ring.as_fd())?)),
        Kind::RawCopy => Box::new(libs::RawCopy(raw::RawRing::new(ring.as_fd())?)),
        Kind::Libbpf => Box::new(libs::Libbpf::new(ring.as_fd())?),
        Kind::LibbpfRs => Box::new(libs::LibbpfRs::new(ring.as_fd())?),
        Kind::Aya => Box::new(libs::Aya::new(ring.as_fd())?),
        Kind::OursPoll => Box::new(ours::Ours::new(ring, ours::Mode::Poll(POLL_INTERVAL))?),
        Kind::OursInterval => Box::new(ours::Ours::with_policy(
            ring,
            ours::Mode::Consume,
            WakePolicy::Interval(POLL_INTERVAL),
        )?),
        Kind::OursAdaptive => Box::new(ours::Ours::with_policy(
            ring,
            ours::Mode::Consume,
            WakePolicy::Adaptive {
                max_latency: ADAPTIVE_MAX_LATENCY,
            },
        )?),
    })
}

/// The interval of `OursPoll` and `OursInterval`.
pub const POLL_INTERVAL: Duration = Duration::from_millis(1);
/// `OursAdaptive`'s `max_latency` (the labels say 1 ms).
pub const ADAPTIVE_MAX_LATENCY: Duration = Duration::from_millis(1);

pub fn new_ring(size: usize) -> Res<RingBuf> {
    Ok(RingBuf::create(size)?)
}

/// The crate's kernel producer, plus what each call promises the consumer.
pub struct Producer {
    p: KernelProducer,
    /// A second program on the same map (so the same sequence counter) that
    /// commits with `BPF_RB_FORCE_WAKEUP`: a load ends with one record from
    /// it, so that no consumer waits out its timeout for the last records.
    force: KernelProducer,
    size: usize,
}

pub struct Produced {
    pub expect: Tally,
    /// The sequence number of the first record submitted.
    pub first_seq: u64,
    pub dropped: u64,
    pub ns_per_run: u64,
}

impl Producer {
    pub fn new(ring: &RingBuf, size: usize) -> Res<Self> {
        Self::with_wakeup(ring, size, Wakeup::Default)
    }

    /// The producer of a run with `consumer`. With none, the ring is drained
    /// by the benchmark between the producer's calls or rounds, and each
    /// such drain leaves it caught up, so a default wakeup would queue an
    /// irq_work at the next commit that no consumer asked for: the baseline
    /// commits with `BPF_RB_NO_WAKEUP` instead.
    pub fn for_consumer(
        ring: &RingBuf,
        size: usize,
        wakeup: Wakeup,
        consumer: Option<Kind>,
    ) -> Res<Self> {
        let wakeup = match (consumer, wakeup) {
            (None, Wakeup::Default) => Wakeup::NoWakeup,
            (_, w) => w,
        };
        Self::with_wakeup(ring, size, wakeup)
    }

    pub fn with_wakeup(ring: &RingBuf, size: usize, wakeup: Wakeup) -> Res<Self> {
        let cfg = |wakeup| ProducerConfig {
            size: RecordSize::Fixed(size),
            discard_every: None,
            wakeup,
        };
        Ok(Self {
            p: KernelProducer::new(ring, cfg(wakeup))?,
            force: KernelProducer::new(ring, cfg(Wakeup::ForceWakeup))?,
            size,
        })
    }

    /// Runs the producer `n` times. Submitted records carry the contiguous
    /// sequence numbers `[next_seq, next_seq + submitted)` (a failed
    /// reservation takes none), which gives the expected sum.
    pub fn produce(&mut self, n: u64) -> Res<Produced> {
        Self::run(&self.p, self.size, n)
    }

    /// One record committed with `BPF_RB_FORCE_WAKEUP`.
    pub fn produce_forced(&mut self) -> Res<Produced> {
        Self::run(&self.force, self.size, 1)
    }

    fn run(p: &KernelProducer, size: usize, n: u64) -> Res<Produced> {
        let lo = p.next_seq()?;
        let rep = p.produce(n)?;
        let s = rep.submitted;
        if p.next_seq()? != lo + s + rep.discarded {
            return Err("sequence counter moved by someone else".into());
        }
        let tri = |x: u64| (x as u128) * (x as u128).saturating_sub(1) / 2; // 0 + 1 + .. + (x-1)
        let sum = (tri(lo + s) - tri(lo)) as u64;
        Ok(Produced {
            expect: Tally {
                count: s,
                seq_sum: sum,
                bytes: s * size as u64,
            },
            first_seq: lo,
            dropped: rep.dropped,
            ns_per_run: u64::from(rep.ns_per_run),
        })
    }
}

pub fn check(what: &str, got: &Tally, want: &Tally) {
    if got != want {
        panic!(
            "{what}: consumer saw {got:?}, producer submitted {want:?}: records lost or corrupted"
        );
    }
}

pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity on the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!(
                "warning: could not pin to CPU {cpu}: {}",
                io::Error::last_os_error()
            );
        }
    }
}

/// The calling thread's user+system CPU time in ns, its voluntary context
/// switches (sleeps) and its involuntary ones (preemptions).
pub fn thread_usage() -> (u64, u64, u64) {
    // SAFETY: rusage is plain data.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    (
        tv(ru.ru_utime) + tv(ru.ru_stime),
        ru.ru_nvcsw as u64,
        ru.ru_nivcsw as u64,
    )
}

/// IRQ work interrupts handled so far by `cpu` (the `IWI` line of
/// `/proc/interrupts`; `None` where the kernel has no such line). The ring
/// buffer's wakeups are sent through irq_work queued by the producer's commit.
pub fn irq_work_count(cpu: usize) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/interrupts").ok()?;
    let l = s.lines().find(|l| l.trim_start().starts_with("IWI:"))?;
    l.split_whitespace().nth(1 + cpu)?.parse().ok()
}

pub struct Opts {
    pub warmup: usize,
    pub rounds: usize,
    pub ring_sizes: Vec<usize>,
    pub rec_sizes: Vec<usize>,
    pub stream_records: u64,
    pub stream_rings: Vec<usize>,
    pub cost_events: usize,
    pub cost_pause: Duration,
    /// Warm-up and measured rounds of the wake-policy scenario.
    pub policy_warmup: usize,
    pub policy_rounds: usize,
    pub quick: bool,
    pub scenarios: Vec<String>,
}

// ---------------------------------------------------------------- drain

pub struct DrainRow {
    pub ring: usize,
    pub size: usize,
    pub records: u64,
    /// Fill+drain cycles per sample (the fastest one counts).
    pub reps: u64,
    /// ns per record, per measured round, per kind (index = Kind::DRAIN position).
    pub ns: Vec<Vec<f64>>,
    /// `Reader::stats()` of the `consume` reader after this size's rounds
    /// (it has read this ring since it was opened), and the records it was
    /// given in that time.
    pub consume_stats: Option<(Stats, u64)>,
}

pub fn drain(o: &Opts) -> Res<Vec<DrainRow>> {
    pin_to_cpu(1);
    let kinds = Kind::DRAIN;
    let mut rows = Vec::new();
    for &rsize in &o.ring_sizes {
        let rings: Vec<RingBuf> = kinds.iter().map(|_| new_ring(rsize)).collect::<Res<_>>()?;
        let mut cons: Vec<Box<dyn Consumer>> = kinds
            .iter()
            .zip(&rings)
            .map(|(&k, r)| make(k, r))
            .collect::<Res<_>>()?;
        let consume = kinds.iter().position(|&k| k == Kind::OursConsume);
        let mut consume_given = 0u64;
        for &size in &o.rec_sizes {
            let stride = (size + 8).next_multiple_of(8);
            let n = (rsize / stride - 1) as u64;
            let mut prods: Vec<Producer> = rings
                .iter()
                .map(|r| Producer::new(r, size))
                .collect::<Res<_>>()?;
            // Small drains are short (1021 records of 4 KiB take a few µs):
            // a sample is the fastest of several fill+drain cycles, so one
            // interrupt or preemption does not decide a round.
            let reps = 65_536u64.div_ceil(n).clamp(1, 32);
            let mut ns = vec![Vec::new(); kinds.len()];
            let t0 = Instant::now();
            for round in 0..o.warmup + o.rounds {
                for j in 0..kinds.len() {
                    let i = (j + round) % kinds.len();
                    let mut best = Duration::MAX;
                    for _ in 0..reps {
                        let p = prods[i].produce(n)?;
                        if p.dropped != 0 || p.expect.count != n {
                            return Err(
                                format!("pre-fill of {n} records dropped {}", p.dropped).into()
                            );
                        }
                        let mut t = Tally::default();
                        let start = Instant::now();
                        cons[i].drain(&mut t)?;
                        best = best.min(start.elapsed());
                        check(kinds[i].label(), &t, &p.expect);
                        if Some(i) == consume {
                            consume_given += n;
                        }
                    }
                    if round >= o.warmup {
                        ns[i].push(best.as_nanos() as f64 / n as f64);
                    }
                }
            }
            eprintln!(
                "drain ring={} size={size}: {} records, {:.1}s",
                rsize >> 20,
                n,
                t0.elapsed().as_secs_f64()
            );
            rows.push(DrainRow {
                ring: rsize,
                size,
                reps,
                records: n,
                ns,
                consume_stats: consume
                    .and_then(|i| cons[i].stats())
                    .map(|st| (st, consume_given)),
            });
        }
    }
    Ok(rows)
}

// ---------------------------------------------------------------- stream

#[derive(Default, Clone)]
pub struct StreamRound {
    pub recs_per_s: f64,
    pub cpu_ns_per_rec: f64,
    pub waits_per_rec: f64,
    /// Voluntary context switches of the consumer thread per record: how
    /// often it actually slept (every library's sleeps counted the same way).
    pub sleeps_per_rec: f64,
    /// Involuntary context switches of the consumer thread in the run: how
    /// often it was preempted.
    pub preempted: u64,
    /// IRQ work interrupts on the producer's CPU per record while it
    /// produced (the kernel's wakeups go through irq_work), if countable.
    pub irq_work_per_rec: Option<f64>,
    pub dropped: u64,
    /// The longest time between the ends of two successive drains of the
    /// consumer (its wait, its drain, and any time it was not running), in µs.
    pub max_step_us: f64,
    /// The producer's own time per program run, as `BPF_PROG_TEST_RUN`
    /// reports it, averaged over the run's records.
    pub prod_ns_per_rec: f64,
    /// Latency from commit to delivery of every `LAT_EVERY`-th record, ns.
    pub latency_ns: Vec<u64>,
    /// Records delivered (the final forced record included).
    pub records: u64,
    /// The reader's telemetry at the end of the run (ours only).
    pub stats: Option<Stats>,
}

/// How the producer thread produces during one run.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    /// Program runs (records, or failed reserves) to make.
    pub total: u64,
    /// Runs per `produce` call (one `BPF_PROG_TEST_RUN`).
    pub chunk: u64,
    /// `Some((calls, pause))`: the producer sleeps `pause` after every
    /// `calls` calls.
    pub bursts: Option<(u64, Duration)>,
    /// The producer stops after this long even if `total` is not reached.
    pub max_time: Duration,
}

impl Load {
    /// `total` runs in calls of `chunk`, back to back.
    pub fn steady(total: u64, chunk: u64) -> Load {
        Load {
            total,
            chunk,
            bursts: None,
            max_time: Duration::from_secs(60),
        }
    }
}

/// Latency is computed for every record whose sequence number is a
/// multiple of this.
pub const LAT_EVERY: u64 = 4;

/// One `produce` call of a run: its first sequence number, the records it
/// submitted, and when it started and returned (ns after the run's base).
struct Call {
    first_seq: u64,
    n: u64,
    t0: u64,
    t1: u64,
}

/// What the stream consumer thread hands back.
struct ConsumerRun {
    t: Tally,
    max_step: Duration,
    waits: u64,
    /// CPU ns, voluntary and involuntary context switches.
    usage: (u64, u64, u64),
    elapsed: Duration,
    /// (records delivered so far, ns after the run's base) at the end of
    /// every step that delivered records.
    steps: Vec<(u64, u64)>,
    stats: Option<Stats>,
}

/// Latency from commit to delivery, in ns, of every `LAT_EVERY`-th record.
/// A record is delivered when the step (wait + drain) that handed it to
/// the application returns; record `i` of a call of `n` that ran from `t0`
/// to `t1` is taken as committed at `t0 + (t1 - t0) (i + 1) / n` (the
/// program runs back to back inside the call).
fn latencies(calls: &[Call], steps: &[(u64, u64)]) -> Vec<u64> {
    let Some(seq0) = calls.first().map(|c| c.first_seq) else {
        return vec![];
    };
    let mut out = Vec::new();
    for c in calls {
        for i in 0..c.n {
            let seq = c.first_seq + i;
            if !seq.is_multiple_of(LAT_EVERY) {
                continue;
            }
            let commit = c.t0 + (c.t1 - c.t0) * (i + 1) / c.n;
            let j = steps.partition_point(|&(count, _)| count <= seq - seq0);
            if let Some(&(_, at)) = steps.get(j) {
                out.push(at.saturating_sub(commit));
            }
        }
    }
    out
}

/// One run of `load` with `kind` consuming on CPU 1 while the producer runs
/// on CPU 0. With no consumer (`None`) the producer thread drains the ring
/// itself between its calls, outside the program runs it times.
pub fn stream_once(
    kind: Option<Kind>,
    ring: &RingBuf,
    prod: &mut Producer,
    load: &Load,
) -> Res<StreamRound> {
    let done = AtomicBool::new(false);
    let submitted = AtomicU64::new(0);
    // When the producer finished, in ns after `base` (valid once `done`).
    let base = Instant::now();
    let end_ns = AtomicU64::new(0);
    let go = Barrier::new(if kind.is_some() { 2 } else { 1 });
    std::thread::scope(|s| -> Res<StreamRound> {
        let cons = kind.map(|kind| {
            let (done, submitted, go, end_ns, base) = (&done, &submitted, &go, &end_ns, &base);
            s.spawn(move || -> Res<ConsumerRun> {
                pin_to_cpu(1);
                let mut c = make(kind, ring)?;
                go.wait();
                let start = Instant::now();
                let (cpu0, csw0, pre0) = thread_usage();
                let mut t = Tally::default();
                let mut waits = 0u64;
                let mut max_step = Duration::ZERO;
                let mut prev = start;
                let mut steps = Vec::new();
                loop {
                    // The longest time between the ends of two successive
                    // drains: the step (wait + drain) plus anything between
                    // steps, such as a preemption of this thread. Only time
                    // while the producer runs counts: an iteration during
                    // which it finishes counts up to its end (so a stall
                    // that spans the end is seen), not the timeout the last
                    // wait may sit out after the final record.
                    let producing = !done.load(Ordering::Acquire);
                    let before = t.count;
                    c.step(&mut t, 10)?;
                    let now = Instant::now();
                    if t.count != before {
                        steps.push((t.count, now.duration_since(*base).as_nanos() as u64));
                    }
                    if producing {
                        let until = if done.load(Ordering::Acquire) {
                            now.min(*base + Duration::from_nanos(end_ns.load(Ordering::Relaxed)))
                        } else {
                            now
                        };
                        max_step = max_step.max(until.saturating_duration_since(prev));
                    }
                    prev = now;
                    waits += 1;
                    if done.load(Ordering::Acquire) && t.count >= submitted.load(Ordering::Relaxed)
                    {
                        break;
                    }
                }
                let elapsed = start.elapsed();
                let (cpu1, csw1, pre1) = thread_usage();
                Ok(ConsumerRun {
                    t,
                    max_step,
                    waits,
                    usage: (cpu1 - cpu0, csw1 - csw0, pre1 - pre0),
                    elapsed,
                    steps,
                    stats: c.stats(),
                })
            })
        });
        pin_to_cpu(0);
        go.wait();
        // With no consumer, the producer thread drains the ring itself.
        let mut own = match kind {
            None => Some((raw::RawRing::new(ring.as_fd())?, Tally::default())),
            Some(_) => None,
        };
        let start = Instant::now();
        let iwi0 = irq_work_count(0);
        let mut expect = Tally::default();
        let (mut dropped, mut sent, mut prod_ns) = (0, 0, 0);
        let mut calls = Vec::new();
        while sent < load.total && start.elapsed() < load.max_time {
            let t0 = base.elapsed().as_nanos() as u64;
            let p = prod.produce(load.chunk.min(load.total - sent))?;
            let t1 = base.elapsed().as_nanos() as u64;
            calls.push(Call {
                first_seq: p.first_seq,
                n: p.expect.count,
                t0,
                t1,
            });
            expect.add(&p.expect);
            dropped += p.dropped;
            let runs = p.expect.count + p.dropped;
            sent += runs;
            prod_ns += p.ns_per_run * runs;
            if let Some((r, t)) = own.as_mut() {
                r.drain_ref(t);
            }
            if let Some((every, pause)) = load.bursts {
                if (calls.len() as u64).is_multiple_of(every) {
                    std::thread::sleep(pause);
                }
            }
        }
        let iwi1 = irq_work_count(0);
        let produced_for = start.elapsed();
        end_ns.store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
        // The last record forces a wakeup, so that no consumer sits out its
        // timeout waiting for records committed without one.
        let last = prod.produce_forced()?;
        expect.add(&last.expect);
        dropped += last.dropped;
        submitted.store(expect.count, Ordering::Relaxed);
        done.store(true, Ordering::Release);
        let prod_ns_per_rec = prod_ns as f64 / sent as f64;
        let irq_work = |count: u64| iwi0.zip(iwi1).map(|(a, b)| (b - a) as f64 / count as f64);
        let Some(cons) = cons else {
            let (mut r, mut t) = own.expect("no consumer: the producer drains");
            r.drain_ref(&mut t);
            check("producer's own drain", &t, &expect);
            return Ok(StreamRound {
                recs_per_s: t.count as f64 / produced_for.as_secs_f64(),
                irq_work_per_rec: irq_work(t.count),
                dropped,
                prod_ns_per_rec,
                records: t.count,
                ..StreamRound::default()
            });
        };
        let run = cons.join().unwrap()?;
        let (t, label) = (run.t, kind.map_or("none", Kind::label));
        check(label, &t, &expect);
        let (cpu, csw, pre) = run.usage;
        Ok(StreamRound {
            recs_per_s: t.count as f64 / run.elapsed.as_secs_f64(),
            cpu_ns_per_rec: cpu as f64 / t.count as f64,
            waits_per_rec: run.waits as f64 / t.count as f64,
            sleeps_per_rec: csw as f64 / t.count as f64,
            preempted: pre,
            irq_work_per_rec: irq_work(t.count),
            dropped,
            max_step_us: run.max_step.as_secs_f64() * 1e6,
            prod_ns_per_rec,
            latency_ns: latencies(&calls, &run.steps),
            records: t.count,
            stats: run.stats,
        })
    })
}

pub struct StreamRing {
    pub ring: usize,
    /// Per kind, per measured round.
    pub rounds: Vec<Vec<StreamRound>>,
}

pub fn stream(o: &Opts) -> Res<Vec<StreamRing>> {
    o.stream_rings
        .iter()
        .map(|&r| {
            Ok(StreamRing {
                ring: r,
                rounds: stream_ring(o, r)?,
            })
        })
        .collect()
}

pub fn stream_ring(o: &Opts, ring_size: usize) -> Res<Vec<Vec<StreamRound>>> {
    let kinds = Kind::ALL;
    let rings: Vec<RingBuf> = kinds
        .iter()
        .map(|_| new_ring(ring_size))
        .collect::<Res<_>>()?;
    let mut prods: Vec<Producer> = rings
        .iter()
        .map(|r| Producer::new(r, 64))
        .collect::<Res<_>>()?;
    let mut res = vec![Vec::new(); kinds.len()];
    let t0 = Instant::now();
    for round in 0..o.warmup + o.rounds {
        for j in 0..kinds.len() {
            let i = (j + round) % kinds.len();
            let load = Load::steady(o.stream_records, 256);
            let r = stream_once(Some(kinds[i]), &rings[i], &mut prods[i], &load)?;
            if round >= o.warmup {
                res[i].push(r);
            }
        }
    }
    eprintln!(
        "stream ring={} MiB: {:.1}s",
        ring_size >> 20,
        t0.elapsed().as_secs_f64()
    );
    Ok(res)
}

// ---------------------------------------------------------------- producer cost

/// Producer ns per record, one record then a pause, with `kind` blocked in its
/// wait on the other CPU (None: no consumer at all).
pub fn cost_once(
    kind: Option<Kind>,
    ring: &RingBuf,
    prod: &mut Producer,
    o: &Opts,
) -> Res<Vec<f64>> {
    let done = AtomicBool::new(false);
    let submitted = AtomicU64::new(0);
    let go = Barrier::new(2);
    let mut samples = Vec::with_capacity(o.cost_events);
    std::thread::scope(|s| -> Res<()> {
        let cons = kind.map(|kind| {
            let (done, submitted, go) = (&done, &submitted, &go);
            s.spawn(move || -> Res<Tally> {
                pin_to_cpu(1);
                let mut c = make(kind, ring)?;
                let mut t = Tally::default();
                c.drain(&mut t)?; // catch up with earlier rounds' leftovers: none expected
                go.wait();
                loop {
                    c.step(&mut t, 50)?;
                    if done.load(Ordering::Acquire) && t.count >= submitted.load(Ordering::Relaxed)
                    {
                        break;
                    }
                }
                Ok(t)
            })
        });
        pin_to_cpu(0);
        if kind.is_some() {
            go.wait();
            std::thread::sleep(Duration::from_millis(2)); // let it block
        }
        let mut expect = Tally::default();
        for _ in 0..o.cost_events {
            let p = prod.produce(1)?;
            expect.add(&p.expect);
            samples.push(p.ns_per_run as f64);
            std::thread::sleep(o.cost_pause);
        }
        submitted.store(expect.count, Ordering::Relaxed);
        done.store(true, Ordering::Release);
        if let Some(h) = cons {
            let t = h.join().unwrap()?;
            check("producer-cost consumer", &t, &expect);
        }
        Ok(())
    })?;
    Ok(samples)
}

/// One consumer's producer cost: per measured round, the median and the
/// mean of the producer's ns per record.
#[derive(Clone, Default)]
pub struct CostRow {
    pub median: Vec<f64>,
    pub mean: Vec<f64>,
}

pub fn cost(o: &Opts) -> Res<Vec<CostRow>> {
    let mut kinds: Vec<Option<Kind>> = vec![None];
    kinds.extend(Kind::ALL.iter().map(|&k| Some(k)));
    let rings: Vec<RingBuf> = kinds
        .iter()
        .map(|_| new_ring(1 << 20))
        .collect::<Res<_>>()?;
    // With no consumer the ring is drained after every round (see
    // `Producer::for_consumer`).
    let mut prods: Vec<Producer> = kinds
        .iter()
        .zip(&rings)
        .map(|(&k, r)| Producer::for_consumer(r, 64, Wakeup::Default, k))
        .collect::<Res<_>>()?;
    let mut res = vec![CostRow::default(); kinds.len()];
    let t0 = Instant::now();
    for round in 0..o.warmup + o.rounds {
        for j in 0..kinds.len() {
            let i = (j + round) % kinds.len();
            let s = cost_once(kinds[i], &rings[i], &mut prods[i], o)?;
            // With no consumer the ring fills up over rounds: keep it drained.
            if kinds[i].is_none() {
                let mut t = Tally::default();
                raw::RawRing::new(rings[i].as_fd())?.drain_ref(&mut t);
            }
            if round >= o.warmup {
                res[i].median.push(report::median(&s));
                res[i].mean.push(s.iter().sum::<f64>() / s.len() as f64);
            }
        }
    }
    eprintln!("producer cost: {:.1}s", t0.elapsed().as_secs_f64());
    Ok(res)
}

fn profile_drain(size: usize) -> Res<()> {
    let rsize = 4 << 20;
    let n = (rsize / (size + 8).next_multiple_of(8) - 1) as u64;
    for &k in Kind::DRAIN {
        let ring = new_ring(rsize)?;
        let mut c = make(k, &ring)?;
        let mut p = Producer::new(&ring, size)?;
        for _ in 0..2 {
            let e = p.produce(n)?;
            let mut t = Tally::default();
            c.drain(&mut t)?;
            check(k.label(), &t, &e.expect);
        }
        println!("{:?}: {} records drained twice", k, n);
    }
    Ok(())
}

/// The function whose cost is one consumer's drain, as a callgrind
/// `--toggle-collect` pattern.
fn drain_symbol(k: Kind) -> &'static str {
    match k {
        Kind::OursZeroCopy | Kind::OursPoll => "*Ours::drain_zero_copy",
        Kind::OursTryZeroCopy => "*Ours::drain_try_zero_copy",
        Kind::OursConsume | Kind::OursInterval | Kind::OursAdaptive => "*Ours::drain_consume",
        Kind::OursReadInto => "*Ours::drain_read_into",
        Kind::OursRead => "*Ours::drain_read",
        Kind::Libbpf => "<ringbuf_bench::libs::Libbpf as *>::drain",
        Kind::LibbpfRs => "<ringbuf_bench::libs::LibbpfRs as *>::drain",
        Kind::Aya => "<ringbuf_bench::libs::Aya as *>::drain",
        Kind::RawRef => "*RawRing::drain_ref",
        Kind::RawCopy => "*RawRing::drain_copy",
    }
}

/// The targets of the instruction counts (issue 7 §4), at 16 B: a consumer,
/// its reference, the bound on the ratio, and what it is.
const CALLGRIND_TARGETS: [(Kind, Kind, f64, &str); 4] = [
    (
        Kind::OursZeroCopy,
        Kind::RawRef,
        1.3,
        "`read_zero_copy` + one `commit` ≤ 1.3× raw reference",
    ),
    (
        Kind::OursTryZeroCopy,
        Kind::RawRef,
        1.3,
        "`Consumer::try_read_zero_copy` + one `commit` ≤ 1.3× raw reference",
    ),
    (
        Kind::OursConsume,
        Kind::RawRef,
        1.3,
        "`consume` ≤ 1.3× raw reference",
    ),
    (
        Kind::OursReadInto,
        Kind::RawCopy,
        1.3,
        "`read_into` ≤ 1.3× raw copy",
    ),
];

/// Instructions (Ir) and data reads + writes (Dr + Dw) per record of one
/// consumer's drain of `size`-byte records, counted by running this binary
/// under valgrind's callgrind with --profile-drain.
fn callgrind_count(
    exe: &std::path::Path,
    out: &std::path::Path,
    k: Kind,
    size: usize,
) -> Res<(f64, f64)> {
    let n = (4usize << 20) / (size + 8).next_multiple_of(8) - 1;
    let st = std::process::Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg("--cache-sim=yes")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg("--collect-atstart=no")
        .arg(format!("--toggle-collect={}", drain_symbol(k)))
        .arg(exe)
        .arg("--profile-drain")
        .arg(size.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()?;
    if !st.success() {
        return Err(format!("valgrind failed for {k:?} (is valgrind installed?)").into());
    }
    let text = std::fs::read_to_string(out)?;
    let events: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix("events:"))
        .ok_or("no events line")?
        .split_whitespace()
        .collect();
    let totals: Vec<u64> = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .ok_or("no summary line")?
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let get = |name: &str| {
        events
            .iter()
            .position(|e| *e == name)
            .and_then(|i| totals.get(i))
            .copied()
            .unwrap_or(0)
    };
    let per = |v: u64| v as f64 / (2 * n) as f64;
    Ok((per(get("Ir")), per(get("Dr") + get("Dw"))))
}

/// Instructions and data accesses per record of each consumer's drain,
/// counted by valgrind's callgrind (deterministic, unlike time on this
/// machine), then the §4 targets on them, marked met or missed.
fn callgrind_table() -> Res<String> {
    use std::fmt::Write;
    let exe = std::env::current_exe()?;
    let sizes = [16usize, 256, 4096];
    let out = std::env::temp_dir().join(format!("ringbuf-bench-cg-{}.out", std::process::id()));
    // Per consumer (Kind::DRAIN order), per size: (Ir, Dr + Dw) per record.
    let mut counts: Vec<Vec<(f64, f64)>> = Vec::new();
    for &k in Kind::DRAIN {
        let row = sizes
            .iter()
            .map(|&size| callgrind_count(&exe, &out, k, size))
            .collect::<Res<Vec<_>>>()?;
        counts.push(row);
        eprintln!("callgrind {k:?} done");
    }
    let _ = std::fs::remove_file(&out);
    let ir16 = |k: Kind| {
        let i = Kind::DRAIN.iter().position(|&x| x == k).unwrap();
        counts[i][0].0
    };

    let mut m = String::from(
        "### Instructions per record (callgrind)\n\n\
         Counted by `valgrind --tool=callgrind --cache-sim=yes --collect-atstart=no --toggle-collect=<drain function>` \
         over two drains of a pre-filled 4 MiB ring (`ringbuf-bench --profile-drain SIZE`). \
         Instructions (Ir) and data reads + writes (Dr + Dw) per record, everything the drain calls included. \
         User-space instructions only, and the same on every run: the figure to compare when wall-clock ratios swing.\n\n",
    );
    let _ = writeln!(
        m,
        "| target (16 B records) | instructions per record | reference | ratio | result |\n|---|---:|---:|---:|---|"
    );
    for (k, base, limit, what) in CALLGRIND_TARGETS {
        let (a, b) = (ir16(k), ir16(base));
        let _ = writeln!(
            m,
            "| {what} | {a:.1} | {b:.1} | {:.2}× | {} |",
            a / b,
            report::mark(a <= limit * b)
        );
    }
    m.push_str("\n| consumer |");
    for s in sizes {
        let _ = write!(
            m,
            " {} Ir | {} Dr+Dw |",
            report::size_label(s),
            report::size_label(s)
        );
    }
    m.push_str("\n|---|");
    for _ in sizes {
        m.push_str("---:|---:|");
    }
    m.push('\n');
    for (&k, row) in Kind::DRAIN.iter().zip(&counts) {
        let _ = write!(m, "| {} |", k.label());
        for (ir, d) in row {
            let _ = write!(m, " {ir:.1} | {d:.1} |");
        }
        m.push('\n');
    }
    m.push('\n');
    Ok(m)
}

const USAGE: &str =
    "ringbuf-bench [--quick] [--scenario drain,stream,cost,policies,rings,tokio,spectator,callgrind] [--rounds N] [--warmup N]
              [--policy-rounds N]
              [--template FILE --out FILE] [--rustc VERSION] [--command TEXT]

Runs the side-by-side benchmark (needs root or CAP_BPF) and prints the result
tables as Markdown; with --template/--out, writes FILE with the template's
{{RESULTS}} line replaced by them. scripts/bench.sh is the usual way to run it.";

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let quick = args.iter().any(|a| a == "--quick");
    let mut o = Opts {
        warmup: 2,
        rounds: 9,
        ring_sizes: vec![4 << 20, 64 << 20],
        rec_sizes: vec![16, 64, 256, 1024, 4096],
        stream_records: 500_000,
        stream_rings: vec![1 << 20, 16 << 20],
        cost_events: 100,
        cost_pause: Duration::from_micros(200),
        policy_warmup: 1,
        policy_rounds: 5,
        quick,
        scenarios: vec![
            "drain".into(),
            "stream".into(),
            "cost".into(),
            "policies".into(),
            "rings".into(),
            "tokio".into(),
            "spectator".into(),
            "callgrind".into(),
        ],
    };
    if quick {
        o.warmup = 1;
        o.rounds = 3;
        o.policy_rounds = 2;
        o.ring_sizes = vec![4 << 20];
        o.stream_records = 100_000;
        o.cost_events = 20;
        o.scenarios.retain(|s| s != "callgrind");
    }
    if let Some(v) = arg(&args, "--scenario") {
        o.scenarios = v.split(',').map(String::from).collect();
    }
    if let Some(v) = arg(&args, "--rounds") {
        o.rounds = v.parse()?;
    }
    if let Some(v) = arg(&args, "--warmup") {
        o.warmup = v.parse()?;
    }
    if let Some(v) = arg(&args, "--policy-rounds") {
        o.policy_rounds = v.parse()?;
    }
    if let Some(size) = arg(&args, "--profile-drain") {
        // For valgrind --tool=callgrind: every consumer drains one pre-filled
        // 4 MiB ring of `size`-byte records, twice. See BENCHMARKS.md.
        return profile_drain(size.parse()?);
    }
    let load_before = report::loadavg();
    let t0 = Instant::now();
    let has = |n: &str| o.scenarios.iter().any(|s| s == n);
    let d = if has("drain") { drain(&o)? } else { vec![] };
    let s = if has("stream") { stream(&o)? } else { vec![] };
    let c = if has("cost") { cost(&o)? } else { vec![] };
    let p = if has("policies") {
        policies::run(&o)?
    } else {
        vec![]
    };
    // Many rings (issue 9): "rings" runs both tables; "rings-drain" and
    // "rings-sparse" one each.
    let rd = if has("rings") || has("rings-drain") {
        Some(rings::drain(&o)?)
    } else {
        None
    };
    let rs = if has("rings") || has("rings-sparse") {
        Some(rings::sparse(&o)?)
    } else {
        None
    };
    let tk = if has("tokio") {
        Some(asyncs::run(&o)?)
    } else {
        None
    };
    let sp = if has("spectator") {
        Some(spectate::run(&o)?)
    } else {
        None
    };
    let cg = if has("callgrind") {
        callgrind_table()?
    } else {
        String::new()
    };
    let took = t0.elapsed();
    let rustc = arg(&args, "--rustc").unwrap_or_else(|| "unknown".into());
    let command = arg(&args, "--command").unwrap_or_else(|| args.join(" "));
    let mut md = format!(
        "Generated by `{command}`.\n\n### Machine\n\n{}| load average (1, 5, 15 min) before / after the run | {load_before} / {} |\n\n",
        report::machine(&rustc),
        report::loadavg()
    );
    md.push_str(&report::render(&o, &d, &s, &c, &p, took));
    md.push_str(&rings::render(rd.as_ref(), rs.as_ref()));
    if let Some(tk) = &tk {
        md.push_str(&asyncs::render(tk));
    }
    if let Some(sp) = &sp {
        md.push_str(&spectate::render(sp));
    }
    md.push_str(&cg);
    match (arg(&args, "--template"), arg(&args, "--out")) {
        (Some(t), Some(out)) => {
            let tmpl = std::fs::read_to_string(&t)?;
            if !tmpl.contains("{{RESULTS}}") {
                return Err(format!("{t} has no {{{{RESULTS}}}} line").into());
            }
            std::fs::write(&out, tmpl.replace("{{RESULTS}}", md.trim_end()))?;
            eprintln!("wrote {out}");
        }
        _ => println!("{md}"),
    }
    Ok(())
}
