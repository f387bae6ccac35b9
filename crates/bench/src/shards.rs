//! Thread per shard (issue 9): the rings of one drain split over both CPUs,
//! one `RingSet` per thread, against one `RingSet` of all of them on one
//! thread ("Many rings, thread per shard").
//!
//! Where a ring's records were written matters as much as who reads them:
//! a record still in the cache of the CPU that wrote it is read fastest
//! there. So the rings are filled (untimed) as per-CPU rings are: half of
//! them by the kernel producer on CPU 0, half on CPU 1, in every layout.
//! One thread (CPU 1) drains all of them; two threads drain one half each,
//! either on the CPU that wrote it (a shard's thread pinned next to its
//! producers) or on the other one. The second thread, pinned to CPU 0,
//! spins on a generation counter (so no futex wakeup is timed). A sample is
//! the wall time from the start signal until every ring is drained.

use std::fmt::Write;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bpf_ringbuf::{RingBuf, RingSet};

use crate::report::{median, ratios, size_label};
use crate::rings::{RECORD, TOTAL};
use crate::{check, new_ring, pin_to_cpu, Opts, Producer, Res, Tally};

/// Rings in all (as the many-ring drain's target column), and their size.
pub const RINGS: usize = 64;

/// One shard: a set of rings and the producers that fill them.
struct Shard {
    set: RingSet<usize>,
    prods: Vec<Producer>,
    per_ring: u64,
}

impl Shard {
    fn new(rings: &[RingBuf], per_ring: u64) -> Res<Shard> {
        let mut set = RingSet::new()?;
        for (i, r) in rings.iter().enumerate() {
            set.insert(i, r)?;
        }
        let prods = rings
            .iter()
            .map(|r| Producer::new(r, RECORD))
            .collect::<Res<_>>()?;
        Ok(Shard {
            set,
            prods,
            per_ring,
        })
    }

    /// Fills every ring (untimed), ring `i` by the kernel producer on CPU
    /// `cpu_of(i)`; returns what was given. Ends pinned to CPU 1.
    fn fill(&mut self, cpu_of: impl Fn(usize) -> usize) -> Res<Tally> {
        let mut want = Tally::default();
        for cpu in 0..2 {
            pin_to_cpu(cpu);
            for (i, p) in self.prods.iter_mut().enumerate() {
                if cpu_of(i) != cpu {
                    continue;
                }
                let r = p.produce(self.per_ring)?;
                if r.dropped != 0 {
                    return Err(format!("pre-fill dropped {} records", r.dropped).into());
                }
                want.add(&r.expect);
            }
        }
        pin_to_cpu(1);
        Ok(want)
    }

    /// Polls until `want` records are in `t`.
    #[inline(never)]
    fn drain(set: &mut RingSet<usize>, t: &mut Tally, want: u64) -> Res<()> {
        while t.count < want {
            set.poll(|_, rec| {
                t.record(rec);
                ControlFlow::Continue(())
            })?;
        }
        Ok(())
    }
}

pub struct ShardResult {
    /// Per measured round: wall ns per record, one set of all rings on one thread.
    pub one: Vec<f64>,
    /// Per measured round: wall ns per record, two sets on two threads, each
    /// on the CPU that wrote its rings.
    pub two: Vec<f64>,
    /// The same, each thread on the other CPU.
    pub crossed: Vec<f64>,
    pub records: u64,
    pub reps: u64,
    pub rounds: usize,
    pub warmup: usize,
}

/// The second thread's side: the set it drains, and the start/done signals.
struct Remote {
    /// The generation to run; `u64::MAX` ends the thread.
    go: AtomicU64,
    /// The last generation drained.
    done: AtomicU64,
    /// How many records the next generation must deliver.
    want: AtomicU64,
    /// What it drained, checked by the main thread after `done`.
    tally: Mutex<Tally>,
}

pub fn run(o: &Opts) -> Res<ShardResult> {
    pin_to_cpu(1);
    let t0 = Instant::now();
    let size = TOTAL / RINGS;
    let per_ring = (size / (RECORD + 8).next_multiple_of(8) - 1) as u64;
    // One thread, one set of every ring.
    let one_rings: Vec<RingBuf> = (0..RINGS).map(|_| new_ring(size)).collect::<Res<_>>()?;
    let mut one = Shard::new(&one_rings, per_ring)?;
    // Two threads: rings 0..32 on this one, 32..64 on CPU 0.
    let two_rings: Vec<RingBuf> = (0..RINGS).map(|_| new_ring(size)).collect::<Res<_>>()?;
    let (near, far) = two_rings.split_at(RINGS / 2);
    let mut mine = Shard::new(near, per_ring)?;
    let mut theirs = Shard::new(far, per_ring)?;
    let remote = Arc::new(Remote {
        go: AtomicU64::new(0),
        done: AtomicU64::new(0),
        want: AtomicU64::new(0),
        tally: Mutex::new(Tally::default()),
    });
    let far_set = std::mem::replace(&mut theirs.set, RingSet::new()?);
    let worker = {
        let remote = Arc::clone(&remote);
        thread::spawn(move || -> Res<()> {
            pin_to_cpu(0);
            let mut set = far_set;
            let mut gen = 0;
            loop {
                let g = loop {
                    let g = remote.go.load(Ordering::Acquire);
                    if g != gen {
                        break g;
                    }
                    std::hint::spin_loop();
                };
                if g == u64::MAX {
                    return Ok(());
                }
                gen = g;
                let mut t = Tally::default();
                Shard::drain(&mut set, &mut t, remote.want.load(Ordering::Relaxed))?;
                *remote.tally.lock().unwrap() = t;
                remote.done.store(gen, Ordering::Release);
            }
        })
    };
    let records = per_ring * RINGS as u64;
    let reps = 4;
    let mut out = ShardResult {
        one: Vec::new(),
        two: Vec::new(),
        crossed: Vec::new(),
        records,
        reps,
        rounds: o.rounds,
        warmup: o.warmup,
    };
    let mut gen = 0u64;
    let result = (|| -> Res<()> {
        for round in 0..o.warmup + o.rounds {
            for j in 0..3 {
                // 0: one thread; 1: two, each next to its rings' producer;
                // 2: two, each on the other CPU.
                let layout = (j + round) % 3;
                let mut best = Duration::MAX;
                for _ in 0..reps {
                    if layout == 0 {
                        // Half the rings written on each CPU.
                        let want = one.fill(|i| if i < RINGS / 2 { 1 } else { 0 })?;
                        let mut t = Tally::default();
                        let start = Instant::now();
                        Shard::drain(&mut one.set, &mut t, want.count)?;
                        best = best.min(start.elapsed());
                        check("one RingSet, one thread", &t, &want);
                    } else {
                        // This thread runs on CPU 1, the other on CPU 0.
                        let (cpu_mine, cpu_theirs) = if layout == 1 { (1, 0) } else { (0, 1) };
                        let want_mine = mine.fill(|_| cpu_mine)?;
                        let want_theirs = theirs.fill(|_| cpu_theirs)?;
                        remote.want.store(want_theirs.count, Ordering::Relaxed);
                        gen += 1;
                        let mut t = Tally::default();
                        let start = Instant::now();
                        remote.go.store(gen, Ordering::Release);
                        Shard::drain(&mut mine.set, &mut t, want_mine.count)?;
                        while remote.done.load(Ordering::Acquire) != gen {
                            if worker.is_finished() {
                                return Err("the shard thread failed".into());
                            }
                            std::hint::spin_loop();
                        }
                        best = best.min(start.elapsed());
                        check("two RingSets, this thread", &t, &want_mine);
                        check(
                            "two RingSets, the other thread",
                            &remote.tally.lock().unwrap(),
                            &want_theirs,
                        );
                    }
                }
                if round >= o.warmup {
                    let ns = best.as_nanos() as f64 / records as f64;
                    match layout {
                        0 => out.one.push(ns),
                        1 => out.two.push(ns),
                        _ => out.crossed.push(ns),
                    }
                }
            }
        }
        Ok(())
    })();
    remote.go.store(u64::MAX, Ordering::Release);
    let joined = worker.join().map_err(|_| "the shard thread panicked")?;
    result?;
    joined?;
    eprintln!("rings shards: {:.1}s", t0.elapsed().as_secs_f64());
    Ok(out)
}

pub fn render(r: &ShardResult) -> String {
    let mut m = String::new();
    let _ = writeln!(
        m,
        "### Many rings, thread per shard: wall ns per record, both CPUs\n\n\
         {RINGS} rings of {} ({} records of {RECORD} B per drain), pre-filled (untimed) as \
         per-CPU rings are: half of them by the kernel producer on CPU 0, half on CPU 1. \
         Then drained: by one `RingSet` of all {RINGS} on one thread (pinned to CPU 1), or split \
         in two shards of {} rings, one `RingSet` per thread (this thread on CPU 1, a second \
         thread on CPU 0 that spins on a start signal), each thread draining the half written \
         on its own CPU, or the half written on the other CPU. A sample is the wall time from \
         the start signal until every ring is drained (the fastest of {} fill+drain cycles); {} \
         warm-up + {} measured rounds. Speedup: one thread's time over the layout's, median of \
         the per-round ratios.\n",
        size_label(TOTAL / RINGS),
        r.records,
        RINGS / 2,
        r.reps,
        r.warmup,
        r.rounds
    );
    let _ = writeln!(
        m,
        "| layout | ns per record (median) | records/s | speedup |\n|---|---:|---:|---:|"
    );
    let one = median(&r.one);
    let _ = writeln!(
        m,
        "| one `RingSet` of {RINGS} rings, one thread | {one:.2} | {:.1} M | 1.00× |",
        1e3 / one
    );
    for (label, v) in [
        ("each on the CPU that wrote its rings", &r.two),
        ("each on the other CPU", &r.crossed),
    ] {
        let ns = median(v);
        let _ = writeln!(
            m,
            "| two `RingSet`s of {} rings, one thread each, {label} | {ns:.2} | {:.1} M | {:.2}× |",
            RINGS / 2,
            1e3 / ns,
            median(&ratios(&r.one, v))
        );
    }
    m.push('\n');
    m
}
