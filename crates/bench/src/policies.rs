//! The wake-policy scenario (issue 8): each of our wake policies next to
//! libbpf C's `ring_buffer__poll`, the raw reference and no consumer at all,
//! on a steady stream, on bursts, and with a producer that samples its own
//! wakeups like the kernel's ring buffer benchmark.

use std::fmt::Write;
use std::time::{Duration, Instant};

use bpf_ringbuf::testing::Wakeup;
use bpf_ringbuf::RingBuf;

use crate::report::{failed_reserves, mark, median, ratios, size_label};
use crate::{
    new_ring, stream_once, CostRow, Kind, Load, Opts, Producer, Res, StreamRound,
    ADAPTIVE_MAX_LATENCY, LAT_EVERY,
};

/// The consumers compared, in report order (`None`: no consumer; the
/// producer thread drains the ring itself between its calls).
pub const KINDS: [Option<Kind>; 6] = [
    None,
    Some(Kind::OursConsume),
    Some(Kind::OursInterval),
    Some(Kind::OursAdaptive),
    Some(Kind::Libbpf),
    Some(Kind::RawRef),
];

/// The label of a consumer in the policy tables.
pub fn label(k: Option<Kind>) -> &'static str {
    match k {
        None => "no consumer (the producer's thread drains the ring between its calls; default wakeups become `BPF_RB_NO_WAKEUP`)",
        Some(Kind::OursConsume) => "ours `wait` + `consume`, `WakePolicy::Kernel` (the default)",
        Some(Kind::Libbpf) => "libbpf C `ring_buffer__poll`",
        Some(k) => k.label(),
    }
}

/// One load of the scenario.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub ring: usize,
    /// Payload bytes per record.
    pub size: usize,
    pub wakeup: Wakeup,
    pub load: Load,
    /// Whether the sampled-wakeup targets apply.
    pub sampled: bool,
}

/// The sampled-wakeup producer's threshold: a quarter of its 512 KiB ring.
pub const SAMPLED_RING: usize = 512 << 10;
pub const SAMPLED_THRESHOLD: u64 = (SAMPLED_RING / 4) as u64;

pub fn specs(o: &Opts) -> Vec<Spec> {
    let scale = |full: u64| if o.quick { full / 4 } else { full };
    let mut v = vec![
        Spec {
            name: "steady stream".into(),
            ring: 1 << 20,
            size: 64,
            wakeup: Wakeup::Default,
            load: Load::steady(scale(300_000), 256),
            sampled: false,
        },
        Spec {
            name: format!(
                "bursts of {} records (calls of 256), then a {} ms pause",
                BURST_CALLS * 256,
                BURST_PAUSE.as_millis()
            ),
            ring: 1 << 20,
            size: 64,
            wakeup: Wakeup::Default,
            load: Load {
                bursts: Some((BURST_CALLS, BURST_PAUSE)),
                ..Load::steady(scale(40) * BURST_CALLS * 256, 256)
            },
            sampled: false,
        },
    ];
    for batch in [50, 500] {
        v.push(Spec {
            name: format!(
                "sampled wakeups (threshold {} KiB), batches of {batch} records per call",
                SAMPLED_THRESHOLD >> 10
            ),
            ring: SAMPLED_RING,
            size: 8,
            wakeup: Wakeup::Sampled {
                threshold: SAMPLED_THRESHOLD,
            },
            load: Load {
                max_time: SAMPLED_MAX_TIME,
                ..Load::steady(scale(1_000_000), batch)
            },
            sampled: true,
        });
    }
    v
}

/// Calls of 256 records per burst.
const BURST_CALLS: u64 = 16;
const BURST_PAUSE: Duration = Duration::from_millis(3);
/// A sampled run stops producing after this long (a policy that collapses
/// would otherwise take minutes).
const SAMPLED_MAX_TIME: Duration = Duration::from_secs(1);

pub struct LoadResult {
    pub spec: Spec,
    /// Per consumer (`KINDS` order), per measured round.
    pub rounds: Vec<Vec<StreamRound>>,
}

pub fn run(o: &Opts) -> Res<Vec<LoadResult>> {
    specs(o)
        .into_iter()
        .map(|spec| {
            let t0 = Instant::now();
            let rings: Vec<RingBuf> = KINDS
                .iter()
                .map(|_| new_ring(spec.ring))
                .collect::<Res<_>>()?;
            let mut prods: Vec<Producer> = KINDS
                .iter()
                .zip(&rings)
                .map(|(&k, r)| Producer::for_consumer(r, spec.size, spec.wakeup, k))
                .collect::<Res<_>>()?;
            let mut rounds = vec![Vec::new(); KINDS.len()];
            for round in 0..o.policy_warmup + o.policy_rounds {
                for j in 0..KINDS.len() {
                    let i = (j + round) % KINDS.len();
                    let r = stream_once(KINDS[i], &rings[i], &mut prods[i], &spec.load)?;
                    if round >= o.policy_warmup {
                        rounds[i].push(r);
                    }
                }
            }
            eprintln!(
                "policies, {}: {:.1}s",
                spec.name,
                t0.elapsed().as_secs_f64()
            );
            Ok(LoadResult { spec, rounds })
        })
        .collect()
}

// ---------------------------------------------------------------- report

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Every round's latencies of one consumer, pooled and sorted.
fn pooled_latency(rounds: &[StreamRound]) -> Vec<u64> {
    let mut v: Vec<u64> = rounds
        .iter()
        .flat_map(|r| r.latency_ns.iter().copied())
        .collect();
    v.sort_unstable();
    v
}

fn col(rounds: &[StreamRound], f: impl Fn(&StreamRound) -> f64) -> Vec<f64> {
    rounds.iter().map(f).collect()
}

fn idx(k: Option<Kind>) -> usize {
    KINDS.iter().position(|&x| x == k).unwrap()
}

/// The median per-round ratio of `f` between two consumers of one load.
fn ratio(r: &LoadResult, a: Option<Kind>, b: Option<Kind>, f: fn(&StreamRound) -> f64) -> f64 {
    median(&ratios(
        &col(&r.rounds[idx(a)], f),
        &col(&r.rounds[idx(b)], f),
    ))
}

fn irq(r: &StreamRound) -> f64 {
    r.irq_work_per_rec.unwrap_or(f64::NAN)
}

/// The targets of issue 8 and one table per load. `cost` is the producer
/// cost scenario's result (index 0: no consumer, then `Kind::ALL`), if it ran.
pub fn render(o: &Opts, p: &[LoadResult], cost: &[CostRow]) -> String {
    let mut m = String::new();
    if p.is_empty() {
        return m;
    }
    let adaptive = Some(Kind::OursAdaptive);
    let max_lat = ADAPTIVE_MAX_LATENCY.as_nanos() as u64;
    let _ = writeln!(
        m,
        "### Wake policies (issue 8)\n\n\
         {} warm-up + {} measured rounds per load (fewer than the other scenarios, to keep the whole run within minutes); \
         in each round every consumer runs the load once, in an order that rotates every round. \
         Producer thread on CPU 0, consumer thread on CPU 1; each consumer has its own ring and producer. \
         A ratio is the median of the per-round ratios; latency percentiles pool every round's samples \
         (every {LAT_EVERY}th record). `Adaptive` uses `max_latency` = {} ms.\n",
        o.policy_warmup,
        o.policy_rounds,
        ADAPTIVE_MAX_LATENCY.as_millis()
    );
    let _ = writeln!(
        m,
        "#### Targets\n\n| target | load | figure | result |\n|---|---|---|---|"
    );
    // Producer cost.
    if !cost.is_empty() {
        let ai = 1 + Kind::ALL
            .iter()
            .position(|&k| k == Kind::OursAdaptive)
            .unwrap();
        let mean = median(&ratios(&cost[ai].mean, &cost[0].mean));
        let med = median(&ratios(&cost[ai].median, &cost[0].median));
        let _ = writeln!(
            m,
            "| `Adaptive`: producer ≤ 1.2× its cost with no consumer | sparse: one record, then a {} µs pause (producer cost table) | {mean:.2}× on the mean, {med:.2}× on the median | {} |",
            o.cost_pause.as_micros(),
            mark(mean <= 1.2)
        );
    }
    for r in p {
        let x = ratio(r, adaptive, None, |s| s.prod_ns_per_rec);
        let _ = writeln!(
            m,
            "| `Adaptive`: producer ≤ 1.2× its cost with no consumer | {} | {x:.2}× | {} |",
            r.spec.name,
            mark(x <= 1.2)
        );
    }
    for r in p {
        let lat = pooled_latency(&r.rounds[idx(adaptive)]);
        let p99 = percentile(&lat, 0.99);
        let _ = writeln!(
            m,
            "| `Adaptive`: p99 latency ≤ `max_latency` ({} µs) | {} | {:.0} µs | {} |",
            max_lat / 1000,
            r.spec.name,
            p99 as f64 / 1e3,
            mark(p99 <= max_lat)
        );
    }
    for r in p.iter().filter(|r| !r.spec.sampled) {
        let ours = &r.rounds[idx(adaptive)];
        let (dr, bad, worse) = failed_reserves(ours, &r.rounds[idx(Some(Kind::RawRef))]);
        let _ = writeln!(
            m,
            "| `Adaptive`: no failed reserve in a round where the raw reference has none ({} ring) | {} | {dr} failed in {bad} of {} rounds, {worse} of them with none for the raw reference | {} |",
            size_label(r.spec.ring),
            r.spec.name,
            ours.len(),
            mark(worse == 0)
        );
    }
    let libbpf = Some(Kind::Libbpf);
    for r in p.iter().filter(|r| r.spec.sampled) {
        for k in [Some(Kind::OursConsume), adaptive] {
            let name = if k == adaptive {
                "`Adaptive`"
            } else {
                "`Kernel`"
            };
            let x = ratio(r, k, libbpf, |s| s.recs_per_s);
            let _ = writeln!(
                m,
                "| {name}: records/s ≥ libbpf's | {} | {x:.2}× | {} |",
                r.spec.name,
                mark(x >= 1.0)
            );
            let ours = median(&col(&r.rounds[idx(k)], irq));
            let theirs = median(&col(&r.rounds[idx(libbpf)], irq));
            let _ = writeln!(
                m,
                "| {name}: producer irq_work/record ≤ libbpf's | {} | {ours:.5} against {theirs:.5} | {} |",
                r.spec.name,
                mark(ours <= theirs)
            );
        }
    }
    m.push('\n');

    for r in p {
        let sp = &r.spec;
        let _ = writeln!(
            m,
            "#### {}: {} ring, {} B records, {} records per run{}\n",
            sp.name,
            size_label(sp.ring),
            sp.size,
            sp.load.total,
            if sp.sampled {
                format!(
                    " (or {} s of producing, whichever ends first)",
                    sp.load.max_time.as_secs()
                )
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            m,
            "| consumer | records/s | ratio to libbpf | producer ns/record | ratio to no consumer | latency p50 µs | p99 µs | max µs | p99 per round, µs | producer irq_work/record | sleeps/record | `stats()` sleeps / wakeups per 1000 records | failed reserves per round |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|"
        );
        for (i, &k) in KINDS.iter().enumerate() {
            let rs = &r.rounds[i];
            let lat = pooled_latency(rs);
            let lat = if k.is_none() {
                "— | — | — | —".to_string()
            } else {
                let per_round: Vec<String> = rs
                    .iter()
                    .map(|s| {
                        let mut v = s.latency_ns.clone();
                        v.sort_unstable();
                        format!("{:.0}", percentile(&v, 0.99) as f64 / 1e3)
                    })
                    .collect();
                format!(
                    "{:.0} | {:.0} | {:.0} | {}",
                    percentile(&lat, 0.5) as f64 / 1e3,
                    percentile(&lat, 0.99) as f64 / 1e3,
                    lat.last().copied().unwrap_or(0) as f64 / 1e3,
                    per_round.join(" ")
                )
            };
            let sleeps = if k.is_none() {
                "—".to_string()
            } else {
                format!("{:.4}", median(&col(rs, |s| s.sleeps_per_rec)))
            };
            let st = if rs.iter().all(|s| s.stats.is_some()) {
                let per_k = |f: fn(&bpf_ringbuf::Stats) -> u64| {
                    median(&col(rs, |s| {
                        f(s.stats.as_ref().unwrap()) as f64 * 1000.0 / s.records as f64
                    }))
                };
                format!("{:.2} / {:.2}", per_k(|s| s.sleeps), per_k(|s| s.wakeups))
            } else {
                "—".to_string()
            };
            let dr: Vec<String> = rs.iter().map(|s| s.dropped.to_string()).collect();
            let _ = writeln!(
                m,
                "| {} | {:.2} M | {:.2}× | {:.0} | {:.2}× | {lat} | {:.5} | {sleeps} | {st} | {} |",
                label(k),
                median(&col(rs, |s| s.recs_per_s)) / 1e6,
                ratio(r, k, libbpf, |s| s.recs_per_s),
                median(&col(rs, |s| s.prod_ns_per_rec)),
                ratio(r, k, None, |s| s.prod_ns_per_rec),
                median(&col(rs, irq)),
                dr.join(" ")
            );
        }
        m.push('\n');
    }
    m
}
