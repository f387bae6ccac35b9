//! `bench`: a quick table of the library's read modes and wake policies on
//! the built-in kernel producer. The peer comparison (libbpf, libbpf-rs,
//! aya) is `scripts/bench.sh`.

use std::io::Write as _;
use std::ops::ControlFlow;
use std::thread;
use std::time::{Duration, Instant};

use bpf_ringbuf::testing::{available_cpus, pin_current_thread, KernelProducer, ProducerConfig};
use bpf_ringbuf::{Error, Reader, Record, RingBuf, Stats, WakePolicy};

use crate::common::{parse_count, parse_size};

/// A quick table of read modes and wake policies on the built-in producer
///
/// Compares the read modes (zero-copy, batch, consume, copying) under each
/// wake policy on the built-in kernel producer.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  bpf-ringbuf bench
  bpf-ringbuf bench --records 1M --size 256

Each cell is one run: one producer thread (a BPF program run with
BPF_PROG_TEST_RUN) writes the records while the reader reads them. The figures
vary from run to run on a busy machine; scripts/bench.sh compares with libbpf,
libbpf-rs and aya, in several rounds.")]
pub struct Args {
    /// Records per run (suffixes K, M allowed).
    #[arg(long, default_value = "200K", value_parser = parse_count)]
    records: u64,
    /// Record payload size in bytes.
    #[arg(long, default_value = "64", value_parser = parse_size)]
    size: usize,
    /// Ring size.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    ring: usize,
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    ZeroCopy,
    Batch,
    Consume,
    ReadInto,
}

impl Mode {
    const ALL: [Mode; 4] = [Mode::ZeroCopy, Mode::Batch, Mode::Consume, Mode::ReadInto];
    fn name(self) -> &'static str {
        match self {
            Mode::ZeroCopy => "read_zero_copy + commit",
            Mode::Batch => "batch()",
            Mode::Consume => "consume()",
            Mode::ReadInto => "read_into() (copies)",
        }
    }
}

fn policies() -> [(&'static str, WakePolicy); 3] {
    [
        ("Kernel", WakePolicy::Kernel),
        (
            "Interval 200us",
            WakePolicy::Interval(Duration::from_micros(200)),
        ),
        (
            "Adaptive 1ms",
            WakePolicy::Adaptive {
                max_latency: Duration::from_millis(1),
            },
        ),
    ]
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} records of {} bytes per run, {} ring, 1 kernel producer",
        args.records,
        args.size,
        crate::common::human_bytes(args.ring as u64)
    )?;
    writeln!(
        out,
        "{:<24} {:<15} {:>12} {:>10} {:>9} {:>9} {:>9}",
        "mode", "policy", "records/s", "ns/record", "wakeups", "sleeps", "dropped"
    )?;
    for mode in Mode::ALL {
        for (pname, policy) in policies() {
            let r = run_one(&args, mode, policy)?;
            let secs = r.elapsed.as_secs_f64().max(1e-9);
            writeln!(
                out,
                "{:<24} {:<15} {:>12.0} {:>10.1} {:>9} {:>9} {:>9}",
                mode.name(),
                pname,
                r.records as f64 / secs,
                secs * 1e9 / r.records.max(1) as f64,
                r.stats.wakeups,
                r.stats.sleeps,
                r.dropped,
            )?;
            out.flush()?;
        }
    }
    Ok(())
}

struct RunResult {
    records: u64,
    dropped: u64,
    elapsed: Duration,
    stats: Stats,
}

fn run_one(args: &Args, mode: Mode, policy: WakePolicy) -> anyhow::Result<RunResult> {
    let ring = RingBuf::create(args.ring)?;
    let producer = KernelProducer::new(&ring, ProducerConfig::fixed(args.size))?;
    let mut reader = Reader::new(&ring)?;
    reader.set_wake_policy(policy);
    let handle = reader.handle();
    let n = args.records;
    let start = Instant::now();
    let feeder = thread::spawn(move || -> Result<u64, Error> {
        if available_cpus() > 1 {
            let _ = pin_current_thread(0);
        }
        let (mut done, mut dropped) = (0, 0);
        while done < n {
            let chunk = (n - done).min(4096);
            dropped += producer.produce(chunk)?.dropped;
            done += chunk;
        }
        handle.flush();
        Ok(dropped)
    });
    if available_cpus() > 1 {
        let _ = pin_current_thread(available_cpus() - 1);
    }
    let records = read_all(&mut reader, mode)?;
    let elapsed = start.elapsed();
    let dropped = feeder.join().expect("the producer thread panicked")?;
    Ok(RunResult {
        records,
        dropped,
        elapsed,
        stats: reader.stats(),
    })
}

/// Reads until the flush at the end; returns the records read.
fn read_all(reader: &mut Reader, mode: Mode) -> anyhow::Result<u64> {
    let mut records = 0u64;
    let mut rec = Record::default();
    let end = loop {
        let step = match mode {
            Mode::ZeroCopy => {
                let mut got = Ok(());
                for _ in 0..1024 {
                    match reader.read_zero_copy() {
                        Ok(r) => {
                            std::hint::black_box(r);
                            records += 1;
                        }
                        Err(e) => {
                            got = Err(e);
                            break;
                        }
                    }
                }
                reader.commit();
                match got {
                    Err(Error::CommitRequired) => Ok(()),
                    other => other,
                }
            }
            Mode::Batch => reader.batch().map(|b| {
                for r in &b {
                    std::hint::black_box(r);
                    records += 1;
                }
            }),
            Mode::Consume => reader
                .consume(|r| {
                    std::hint::black_box(r);
                    ControlFlow::Continue(())
                })
                .and_then(|s| {
                    records += s.records as u64;
                    reader.wait()
                }),
            Mode::ReadInto => reader.read_into(&mut rec).map(|()| records += 1),
        };
        if let Err(e) = step {
            break e;
        }
    };
    match end {
        Error::Flushed => Ok(records),
        e => Err(e.into()),
    }
}
