//! Many rings (issue 9): `RingSet` against one ring's raw reference, libbpf's
//! `ring_buffer__add` and libbpf-rs's `RingBufferBuilder` over the same rings
//! ("Many rings, drain"), and the cost of a poll round with idle rings
//! ("Many rings, sparse").

use std::fmt::Write;
use std::ops::ControlFlow;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use bpf_ringbuf::{RingBuf, RingSet};

use crate::libs::{Libbpf, LibbpfRs};
use crate::raw::RawRing;
use crate::report::{mark, median, ratios, size_label};
use crate::{check, new_ring, pin_to_cpu, Consumer, Opts, Producer, Res, Tally};

/// The rings of the drain scenario share this much: 4 MiB in all, split
/// evenly (256 rings of 16 KiB), as the single-ring reference's one ring.
pub const TOTAL: usize = 4 << 20;
/// Payload bytes per record.
pub const RECORD: usize = 64;
/// Ring counts of the drain scenario.
pub const COUNTS: [usize; 5] = [1, 4, 16, 64, 256];
/// Rings in the sparse scenario's big set, and the size of each.
pub const SPARSE_RINGS: usize = 256;
pub const SPARSE_RING_SIZE: usize = 16 << 10;
/// Poll rounds per sample in the sparse scenario.
pub const SPARSE_POLLS: usize = 2000;
/// Target: a set of 64 rings within this of the single-ring reference.
pub const DRAIN_LIMIT: f64 = 1.10;
/// Target: the 256-ring poll round within this of the 1-ring one.
pub const SPARSE_LIMIT: f64 = 1.2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Multi {
    /// `RingSet::poll` until every record is delivered.
    SetPoll,
    /// `RingSet::try_consume` until every record is delivered.
    SetTry,
    /// `ring_buffer__new` + `ring_buffer__add` per ring, one `ring_buffer__consume`.
    Libbpf,
    /// `RingBufferBuilder::add` per ring, one `RingBuffer::consume`.
    LibbpfRs,
    /// The raw reference loop over each ring in turn: the floor for N rings.
    RawEach,
}

impl Multi {
    pub const ALL: [Multi; 5] = [
        Multi::SetPoll,
        Multi::SetTry,
        Multi::Libbpf,
        Multi::LibbpfRs,
        Multi::RawEach,
    ];
    pub fn label(self) -> &'static str {
        match self {
            Multi::SetPoll => "ours `RingSet::poll` (default budget)",
            Multi::SetTry => "ours `RingSet::try_consume` (default budget)",
            Multi::Libbpf => "libbpf C `ring_buffer__add` + `ring_buffer__consume`",
            Multi::LibbpfRs => "libbpf-rs `RingBufferBuilder` + `RingBuffer::consume`",
            Multi::RawEach => "raw reference, each ring in turn",
        }
    }
}

/// One consumer of a group of rings.
#[expect(
    clippy::large_enum_variant,
    reason = "a few readers, built once per ring count; boxing would add an indirection to the timed drain"
)]
enum Reader {
    Set(RingSet<usize>, bool),
    Libbpf(Libbpf),
    LibbpfRs(LibbpfRs),
    Raw(Vec<RawRing>),
}

fn tally(t: &mut Tally, rec: &[u8]) -> ControlFlow<()> {
    t.record(rec);
    ControlFlow::Continue(())
}

impl Reader {
    fn new(kind: Multi, rings: &[RingBuf]) -> Res<Reader> {
        let fds: Vec<BorrowedFd<'_>> = rings.iter().map(|r| r.as_fd()).collect();
        Ok(match kind {
            Multi::SetPoll | Multi::SetTry => {
                let mut set = RingSet::new()?;
                for (i, r) in rings.iter().enumerate() {
                    set.insert(i, r)?;
                }
                Reader::Set(set, kind == Multi::SetPoll)
            }
            Multi::Libbpf => {
                let mut l = Libbpf::new(fds[0])?;
                for &fd in &fds[1..] {
                    l.add(fd)?;
                }
                Reader::Libbpf(l)
            }
            Multi::LibbpfRs => Reader::LibbpfRs(LibbpfRs::with_maps(&fds)?),
            Multi::RawEach => Reader::Raw(
                fds.iter()
                    .map(|&fd| RawRing::new(fd))
                    .collect::<std::io::Result<_>>()?,
            ),
        })
    }

    /// Reads until `want` records are in `t` (the rings hold exactly that many).
    #[inline(never)]
    fn drain(&mut self, t: &mut Tally, want: u64) -> Res<()> {
        match self {
            Reader::Set(set, poll) => {
                while t.count < want {
                    if *poll {
                        set.poll(|_, rec| tally(t, rec))?;
                    } else {
                        set.try_consume(|_, rec| tally(t, rec))?;
                    }
                }
            }
            Reader::Libbpf(l) => l.drain(t)?,
            Reader::LibbpfRs(l) => l.drain(t)?,
            Reader::Raw(rs) => rs.iter_mut().for_each(|r| r.drain_ref(t)),
        }
        Ok(())
    }
}

pub struct DrainResult {
    /// Per ring count (COUNTS order): per kind (Multi::ALL order), ns per
    /// record per measured round.
    pub ns: Vec<Vec<Vec<f64>>>,
    /// The single 4 MiB ring's raw reference, per measured round, measured
    /// in the same rounds as each ring count.
    pub reference: Vec<Vec<f64>>,
    /// Records per drain (all rings together), per ring count.
    pub records: Vec<u64>,
    /// Records of the reference's drain.
    pub ref_records: u64,
    pub reps: u64,
    pub rounds: usize,
    pub warmup: usize,
}

/// Pre-fills every ring of `rings` with as many records as fit; returns what was given.
fn fill(prods: &mut [Producer], per_ring: u64) -> Res<Tally> {
    let mut e = Tally::default();
    for p in prods {
        let r = p.produce(per_ring)?;
        if r.dropped != 0 || r.expect.count != per_ring {
            return Err(format!("pre-fill of {per_ring} records dropped {}", r.dropped).into());
        }
        e.add(&r.expect);
    }
    Ok(e)
}

fn per_ring(ring_size: usize) -> u64 {
    (ring_size / (RECORD + 8).next_multiple_of(8) - 1) as u64
}

/// Many rings, drain: for each ring count, every consumer gets its own
/// rings; a round fills them and times one drain of each (the fastest of
/// `reps` fill+drain cycles), the single-ring reference included.
pub fn drain(o: &Opts) -> Res<DrainResult> {
    pin_to_cpu(1);
    let (warmup, rounds) = (o.warmup, o.rounds);
    let ref_ring = new_ring(TOTAL)?;
    let mut ref_prod = Producer::new(&ref_ring, RECORD)?;
    let mut ref_reader = crate::libs::RawRef(RawRing::new(ref_ring.as_fd())?);
    let ref_n = per_ring(TOTAL);
    let reps = 65_536u64.div_ceil(ref_n).clamp(1, 32);
    let mut out = DrainResult {
        ns: Vec::new(),
        reference: Vec::new(),
        records: Vec::new(),
        ref_records: ref_n,
        reps,
        rounds,
        warmup,
    };
    for &count in &COUNTS {
        let t0 = Instant::now();
        let size = TOTAL / count;
        let n = per_ring(size);
        let rings: Vec<Vec<RingBuf>> = Multi::ALL
            .iter()
            .map(|_| (0..count).map(|_| new_ring(size)).collect::<Res<_>>())
            .collect::<Res<_>>()?;
        let mut prods: Vec<Vec<Producer>> = rings
            .iter()
            .map(|rs| rs.iter().map(|r| Producer::new(r, RECORD)).collect())
            .collect::<Res<_>>()?;
        let mut readers: Vec<Reader> = Multi::ALL
            .iter()
            .zip(&rings)
            .map(|(&k, rs)| Reader::new(k, rs))
            .collect::<Res<_>>()?;
        let slots = Multi::ALL.len() + 1; // the last one is the reference
        let mut ns = vec![Vec::new(); slots];
        for round in 0..warmup + rounds {
            for j in 0..slots {
                let i = (j + round) % slots;
                let mut best = Duration::MAX;
                for _ in 0..reps {
                    let mut t = Tally::default();
                    let (elapsed, want, what) = if i == Multi::ALL.len() {
                        let want = fill(std::slice::from_mut(&mut ref_prod), ref_n)?;
                        let start = Instant::now();
                        ref_reader.drain(&mut t)?;
                        (start.elapsed(), want, "raw reference")
                    } else {
                        let want = fill(&mut prods[i], n)?;
                        let start = Instant::now();
                        readers[i].drain(&mut t, want.count)?;
                        (start.elapsed(), want, Multi::ALL[i].label())
                    };
                    best = best.min(elapsed);
                    check(what, &t, &want);
                }
                if round >= warmup {
                    let recs = if i == Multi::ALL.len() {
                        ref_n
                    } else {
                        n * count as u64
                    };
                    ns[i].push(best.as_nanos() as f64 / recs as f64);
                }
            }
        }
        eprintln!(
            "rings drain {count} × {}: {:.1}s",
            size_label(size),
            t0.elapsed().as_secs_f64()
        );
        out.reference.push(ns.pop().unwrap());
        out.ns.push(ns);
        out.records.push(n * count as u64);
    }
    Ok(out)
}

pub struct SparseResult {
    /// Per measured round, mean ns per poll round: RingSet with 1 ring,
    /// with SPARSE_RINGS rings; libbpf `ring_buffer__poll` with 1, with SPARSE_RINGS.
    pub set1: Vec<f64>,
    pub set_n: Vec<f64>,
    pub libbpf1: Vec<f64>,
    pub libbpf_n: Vec<f64>,
    pub rounds: usize,
}

/// One sample: `SPARSE_POLLS` times, one record on the active ring (not
/// timed), then one timed poll round that delivers it. Mean ns per round.
fn sparse_sample(prod: &mut Producer, r: &mut Reader) -> Res<f64> {
    let mut total = Duration::ZERO;
    let (mut t, mut want) = (Tally::default(), Tally::default());
    for _ in 0..SPARSE_POLLS {
        want.add(&prod.produce(1)?.expect);
        let start = Instant::now();
        match r {
            Reader::Set(set, _) => {
                set.poll(|_, rec| tally(&mut t, rec))?;
            }
            Reader::Libbpf(l) => l.step(&mut t, 1000)?,
            _ => unreachable!("sparse: RingSet and libbpf only"),
        }
        total += start.elapsed();
    }
    check("sparse poll", &t, &want);
    Ok(total.as_nanos() as f64 / SPARSE_POLLS as f64)
}

/// Many rings, sparse: a set of one ring and a set of `SPARSE_RINGS` rings
/// of which only the first is written; the same for libbpf.
pub fn sparse(o: &Opts) -> Res<SparseResult> {
    pin_to_cpu(1);
    let t0 = Instant::now();
    // (kind, rings): RingSet 1, RingSet N, libbpf 1, libbpf N.
    let cases = [
        (Multi::SetPoll, 1),
        (Multi::SetPoll, SPARSE_RINGS),
        (Multi::Libbpf, 1),
        (Multi::Libbpf, SPARSE_RINGS),
    ];
    let rings: Vec<Vec<RingBuf>> = cases
        .iter()
        .map(|&(_, n)| (0..n).map(|_| new_ring(SPARSE_RING_SIZE)).collect())
        .collect::<Res<_>>()?;
    let mut prods: Vec<Producer> = rings
        .iter()
        .map(|rs| Producer::new(&rs[0], RECORD))
        .collect::<Res<_>>()?;
    let mut readers: Vec<Reader> = cases
        .iter()
        .zip(&rings)
        .map(|(&(k, _), rs)| Reader::new(k, rs))
        .collect::<Res<_>>()?;
    let mut res = vec![Vec::new(); cases.len()];
    for round in 0..o.warmup + o.rounds {
        for j in 0..cases.len() {
            let i = (j + round) % cases.len();
            let ns = sparse_sample(&mut prods[i], &mut readers[i])?;
            if round >= o.warmup {
                res[i].push(ns);
            }
        }
    }
    eprintln!("rings sparse: {:.1}s", t0.elapsed().as_secs_f64());
    let mut it = res.into_iter();
    let mut next = || it.next().unwrap();
    Ok(SparseResult {
        set1: next(),
        set_n: next(),
        libbpf1: next(),
        libbpf_n: next(),
        rounds: o.rounds,
    })
}

/// The two many-ring tables and their targets.
pub fn render(d: Option<&DrainResult>, s: Option<&SparseResult>) -> String {
    let mut m = String::new();
    if let Some(d) = d {
        let at = |n: usize| COUNTS.iter().position(|&c| c == n).unwrap();
        let k = |kind: Multi| Multi::ALL.iter().position(|&x| x == kind).unwrap();
        let i64 = at(64);
        let r = |kind: Multi| ratios(&d.ns[i64][k(kind)], &d.reference[i64]);
        let minmax = |v: &[f64]| {
            v.iter()
                .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)))
        };
        let _ = writeln!(
            m,
            "### Many rings, drain: ns per record (ratio to one ring's raw reference)\n\n\
             {} MiB in all, split evenly over the rings ({} B records; a ring of N bytes holds \
             `N / 72 - 1` of them), every ring pre-filled, then drained by one consumer of \
             all of them, timed. The reference is the raw reference loop on one {} MiB ring, \
             measured in the same rounds. {} warm-up + {} measured rounds; a sample is the \
             fastest of {} fill+drain cycles. Each consumer has rings of its own.\n",
            TOTAL >> 20,
            RECORD,
            TOTAL >> 20,
            d.warmup,
            d.rounds,
            d.reps
        );
        let _ = writeln!(
            m,
            "| target (64 rings) | ratio (median) | per-round min–max | result |\n|---|---:|---:|---|"
        );
        let libbpf = median(&r(Multi::Libbpf));
        for kind in [Multi::SetPoll, Multi::SetTry] {
            let v = r(kind);
            let (mn, mx) = minmax(&v);
            let _ = writeln!(
                m,
                "| {} ≤ {DRAIN_LIMIT:.2}× the single-ring raw reference per record | {:.3}× | {mn:.2}–{mx:.2} | {} |",
                kind.label(),
                median(&v),
                mark(median(&v) <= DRAIN_LIMIT)
            );
        }
        for kind in [Multi::SetPoll, Multi::SetTry] {
            let v = ratios(&d.ns[i64][k(kind)], &d.ns[i64][k(Multi::Libbpf)]);
            let (mn, mx) = minmax(&v);
            let _ = writeln!(
                m,
                "| {} ahead of libbpf C (ratio to libbpf, same round; libbpf is {libbpf:.3}× the reference) | {:.3}× | {mn:.2}–{mx:.2} | {} |",
                kind.label(),
                median(&v),
                mark(median(&v) < 1.0)
            );
        }
        m.push('\n');
        let _ = write!(m, "| consumer |");
        for (c, size) in COUNTS.iter().map(|&c| (c, TOTAL / c)) {
            let _ = write!(m, " {c} × {} |", size_label(size));
        }
        let _ = write!(m, "\n|---|");
        for _ in COUNTS {
            m.push_str("---:|");
        }
        m.push('\n');
        for (ki, kind) in Multi::ALL.iter().enumerate() {
            let _ = write!(m, "| {} |", kind.label());
            for ci in 0..COUNTS.len() {
                let _ = write!(
                    m,
                    " {:.2} ({:.2}×) |",
                    median(&d.ns[ci][ki]),
                    median(&ratios(&d.ns[ci][ki], &d.reference[ci]))
                );
            }
            m.push('\n');
        }
        let _ = write!(m, "| raw reference, one {} MiB ring |", TOTAL >> 20);
        for ci in 0..COUNTS.len() {
            let _ = write!(m, " {:.2} (1.00×) |", median(&d.reference[ci]));
        }
        let _ = write!(m, "\n| records per drain (reference: {}) |", d.ref_records);
        for r in &d.records {
            let _ = write!(m, " {r} |");
        }
        m.push_str("\n\n");
    }
    if let Some(s) = s {
        let per = ratios(&s.set_n, &s.set1);
        let lib = ratios(&s.libbpf_n, &s.libbpf1);
        let _ = writeln!(
            m,
            "### Many rings, sparse: ns per poll round\n\n\
             A set of 1 ring and a set of {SPARSE_RINGS} rings ({} each) of which only the first \
             is ever written: {SPARSE_POLLS} times, one {RECORD} B record is produced (not timed), \
             then one poll round delivers it (timed: the `epoll_wait` that finds the wakeup, \
             the read, the commit, and whatever the round does with the idle rings). \
             Mean ns per round in a sample, median over {} measured rounds; the ratio is the \
             median of the per-round ratios. Criterion for \"does not grow with idle rings\": \
             the {SPARSE_RINGS}-ring round within {SPARSE_LIMIT:.1}× the 1-ring round (a scan of \
             255 idle rings would cost far more than that).\n",
            size_label(SPARSE_RING_SIZE),
            s.rounds
        );
        let _ = writeln!(
            m,
            "| consumer | 1 ring | {SPARSE_RINGS} rings (1 active) | ratio | target ≤ {SPARSE_LIMIT:.1}× |\n|---|---:|---:|---:|---|"
        );
        let _ = writeln!(
            m,
            "| ours `RingSet::poll` | {:.0} | {:.0} | {:.3}× | {} |",
            median(&s.set1),
            median(&s.set_n),
            median(&per),
            mark(median(&per) <= SPARSE_LIMIT)
        );
        let _ = writeln!(
            m,
            "| libbpf C `ring_buffer__poll` (for comparison) | {:.0} | {:.0} | {:.3}× | |\n",
            median(&s.libbpf1),
            median(&s.libbpf_n),
            median(&lib)
        );
    }
    m
}
