//! The spectator scenario (issue 10): a `Spectator`'s cost per record
//! (copy with atomic loads, then validate against a reloaded producer
//! position) against ours `read_into` (copy + per-record publish), on the
//! drain scenario's pre-filled 4 MiB ring.

use std::fmt::Write;
use std::time::{Duration, Instant};

use bpf_ringbuf::{Spectator, Start};

use crate::report::{mark, median, ratios, size_label};
use crate::{check, make, new_ring, pin_to_cpu, Kind, Opts, Producer, Res, Tally};

/// Ring size: the drain scenario's smaller ring.
pub const RING: usize = 4 << 20;
/// Target: a spectator costs at most this many times `read_into` per record.
pub const LIMIT: f64 = 1.5;

pub struct Row {
    pub size: usize,
    pub records: u64,
    /// ns per record per measured round: `read_into`, spectator.
    pub read_into: Vec<f64>,
    pub spectator: Vec<f64>,
}

pub struct SpectateResult {
    pub rows: Vec<Row>,
    pub warmup: usize,
}

pub fn run(o: &Opts) -> Res<SpectateResult> {
    pin_to_cpu(1);
    let mut rows = Vec::new();
    let ring = new_ring(RING)?;
    let mut reader = make(Kind::OursReadInto, &ring)?;
    let mut spec = Spectator::new(&ring, Start::Consumer)?;
    for &size in &o.rec_sizes {
        let stride = (size + 8).next_multiple_of(8);
        let n = (RING / stride - 1) as u64;
        let mut prod = Producer::new(&ring, size)?;
        let mut fill = |prod: &mut Producer| -> Res<crate::Produced> {
            let p = prod.produce(n)?;
            if p.dropped != 0 || p.expect.count != n {
                return Err(format!("pre-fill of {n} records dropped {}", p.dropped).into());
            }
            Ok(p)
        };
        let mut buf = Vec::with_capacity(size);
        let reps = 65_536u64.div_ceil(n).clamp(1, 32);
        let (mut ri, mut sp) = (Vec::new(), Vec::new());
        for round in 0..o.warmup + o.rounds {
            let mut best_r = Duration::MAX;
            let mut best_s = Duration::MAX;
            for _ in 0..reps {
                // `read_into` drains what the producer has just written.
                let p = fill(&mut prod)?;
                let mut t = Tally::default();
                let start = Instant::now();
                reader.drain(&mut t)?;
                best_r = best_r.min(start.elapsed());
                check("read_into", &t, &p.expect);

                // The spectator reads what the producer has just written
                // too (as warm in the caches), then the reader consumes it,
                // untimed.
                let p = fill(&mut prod)?;
                spec.seek(Start::Consumer)?;
                let mut t = Tally::default();
                let start = Instant::now();
                while spec.try_read_into(&mut buf)?.is_some() {
                    t.record(&buf);
                }
                best_s = best_s.min(start.elapsed());
                check("spectator", &t, &p.expect);
                let mut t = Tally::default();
                reader.drain(&mut t)?;
                check("read_into after the spectator", &t, &p.expect);
            }
            if round >= o.warmup {
                ri.push(best_r.as_nanos() as f64 / n as f64);
                sp.push(best_s.as_nanos() as f64 / n as f64);
            }
        }
        eprintln!("spectator size={size}: {n} records");
        rows.push(Row {
            size,
            records: n,
            read_into: ri,
            spectator: sp,
        });
    }
    let st = spec.stats();
    if st.lapped_bytes != 0 {
        return Err(format!("spectator lapped while the producer was idle: {st:?}").into());
    }
    Ok(SpectateResult {
        rows,
        warmup: o.warmup,
    })
}

pub fn render(r: &SpectateResult) -> String {
    let mut m = String::new();
    let rounds = r.rows.first().map_or(0, |x| x.read_into.len());
    let _ = writeln!(
        m,
        "### Spectator: cost per record against `read_into`, drain of a pre-filled {} ring\n\n\
         Each sample is the fastest of several drains of a ring the kernel producer has just \
         filled with as many records as fit: ours `read_into` (copy, publish per record) \
         consumes it; a `Spectator` (`try_read_into` into a reused buffer: atomic 8-byte loads, \
         then the producer position loaded again to validate the copy) reads the next filling \
         from the consumer position (which the reader then consumes, untimed). Both check \
         every record's sequence number. {} warm-up + {rounds} measured rounds, alternating; \
         the ratio is taken per round, then the median.\n",
        size_label(RING),
        r.warmup,
    );
    let _ = writeln!(
        m,
        "| record size | records | ns/record `read_into` | ns/record spectator | spectator / `read_into` (median) | per-round min–max | target ≤ {LIMIT:.1}× |\n|---:|---:|---:|---:|---:|---:|---|"
    );
    for row in &r.rows {
        let v = ratios(&row.spectator, &row.read_into);
        let (mn, mx) = v
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        let _ = writeln!(
            m,
            "| {} | {} | {:.1} | {:.1} | {:.3}× | {mn:.2}–{mx:.2} | {} |",
            size_label(row.size),
            row.records,
            median(&row.read_into),
            median(&row.spectator),
            median(&v),
            mark(median(&v) <= LIMIT)
        );
    }
    m.push('\n');
    m
}
