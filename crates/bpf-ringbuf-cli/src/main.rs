//! `bpf-ringbuf`: a command-line tool for BPF ring buffers.
//!
//! ```text
//! bpf-ringbuf demo [--records N] [--size BYTES] [--ring BYTES] [--producers P] [--no-wakeup]
//! bpf-ringbuf read (--pin PATH | --id ID) [--count N] [--timeout-ms MS] [--hex]
//! bpf-ringbuf info (--pin PATH | --id ID)
//! ```
//!
//! Uses only the public API of the `bpf-ringbuf` crate.
#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bpf_ringbuf::testing::{
    available_cpus, check_payload, pin_current_thread, KernelProducer, ProducerConfig, Wakeup,
};
use bpf_ringbuf::{Error, Reader, RingBuf};

const USAGE: &str = "\
usage:
  bpf-ringbuf demo [--records N] [--size BYTES] [--ring BYTES] [--producers 1|2] [--no-wakeup]
                   [--poll-us MICROSECONDS]
      Create a ring, feed it from a built-in kernel producer (a BPF program run
      with BPF_PROG_TEST_RUN), read it zero-copy with one commit per batch,
      verify every sequence number and byte, and print records/s.
      --poll-us N: poll-interval mode (look again every N µs instead of
      sleeping for the kernel's wakeup, which the producer pays for).
      Defaults: 2000000 records of 64 bytes, a 4 MiB ring, 1 producer.
  bpf-ringbuf read (--pin PATH | --id ID) [--count N] [--timeout-ms MS] [--hex]
      Print records of an existing ring buffer map (each record is consumed).
  bpf-ringbuf info (--pin PATH | --id ID)
      Print a ring buffer's size and positions.
Needs CAP_BPF (or root).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("demo") => Opts::parse(args.get(1..).unwrap_or_default()).and_then(demo),
        Some("read") => Opts::parse(&args[1..]).and_then(read),
        Some("info") => Opts::parse(&args[1..]).and_then(info),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(format!("unknown command {other:?}\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bpf-ringbuf: {e}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug)]
struct Opts {
    records: u64,
    size: usize,
    ring: usize,
    producers: usize,
    no_wakeup: bool,
    poll: Option<Duration>,
    pin: Option<String>,
    id: Option<u32>,
    count: Option<u64>,
    timeout: Option<Duration>,
    hex: bool,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut o = Opts {
            records: 2_000_000,
            size: 64,
            ring: 4 << 20,
            producers: 1,
            no_wakeup: false,
            poll: None,
            pin: None,
            id: None,
            count: None,
            timeout: None,
            hex: false,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let mut value = || {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("{flag} needs a value"))
            };
            let num =
                |v: String| parse_size(&v).ok_or_else(|| format!("{flag}: {v:?} is not a number"));
            match flag.as_str() {
                "--records" => o.records = num(value()?)? as u64,
                "--size" => o.size = num(value()?)?,
                "--ring" => o.ring = num(value()?)?,
                "--producers" => o.producers = num(value()?)?,
                "--no-wakeup" => o.no_wakeup = true,
                "--poll-us" => o.poll = Some(Duration::from_micros(num(value()?)? as u64)),
                "--pin" => o.pin = Some(value()?),
                "--id" => {
                    o.id = Some(
                        u32::try_from(num(value()?)?).map_err(|_| "--id: too large".to_string())?,
                    )
                }
                "--count" => o.count = Some(num(value()?)? as u64),
                "--timeout-ms" => o.timeout = Some(Duration::from_millis(num(value()?)? as u64)),
                "--hex" => o.hex = true,
                other => return Err(format!("unknown option {other:?}\n{USAGE}")),
            }
        }
        if !(1..=2).contains(&o.producers) {
            return Err("--producers must be 1 or 2".into());
        }
        Ok(o)
    }

    fn open(&self) -> Result<RingBuf, String> {
        match (&self.pin, self.id) {
            (Some(p), None) => RingBuf::open_pinned(p).map_err(|e| e.to_string()),
            (None, Some(id)) => RingBuf::from_id(id).map_err(|e| e.to_string()),
            _ => Err(format!(
                "give exactly one of --pin PATH or --id ID\n{USAGE}"
            )),
        }
    }
}

/// Parses `123`, `4K`, `4KiB`, `4M`, `1G` (binary multiples).
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let digits = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let n: usize = s[..digits].parse().ok()?;
    let mult = match s[digits..].to_ascii_lowercase().as_str() {
        "" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Runs the demo once per waiting mode: with `--poll-us`, that mode only;
/// otherwise kernel wakeups, then a 200 µs poll interval, side by side.
fn demo(o: Opts) -> Result<(), String> {
    let modes = match o.poll {
        Some(p) => vec![Some(p)],
        None => vec![None, Some(Duration::from_micros(200))],
    };
    let mut rates = Vec::new();
    for (i, poll) in modes.iter().enumerate() {
        if i > 0 {
            println!();
        }
        rates.push(demo_once(&o, *poll)?);
    }
    if let [wakeups, polled] = rates[..] {
        println!(
            "\npoll-interval mode read {:.1}x as many records per second: the producer no longer pays for waking the reader",
            polled / wakeups
        );
    }
    Ok(())
}

/// One demo run; returns records per second.
fn demo_once(o: &Opts, poll: Option<Duration>) -> Result<f64, String> {
    let ring = RingBuf::create(o.ring).map_err(|e| e.to_string())?;
    let config = ProducerConfig {
        wakeup: if o.no_wakeup {
            Wakeup::NoWakeup
        } else {
            Wakeup::Default
        },
        ..ProducerConfig::fixed(o.size)
    };
    let producer = Arc::new(KernelProducer::new(&ring, config).map_err(|e| e.to_string())?);
    let mut reader = Reader::new(&ring).map_err(|e| e.to_string())?;
    reader.set_poll_interval(poll);
    let handle = reader.handle();
    println!(
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
    let per = o.records / o.producers as u64;
    let workers: Vec<_> = (0..o.producers as u64)
        .map(|i| {
            let producer = producer.clone();
            let n = if i == 0 {
                o.records - per * (o.producers as u64 - 1)
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
        match end {
            None | Some(Error::CommitRequired) => {}
            Some(Error::Flushed) => break,
            Some(e) => return Err(e.to_string()),
        }
    }
    reader.commit();
    let elapsed = start.elapsed();
    let (submitted, dropped) = finisher
        .join()
        .expect("finisher panicked")
        .map_err(|e| e.to_string())?;
    let secs = elapsed.as_secs_f64();
    println!(
        "read {count} records ({:.1} MB) in {secs:.3} s: {:.2} M records/s, {:.0} MB/s, {batches} commits ({:.0} records per commit)",
        bytes as f64 / 1e6,
        count as f64 / secs / 1e6,
        bytes as f64 / secs / 1e6,
        count as f64 / batches.max(1) as f64,
    );
    println!("producer: {submitted} submitted, {dropped} dropped because the ring was full");
    if let Some(e) = bad {
        return Err(format!("verification failed: {e}"));
    }
    if count != submitted {
        return Err(format!(
            "read {count} records but {submitted} were submitted"
        ));
    }
    let missing = (0..submitted)
        .filter(|s| seen[(s / 64) as usize] & (1 << (s % 64)) == 0)
        .count();
    if missing > 0 {
        return Err(format!("{missing} sequence numbers missing"));
    }
    println!(
        "verified: sequence numbers 0..{submitted} each seen exactly once{}; every byte of 1 record in 16 checked",
        if in_order {
            ", in order"
        } else {
            " (two producers interleave)"
        }
    );
    Ok(count as f64 / secs)
}

fn read(o: Opts) -> Result<(), String> {
    let ring = o.open()?;
    let mut reader = Reader::new(&ring).map_err(|e| e.to_string())?;
    let mut n = 0u64;
    while o.count.is_none_or(|c| n < c) {
        reader.set_deadline(o.timeout.map(|t| Instant::now() + t));
        match reader.read() {
            Ok(rec) => {
                n += 1;
                if o.hex {
                    let hex: Vec<String> = rec.data.iter().map(|b| format!("{b:02x}")).collect();
                    println!("{} {}", rec.data.len(), hex.join(""));
                } else {
                    println!(
                        "record {n}: {} bytes, {} bytes remaining",
                        rec.data.len(),
                        rec.remaining
                    );
                }
            }
            Err(Error::DeadlineExceeded) => break,
            Err(e) => return Err(e.to_string()),
        }
    }
    eprintln!("{n} records");
    Ok(())
}

fn info(o: Opts) -> Result<(), String> {
    let ring = o.open()?;
    let reader = Reader::new(&ring).map_err(|e| e.to_string())?;
    println!("map id:            {}", ring.id());
    println!("size:              {} bytes", ring.size());
    println!("producer position: {}", reader.producer_position());
    println!("consumer position: {}", reader.consumer_position());
    println!("unconsumed:        {} bytes", reader.available_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("4K"), Some(4096));
        assert_eq!(parse_size("4MiB"), Some(4 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("4T"), None);
    }

    #[test]
    fn options_parse() {
        let args: Vec<String> = ["--records", "10", "--size", "1K", "--producers", "2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let o = Opts::parse(&args).unwrap();
        assert_eq!((o.records, o.size, o.producers), (10, 1024, 2));
        assert!(Opts::parse(&["--producers".into(), "3".into()]).is_err());
        assert!(Opts::parse(&["--bogus".into()]).is_err());
        assert!(Opts::parse(&["--size".into()]).is_err());
    }
}
