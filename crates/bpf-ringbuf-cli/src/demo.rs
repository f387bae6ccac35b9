//! `demo`: a kernel producer feeds a ring, the reader reads it zero-copy
//! with one commit per batch, verifies every record and prints records/s.

use std::io::IsTerminal as _;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::bail;
use bpf_ringbuf::testing::{
    available_cpus, check_payload, pin_current_thread, KernelProducer, ProducerConfig, Wakeup,
};
use bpf_ringbuf::{Error, Reader, RingBuf};
use indicatif::{ProgressBar, ProgressStyle};

use crate::common::{parse_count, parse_size};

/// `println!` that returns a closed stdout as an error instead of panicking.
macro_rules! out {
    ($($t:tt)*) => {
        std::io::Write::write_fmt(&mut std::io::stdout(), format_args!("{}\n", format_args!($($t)*)))?
    };
}

/// The demo: a kernel producer, a zero-copy reader, every record verified
///
/// Creates a ring, feeds it from a built-in kernel producer (a BPF program run
/// with BPF_PROG_TEST_RUN), reads it zero-copy with one commit per batch,
/// verifies every sequence number and byte, and prints records/s: first
/// sleeping for the kernel's wakeups, then in poll-interval mode.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  bpf-ringbuf demo
  bpf-ringbuf demo --size 256 --records 5000000 --producers 2
  bpf-ringbuf demo --poll-us 100 --no-wakeup

On a terminal a progress bar shows the live rate; piped, plain lines.")]
pub struct Args {
    /// Records to produce (suffixes K, M allowed).
    #[arg(long, default_value = "2000000", value_parser = parse_count)]
    records: u64,
    /// Record payload size in bytes (at least 8: the sequence number).
    #[arg(long, default_value = "64", value_parser = parse_size)]
    size: usize,
    /// Ring size (a power of two, a multiple of the page size).
    #[arg(long, default_value = "4M", value_parser = parse_size)]
    ring: usize,
    /// Kernel producer threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    producers: u8,
    /// The producer commits with BPF_RB_NO_WAKEUP.
    #[arg(long)]
    no_wakeup: bool,
    /// Poll-interval mode only: look again every N microseconds instead of
    /// sleeping for the kernel's wakeup (which the producer pays for).
    #[arg(long, value_name = "MICROSECONDS")]
    poll_us: Option<u64>,
}

/// Runs the demo once per waiting mode: with `--poll-us`, that mode only;
/// otherwise kernel wakeups, then a 200 µs poll interval, side by side.
pub fn run(o: Args) -> anyhow::Result<()> {
    let modes = match o.poll_us.map(Duration::from_micros) {
        Some(p) => vec![Some(p)],
        None => vec![None, Some(Duration::from_micros(200))],
    };
    let mut rates = Vec::new();
    for (i, poll) in modes.iter().enumerate() {
        if i > 0 {
            out!("");
        }
        rates.push(demo_once(&o, *poll)?);
    }
    if let [wakeups, polled] = rates[..] {
        out!(
            "\npoll-interval mode read {:.1}x as many records per second: the producer no longer pays for waking the reader",
            polled / wakeups
        );
    }
    Ok(())
}

/// One demo run; returns records per second.
fn demo_once(o: &Args, poll: Option<Duration>) -> anyhow::Result<f64> {
    let ring = RingBuf::create(o.ring)?;
    let config = ProducerConfig {
        wakeup: if o.no_wakeup {
            Wakeup::NoWakeup
        } else {
            Wakeup::Default
        },
        ..ProducerConfig::fixed(o.size)
    };
    let producer = Arc::new(KernelProducer::new(&ring, config)?);
    let mut reader = Reader::new(&ring)?;
    reader.set_poll_interval(poll);
    let handle = reader.handle();
    out!(
        "bpf-ringbuf demo: {} KiB ring, {}-byte records, {} kernel producer(s) ({} BPF instructions), {} records, {}",
        ring.size() >> 10,
        o.size,
        o.producers,
        producer.instructions(),
        o.records,
        match poll {
            None => "kernel wakeups".to_string(),
            Some(p) => format!("poll interval {} µs", p.as_micros()),
        }
    );

    let start = Instant::now();
    let per = o.records / u64::from(o.producers);
    let workers: Vec<_> = (0..u64::from(o.producers))
        .map(|i| {
            let producer = producer.clone();
            let n = if i == 0 {
                o.records - per * (u64::from(o.producers) - 1)
            } else {
                per
            };
            thread::spawn(move || -> Result<(u64, u64), Error> {
                // Producers on CPU 0 (and 1); the reader on the last CPU.
                if available_cpus() > 1 {
                    let _ = pin_current_thread(i as usize % available_cpus());
                }
                let (mut submitted, mut dropped, mut done) = (0, 0, 0);
                while done < n {
                    let chunk = (n - done).min(4096);
                    let r = producer.produce(chunk)?;
                    submitted += r.submitted;
                    dropped += r.dropped;
                    done += chunk;
                }
                Ok((submitted, dropped))
            })
        })
        .collect();
    let finisher = thread::spawn(move || {
        let mut totals = Ok((0u64, 0u64));
        for w in workers {
            match (w.join().expect("producer thread panicked"), &mut totals) {
                (Ok((s, d)), Ok((ts, td))) => {
                    *ts += s;
                    *td += d;
                }
                (Err(e), t) => *t = Err(e),
                _ => {}
            }
        }
        handle.flush(); // every record is committed: the reader stops after them
        totals
    });

    if available_cpus() > 1 {
        let _ = pin_current_thread(available_cpus() - 1);
    }
    // Bitmap of sequence numbers seen: each exactly once, contiguous from 0.
    let mut seen = vec![0u64; (o.records as usize).div_ceil(64)];
    let (mut count, mut bytes, mut last, mut in_order, mut batches) =
        (0u64, 0u64, None, true, 0u64);
    let mut bad = None;
    // Read in batches: up to BATCH records in place, then one commit. Holding
    // the whole ring uncommitted would make the producer's reservations fail.
    const BATCH: usize = 1024;
    let mut progress = Progress::new(o.records);
    loop {
        let mut end = None;
        for _ in 0..BATCH {
            match reader.read_zero_copy() {
                Ok(rec) => {
                    // The sequence number of every record; every byte of
                    // one record in 16 (full checks cost more than reading).
                    let checked = if count % 16 == 0 {
                        check_payload(rec).map_err(|e| e.to_string())
                    } else {
                        rec.get(..8)
                            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                            .ok_or_else(|| format!("record of {} bytes", rec.len()))
                    };
                    match checked {
                        Ok(seq) => {
                            let (w, b) = ((seq / 64) as usize, seq % 64);
                            match seen.get_mut(w) {
                                Some(word) if *word & (1 << b) == 0 => *word |= 1 << b,
                                _ => {
                                    bad = bad.or(Some(format!(
                                        "sequence {seq} duplicated or out of range"
                                    )))
                                }
                            }
                            if last.is_some_and(|l| seq < l) {
                                in_order = false;
                            }
                            last = Some(seq);
                        }
                        Err(e) => bad = bad.or(Some(e)),
                    }
                    count += 1;
                    bytes += rec.len() as u64;
                }
                Err(e) => {
                    end = Some(e);
                    break;
                }
            }
        }
        reader.commit();
        batches += 1;
        progress.update(count)?;
        match end {
            None | Some(Error::CommitRequired) => {}
            Some(Error::Flushed) => break,
            Some(e) => return Err(e.into()),
        }
    }
    reader.commit();
    let elapsed = start.elapsed();
    progress.finish();
    let (submitted, dropped) = finisher.join().expect("finisher panicked")?;
    let secs = elapsed.as_secs_f64();
    out!(
        "read {count} records ({:.1} MB) in {secs:.3} s: {:.2} M records/s, {:.0} MB/s, {batches} commits ({:.0} records per commit)",
        bytes as f64 / 1e6,
        count as f64 / secs / 1e6,
        bytes as f64 / secs / 1e6,
        count as f64 / batches.max(1) as f64,
    );
    out!("producer: {submitted} submitted, {dropped} dropped because the ring was full");
    if let Some(e) = bad {
        bail!("verification failed: {e}");
    }
    if count != submitted {
        bail!("read {count} records but {submitted} were submitted");
    }
    let missing = (0..submitted)
        .filter(|s| seen[(s / 64) as usize] & (1 << (s % 64)) == 0)
        .count();
    if missing > 0 {
        bail!("{missing} sequence numbers missing");
    }
    out!(
        "verified: sequence numbers 0..{submitted} each seen exactly once{}; every byte of 1 record in 16 checked",
        if in_order {
            ", in order"
        } else {
            " (two producers interleave)"
        }
    );
    Ok(count as f64 / secs)
}

/// The live view of a run: a bar with the rate on a terminal, a line every
/// quarter when piped.
enum Progress {
    Bar(ProgressBar, Instant),
    Lines { total: u64, next_quarter: u64 },
}

impl Progress {
    fn new(total: u64) -> Progress {
        if !std::io::stderr().is_terminal() || !std::io::stdout().is_terminal() {
            return Progress::Lines {
                total,
                next_quarter: 1,
            };
        }
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{bar:40} {human_pos}/{human_len} records  {msg}  {elapsed}",
            )
            .expect("a valid template"),
        );
        Progress::Bar(bar, Instant::now())
    }

    fn update(&mut self, count: u64) -> anyhow::Result<()> {
        match self {
            Progress::Bar(bar, start) => {
                bar.set_position(count);
                let secs = start.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("{:.2} M records/s", count as f64 / secs / 1e6));
            }
            Progress::Lines {
                total,
                next_quarter,
            } => {
                while *next_quarter < 4 && count * 4 >= *total * *next_quarter {
                    out!("  {}% read ({count} records)", 25 * *next_quarter);
                    *next_quarter += 1;
                }
            }
        }
        Ok(())
    }

    fn finish(&self) {
        if let Progress::Bar(bar, _) = self {
            bar.finish_and_clear();
        }
    }
}
