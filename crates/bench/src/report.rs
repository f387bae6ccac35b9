//! Markdown rendering of the results. Every figure here comes from this run.

use std::fmt::Write;
use std::time::Duration;

use crate::policies::{self, LoadResult};
use crate::{CostRow, DrainRow, Kind, Opts, StreamRing, StreamRound};

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn idx(k: Kind) -> usize {
    Kind::ALL.iter().position(|&x| x == k).unwrap()
}

/// Per-round ratios a[r] / b[r]: both measured in the same round.
pub fn ratios(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x / y).collect()
}

/// Failed reserves of a consumer's rounds: in all, the rounds with any,
/// and the rounds with any where the raw reference, in the same round, had
/// none.
pub fn failed_reserves(ours: &[StreamRound], raw: &[StreamRound]) -> (u64, usize, usize) {
    let total = ours.iter().map(|r| r.dropped).sum();
    let bad = ours.iter().filter(|r| r.dropped > 0).count();
    let worse = ours
        .iter()
        .zip(raw)
        .filter(|(r, raw)| r.dropped > 0 && raw.dropped == 0)
        .count();
    (total, bad, worse)
}

pub fn size_label(b: usize) -> String {
    if b >= 1 << 20 {
        format!("{} MiB", b >> 20)
    } else if b >= 1024 {
        format!("{} KiB", b >> 10)
    } else {
        format!("{b} B")
    }
}

pub fn mark(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

/// `/proc/loadavg`'s first three fields: other work on this 2-core machine
/// shows here, and the stream scenario is sensitive to it.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The machine and the versions, read at run time (and from Cargo.lock at build time).
pub fn machine(rustc: &str) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    // Online CPUs (not the affinity mask: the benchmark pins its threads).
    // SAFETY: sysconf has no preconditions.
    let cores = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    // SAFETY: utsname is plain data; uname fills it.
    let kernel = unsafe {
        let mut u: libc::utsname = std::mem::zeroed();
        libc::uname(&mut u);
        std::ffi::CStr::from_ptr(u.release.as_ptr())
            .to_string_lossy()
            .into_owned()
    };
    let lock = include_str!("../Cargo.lock");
    let ver = |name: &str| -> String {
        let key = format!("name = \"{name}\"\nversion = \"");
        lock.find(&key)
            .map(|i| {
                let rest = &lock[i + key.len()..];
                rest[..rest.find('"').unwrap_or(0)].to_string()
            })
            .unwrap_or_else(|| "?".into())
    };
    format!(
        "| | |\n|---|---|\n| CPU | {cpu} |\n| cores | {cores} |\n| kernel | {kernel} |\n| rustc | {rustc} |\n| page size | {} |\n| bpf-ringbuf | {} (this tree) |\n| libbpf-sys (vendored libbpf, static) | {} |\n| libbpf-rs | {} |\n| aya | {} |\n| profile | release, `codegen-units = 1`, `lto = \"thin\"` (the workspace's release profile) |\n",
        bpf_ringbuf::page_size(),
        ver("bpf-ringbuf"),
        ver("libbpf-sys"),
        ver("libbpf-rs"),
        ver("aya"),
    )
}

pub fn render(
    o: &Opts,
    d: &[DrainRow],
    s: &[StreamRing],
    c: &[CostRow],
    p: &[LoadResult],
    took: Duration,
) -> String {
    let mut m = String::new();
    let rref = idx(Kind::RawRef);
    let rcopy = idx(Kind::RawCopy);
    let _ = writeln!(
        m,
        "{} warm-up + {} measured rounds. In each round every consumer runs once, in an order that rotates every round. \
         A ratio is the **median of the per-round ratios** (consumer time / reference time in the same round); \
         ns/record is the median over rounds.\n",
        o.warmup, o.rounds
    );
    let mut ring_sizes: Vec<usize> = d.iter().map(|r| r.ring).collect();
    ring_sizes.dedup();

    // Targets first.
    if let Some(&first) = ring_sizes.first() {
        let rows: Vec<&DrainRow> = d.iter().filter(|r| r.ring == first).collect();
        let _ = writeln!(m, "### Targets ({} drain)\n", size_label(first));
        let _ = writeln!(m, "| target | record size | ratio (median) | per-round min–max | result |\n|---|---|---:|---:|---|");
        let checks: [(Kind, usize, f64, &str); 3] = [
            (
                Kind::OursZeroCopy,
                rref,
                1.05,
                "`read_zero_copy` + batched `commit` ≤ 1.05× raw reference",
            ),
            (
                Kind::OursConsume,
                rref,
                1.10,
                "`consume` ≤ 1.10× raw reference",
            ),
            (
                Kind::OursReadInto,
                rcopy,
                1.10,
                "`read_into` ≤ 1.10× raw copying loop",
            ),
        ];
        for (k, base, limit, what) in checks {
            for r in &rows {
                let rs = ratios(&r.ns[idx(k)], &r.ns[base]);
                let med = median(&rs);
                let mn = rs.iter().cloned().fold(f64::INFINITY, f64::min);
                let mx = rs.iter().cloned().fold(0.0, f64::max);
                let _ = writeln!(
                    m,
                    "| {what} | {} | {med:.3}× | {mn:.2}–{mx:.2} | {} |",
                    size_label(r.size),
                    mark(med <= limit)
                );
            }
        }
        for sr in s {
            for k in [
                Kind::OursZeroCopy,
                Kind::OursConsume,
                Kind::OursReadInto,
                Kind::OursRead,
                Kind::OursPoll,
                Kind::OursInterval,
                Kind::OursAdaptive,
            ] {
                let (dr, bad, worse) = failed_reserves(&sr.rounds[idx(k)], &sr.rounds[rref]);
                let _ = writeln!(
                    m,
                    "| stream, {} ring: no failed reserve with {} | 64 B | {dr} failed in {bad} of {} rounds ({worse} of them with none for the raw reference) | | {} |",
                    size_label(sr.ring),
                    k.label(),
                    sr.rounds[idx(k)].len(),
                    mark(dr == 0)
                );
            }
        }
        m.push('\n');
    }

    for &ring in &ring_sizes {
        let rows: Vec<&DrainRow> = d.iter().filter(|r| r.ring == ring).collect();
        let _ = writeln!(
            m,
            "### Drain, pre-filled {} ring: ns per record (ratio to the raw reference)\n",
            size_label(ring)
        );
        let _ = write!(m, "| consumer |");
        for r in &rows {
            let _ = write!(m, " {} |", size_label(r.size));
        }
        let _ = write!(m, "\n|---|");
        for _ in &rows {
            let _ = write!(m, "---:|");
        }
        m.push('\n');
        for (k, kind) in Kind::DRAIN.iter().enumerate() {
            let _ = write!(m, "| {} |", kind.label());
            for r in &rows {
                let _ = write!(
                    m,
                    " {:.2} ({:.2}×) |",
                    median(&r.ns[k]),
                    median(&ratios(&r.ns[k], &r.ns[rref]))
                );
            }
            m.push('\n');
        }
        let _ = write!(
            m,
            "| records per drain × drains per sample (fastest counts) |"
        );
        for r in &rows {
            let _ = write!(m, " {} × {} |", r.records, r.reps);
        }
        m.push('\n');
        if let Some((st, given)) = rows.last().and_then(|r| r.consume_stats) {
            let _ = write!(
                m,
                "\nTelemetry is always on: every drain above counts records, bytes, commits and the fill high-water mark. \
                 Sanity check, `Reader::stats()` of the `consume` reader after all its drains of this ring \
                 (warm-up included): {} records ({} the {given} records the producer gave it), {} discarded, {} bytes, {} commits, \
                 max fill {} of {} bytes, {} sleeps, {} wakeups, {} BUSY stalls.\n",
                st.records,
                if st.records == given { "equal to" } else { "**differs from**" },
                st.discarded,
                st.bytes,
                st.commits,
                st.max_fill,
                ring,
                st.sleeps,
                st.wakeups,
                st.busy_stalls
            );
        }
        m.push_str("\nCopying consumers against the raw copying loop:\n\n");
        let _ = write!(m, "| consumer |");
        for r in &rows {
            let _ = write!(m, " {} |", size_label(r.size));
        }
        let _ = write!(m, "\n|---|");
        for _ in &rows {
            let _ = write!(m, "---:|");
        }
        m.push('\n');
        for k in [Kind::OursReadInto, Kind::OursRead] {
            let _ = write!(m, "| {} |", k.label());
            for r in &rows {
                let _ = write!(m, " {:.2}× |", median(&ratios(&r.ns[idx(k)], &r.ns[rcopy])));
            }
            m.push('\n');
        }
        m.push('\n');
        let _ = writeln!(
            m,
            "<details><summary>Per-round ratios, {} ring</summary>\n",
            size_label(ring)
        );
        let _ = writeln!(
            m,
            "| size | consumer | against | per-round ratios | min | max |\n|---|---|---|---|---:|---:|"
        );
        for r in &rows {
            for (k, kind) in Kind::DRAIN.iter().enumerate() {
                let mut bases = vec![];
                if k != rref {
                    bases.push((rref, "raw reference"));
                }
                if matches!(kind, Kind::OursReadInto | Kind::OursRead) {
                    bases.push((rcopy, "raw copy"));
                }
                for (base, bname) in bases {
                    let rs = ratios(&r.ns[k], &r.ns[base]);
                    let mn = rs.iter().cloned().fold(f64::INFINITY, f64::min);
                    let mx = rs.iter().cloned().fold(0.0, f64::max);
                    let list: Vec<String> = rs.iter().map(|x| format!("{x:.2}")).collect();
                    let _ = writeln!(
                        m,
                        "| {} | {} | {bname} | {} | {mn:.2} | {mx:.2} |",
                        size_label(r.size),
                        kind.label(),
                        list.join(" ")
                    );
                }
            }
        }
        m.push_str("\n</details>\n\n");
    }

    for sr in s {
        let s = &sr.rounds;
        let _ = writeln!(
            m,
            "### Stream: kernel producer thread on CPU 0, consumer on CPU 1, {} ring, 64 B records, {} records per run\n",
            size_label(sr.ring),
            o.stream_records
        );
        let _ = writeln!(
            m,
            "Each consumer uses its library's own blocking wait. CPU time is the consumer thread's `getrusage(RUSAGE_THREAD)` user+system time. \
             A wait call is one wait-then-drain step of the consumer loop; sleeps are the thread's voluntary context switches (`ru_nvcsw`), \
             counted the same way for every library (in poll-interval mode one wait call can sleep several intervals); \
             preemptions are its involuntary context switches (`ru_nivcsw`). \
             Producer irq_work/record counts the IRQ work interrupts (`IWI` in `/proc/interrupts`) on the producer's CPU while it produces: \
             the kernel's commit queues one to wake the ring's waiters when it finds the consumer caught up with the record. \
             The longest time between drains is measured from the end of one drain to the end of the next while the producer runs \
             (a step during which the producer finishes counts up to its last record): \
             the wait, the drain, and any time the consumer thread was not running.\n"
        );
        let _ = writeln!(
            m,
            "| consumer | records/s | consumer CPU ns/record | ratio to raw ref | wait calls/record | sleeps/record | preemptions per round | producer irq_work/record | failed reserves per round | longest time between drains per round, µs |\n|---|---:|---:|---:|---:|---:|---|---:|---|---|"
        );
        let cpu_ref: Vec<f64> = s[rref].iter().map(|r| r.cpu_ns_per_rec).collect();
        for (k, kind) in Kind::ALL.iter().enumerate() {
            let rps: Vec<f64> = s[k].iter().map(|r| r.recs_per_s).collect();
            let cpu: Vec<f64> = s[k].iter().map(|r| r.cpu_ns_per_rec).collect();
            let w: Vec<f64> = s[k].iter().map(|r| r.waits_per_rec).collect();
            let sl: Vec<f64> = s[k].iter().map(|r| r.sleeps_per_rec).collect();
            let pre: Vec<String> = s[k].iter().map(|r| r.preempted.to_string()).collect();
            let iw: Vec<f64> = s[k].iter().filter_map(|r| r.irq_work_per_rec).collect();
            let iw = if iw.is_empty() {
                "n/a".to_string()
            } else {
                format!("{:.4}", median(&iw))
            };
            let dr: Vec<String> = s[k].iter().map(|r| r.dropped.to_string()).collect();
            let gaps: Vec<String> = s[k]
                .iter()
                .map(|r| format!("{:.0}", r.max_step_us))
                .collect();
            let _ = writeln!(
                m,
                "| {} | {:.2} M | {:.1} | {:.2}× | {:.4} | {:.4} | {} | {} | {} | {} |",
                kind.label(),
                median(&rps) / 1e6,
                median(&cpu),
                median(&ratios(&cpu, &cpu_ref)),
                median(&w),
                median(&sl),
                pre.join(" "),
                iw,
                dr.join(" "),
                gaps.join(" ")
            );
        }
        m.push('\n');
    }
    if !c.is_empty() {
        let _ = writeln!(
            m,
            "### Producer cost: one 64 B record, then a {} µs pause, {} records per round\n",
            o.cost_pause.as_micros(),
            o.cost_events
        );
        let _ = writeln!(
            m,
            "The producer's own time per record, as `BPF_PROG_TEST_RUN` reports it, on CPU 0, while the consumer on CPU 1 waits in its library's wait \
             (with `Interval` or `Adaptive`: napping, the ring's descriptor watched). \
             Median: the median within a round, then the median over rounds. Mean: the mean within a round (every record's cost, \
             the few expensive ones included), then the median over rounds. Ratios: the median of the per-round ratios.\n"
        );
        let _ = writeln!(
            m,
            "| consumer waiting | producer ns/record, median | ratio to no consumer | producer ns/record, mean | ratio to no consumer |\n|---|---:|---:|---:|---:|"
        );
        for (i, v) in c.iter().enumerate() {
            let label = if i == 0 {
                "none"
            } else {
                Kind::ALL[i - 1].label()
            };
            let _ = writeln!(
                m,
                "| {} | {:.0} | {:.2}× | {:.0} | {:.2}× |",
                label,
                median(&v.median),
                median(&ratios(&v.median, &c[0].median)),
                median(&v.mean),
                median(&ratios(&v.mean, &c[0].mean))
            );
        }
        m.push('\n');
    }
    m.push_str(&policies::render(o, p, c));
    let _ = writeln!(
        m,
        "Benchmark run time (without the build): {:.0} s.",
        took.as_secs_f64()
    );
    m
}
