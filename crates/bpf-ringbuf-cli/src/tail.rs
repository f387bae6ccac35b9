//! `tail <ID|PIN>`: print records as they arrive.

use std::io::{BufWriter, IsTerminal as _, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use bpf_ringbuf::{abi, Error, MapInfo, Reader, RingBuf, Spectator, Start, WakePolicy};
use serde_json::json;

use crate::common::{holders_of, lost_counter, parse_count, parse_duration, Holder, Target};
use crate::layout::{hex, Layout};

/// Print a ring's records as they arrive, without consuming them
///
/// Records are printed as they arrive, without taking them from the process
/// that owns the ring (unless --consume).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  bpf-ringbuf tail 42
  bpf-ringbuf tail /sys/fs/bpf/events --layout 'u32 pid, u32 tgid, u64 ts, char[16] comm'
  bpf-ringbuf tail 42 --format json --count 100 | jq .fields.comm
  bpf-ringbuf tail 42 --format raw --timeout 10s > records.bin
  bpf-ringbuf tail 42 --consume --max-latency 10ms     be the ring's consumer

Formats: hex (a hexdump per record), json (JSON lines: pos, len, the payload in
hex or base64, and the --layout fields), raw (frames of a u32 little-endian
length and the record's bytes, for another program; --layout does not change
them). --layout fields: u8..u64, i8..i64 (little-endian), char[N] (text),
u8[N] (hex), at C struct offsets.

Without --consume the ring's consumer position is never written: the owner
still gets every record. --consume makes this tool the consumer: records it
prints are gone for everyone else, so it refuses while another process holds
the ring, unless --force. It hands records back to the kernel only once they
are written out: what it could not print stays in the ring.

Ends after --count records, at --timeout, when stdout closes (exit 0, quietly)
or on Ctrl-C (a summary line on stderr: records, bytes, lapped, lost).")]
pub struct Args {
    /// The ring: a map id (see `list`) or a pin path.
    target: Target,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Hex)]
    format: Format,
    /// Decode each record into named fields: 'TYPE NAME, ...'.
    #[arg(long, value_name = "FIELDS", value_parser = Layout::parse)]
    layout: Option<Layout>,
    /// How json shows the payload.
    #[arg(long, value_enum, default_value_t = Payload::Hex)]
    payload: Payload,
    /// Stop after N records.
    #[arg(long, short = 'n', value_name = "N", value_parser = parse_count)]
    count: Option<u64>,
    /// Stop after this long (e.g. 500ms, 10s).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Look again at an empty ring at least this often. With --consume,
    /// the wake policy Adaptive: nap up to this long instead of being woken
    /// by the producer for each record (cheaper for the producer).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    max_latency: Option<Duration>,
    /// Where to start: the oldest record the ring holds, or only records
    /// written from now on.
    #[arg(long, value_enum, default_value_t = Since::Oldest)]
    since: Since,
    /// Consume the records (this tool becomes the ring's consumer).
    #[arg(long)]
    consume: bool,
    /// With --consume: consume even though another process holds the ring.
    #[arg(long, requires = "consume")]
    force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Format {
    Hex,
    Json,
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Payload {
    Hex,
    Base64,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Since {
    /// The oldest record the ring still holds: the oldest unconsumed one
    /// (in overwrite mode, the oldest not yet overwritten).
    Oldest,
    /// Records written after the start.
    Now,
}

/// How often the loop looks up from a blocking read: for Ctrl-C in the
/// modes without a close handle, and whether the ring still exists.
const CHECK_EVERY: Duration = Duration::from_millis(250);

/// Records between two flushes of the output when it is not a terminal (a
/// consumer hands records back to the kernel at each flush: the ring must
/// not fill with records already printed).
const FLUSH_EVERY: usize = 256;

/// Where records come from.
enum Source {
    /// A spectator: the consumer position is never written.
    Watch(Spectator),
    /// The ring's consumer: every record printed is consumed.
    Consume(Reader),
}

/// A record copied out of the ring.
struct Rec {
    pos: u64,
    data: Vec<u8>,
}

/// What [`Source::next`] found.
enum Got {
    Record,
    /// Nothing now, or nothing until the deadline.
    Empty,
    /// Closed by Ctrl-C.
    Closed,
}

impl Source {
    /// The next record, copied into `rec`: one present now (`wait_until`
    /// `None`), or waiting for one until `wait_until`.
    fn next(&mut self, rec: &mut Rec, wait_until: Option<Instant>) -> anyhow::Result<Got> {
        let got = match self {
            Source::Watch(s) => {
                let obs = match wait_until {
                    None => s.try_read_into(&mut rec.data).transpose(),
                    Some(d) => {
                        s.set_deadline(Some(d));
                        Some(s.read_into(&mut rec.data))
                    }
                };
                obs.map(|o| o.map(|o| rec.pos = o.position))
            }
            Source::Consume(r) => {
                let data = match wait_until {
                    None => r.try_read_zero_copy().transpose(),
                    Some(d) => {
                        r.set_deadline(Some(d));
                        Some(r.read_zero_copy())
                    }
                };
                data.map(|d| {
                    d.map(|data| {
                        let end = r.read_position() as u64;
                        rec.pos = end.wrapping_sub(abi::record_stride(data.len()) as u64);
                        rec.data.clear();
                        rec.data.extend_from_slice(data);
                    })
                })
            }
        };
        match got {
            Some(Ok(())) => Ok(Got::Record),
            None | Some(Err(Error::DeadlineExceeded | Error::Flushed)) => Ok(Got::Empty),
            Some(Err(Error::Closed)) => Ok(Got::Closed),
            Some(Err(e)) => Err(e.into()),
        }
    }

    /// The records returned so far have been written out: a consumer hands
    /// them back to the kernel only now, so a record it could not print
    /// (stdout closed, a crash) is still in the ring for the next consumer.
    fn done(&mut self) {
        match self {
            Source::Watch(_) => {}
            Source::Consume(r) => r.commit(),
        }
    }

    /// The reader's telemetry, for a consumer (a spectator waits by polling).
    fn telemetry(&self) -> String {
        match self {
            Source::Watch(_) => String::new(),
            Source::Consume(r) => {
                let s = r.stats();
                format!(
                    "; reader: {} commits, {} sleeps, {} wakeups, fill high-water {} bytes",
                    s.commits, s.sleeps, s.wakeups, s.max_fill
                )
            }
        }
    }

    /// Records and bytes the producer overwrote before they were copied.
    fn lapped(&self) -> (u64, u64) {
        match self {
            Source::Watch(s) => (s.stats().lapped_records, s.stats().lapped_bytes),
            Source::Consume(_) => (0, 0),
        }
    }
}

/// What was printed.
#[derive(Default)]
struct Totals {
    records: u64,
    bytes: u64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let ring = args.target.open()?;
    let info = MapInfo::of(&ring)?;
    let holders = holders_of(info.id);
    let stop = Arc::new(AtomicBool::new(false));
    let mut source = open_source(&args, &ring, &holders, &stop)?;
    let lost = lost_counter(&args.target, &info.name);
    let lost_at_start = lost.as_ref().and_then(|l| l.read().ok()).map(|l| l.total);

    let tty = std::io::stdout().is_terminal();
    let mut out = BufWriter::with_capacity(64 << 10, std::io::stdout().lock());
    let end_at = args.timeout.map(|t| Instant::now() + t);
    let mut totals = Totals::default();
    let mut rec = Rec {
        pos: 0,
        data: Vec::new(),
    };
    let mut next_check = Instant::now() + CHECK_EVERY;
    // Records written to `out` but not yet flushed (and, as the consumer,
    // not yet handed back: a record is consumed only once it is out).
    let mut pending = 0usize;
    let reason = loop {
        if args.count.is_some_and(|c| totals.records >= c) {
            break End::Count;
        }
        let mut got = source.next(&mut rec, None)?;
        if !matches!(got, Got::Record) {
            // Nothing now: show what was written, hand it back, then wait.
            out.flush()?;
            source.done();
            pending = 0;
            if matches!(got, Got::Closed) || stop.load(Ordering::Relaxed) {
                break End::Interrupted;
            }
            let now = Instant::now();
            if end_at.is_some_and(|t| now >= t) {
                break End::Timeout;
            }
            if now >= next_check {
                check_still_there(&args.target, &info, &holders)?;
                next_check = now + CHECK_EVERY;
            }
            got = source.next(
                &mut rec,
                Some(end_at.map_or(next_check, |t| t.min(next_check))),
            )?;
            match got {
                Got::Record => {}
                Got::Empty => continue,
                Got::Closed => break End::Interrupted,
            }
        }
        write_record(&mut out, &args, &rec, totals.records)?;
        totals.records += 1;
        totals.bytes += rec.data.len() as u64;
        pending += 1;
        if tty || pending >= FLUSH_EVERY {
            out.flush()?;
            source.done();
            pending = 0;
        }
    };
    out.flush()?;
    source.done();
    if reason != End::Count {
        let (lapped, lapped_bytes) = source.lapped();
        let lost = match (lost.and_then(|l| l.read().ok()), lost_at_start) {
            (Some(now), Some(then)) => format!("{} lost", now.total.wrapping_sub(then)),
            _ => "lost unknown (no lost-event counter)".into(),
        };
        eprintln!(
            "bpf-ringbuf tail: {} records, {} bytes, {lapped} lapped ({lapped_bytes} bytes), {lost}{}{}",
            totals.records,
            totals.bytes,
            source.telemetry(),
            match reason {
                End::Interrupted => " (interrupted)",
                End::Timeout => " (timeout)",
                End::Count => "",
            }
        );
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum End {
    Count,
    Timeout,
    Interrupted,
}

fn open_source(
    args: &Args,
    ring: &RingBuf,
    holders: &[Holder],
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<Source> {
    let (source, handle) = if args.consume {
        if !holders.is_empty() && !args.force {
            let who: Vec<String> = holders.iter().map(ToString::to_string).collect();
            bail!(
                "{} is held by {}: consuming would take its events from it; \
                 use --force to consume anyway, or leave out --consume",
                args.target,
                who.join(", ")
            );
        }
        let mut reader = Reader::new(ring).context("cannot consume the ring")?;
        if let Some(max_latency) = args.max_latency {
            reader.set_wake_policy(WakePolicy::Adaptive { max_latency });
        }
        if args.since == Since::Now {
            // Consumed without printing: the records present are skipped.
            reader.consume(|_| std::ops::ControlFlow::Continue(()))?;
        }
        let handle = reader.handle();
        (Source::Consume(reader), handle)
    } else {
        let start = match args.since {
            Since::Oldest => Start::Oldest,
            Since::Now => Start::Now,
        };
        let mut spectator = Spectator::new(ring, start).context("cannot watch the ring")?;
        if let Some(max_latency) = args.max_latency {
            spectator.set_poll_interval(max_latency);
        }
        let handle = spectator.handle();
        (Source::Watch(spectator), handle)
    };
    let stop = stop.clone();
    ctrlc::set_handler(move || {
        stop.store(true, Ordering::Relaxed);
        handle.close();
    })
    .context("cannot handle Ctrl-C")?;
    Ok(source)
}

/// Fails once the ring is gone: its pin removed or replaced, or (named by
/// id) every process that held it at the start has closed it.
fn check_still_there(target: &Target, info: &MapInfo, holders: &[Holder]) -> anyhow::Result<()> {
    match target {
        Target::Pin(p) => match RingBuf::open_pinned(p) {
            Ok(r) if r.id() == info.id => Ok(()),
            Ok(r) => bail!(
                "ring {} was replaced while tail ran (its pin now names map {})",
                p.display(),
                r.id()
            ),
            Err(Error::PinNotFound { .. }) => bail!(
                "ring {} was deleted while tail ran (its pin is gone)",
                p.display()
            ),
            Err(e) => Err(anyhow::Error::new(e).context(format!("cannot reopen {}", p.display()))),
        },
        Target::Id(id) => {
            if !holders.is_empty() && holders_of(*id).is_empty() {
                bail!("ring {id} was deleted while tail ran: every process that held it closed it");
            }
            Ok(())
        }
    }
}

fn write_record(out: &mut impl Write, args: &Args, rec: &Rec, n: u64) -> anyhow::Result<()> {
    let data = &rec.data;
    match args.format {
        Format::Raw => {
            out.write_all(&(data.len() as u32).to_le_bytes())?;
            out.write_all(data)?;
        }
        Format::Json => {
            let mut v = json!({ "pos": rec.pos, "len": data.len() });
            match args.payload {
                Payload::Hex => v["data"] = hex(data).into(),
                Payload::Base64 => {
                    v["data_base64"] = base64::engine::general_purpose::STANDARD
                        .encode(data)
                        .into()
                }
                Payload::None => {}
            }
            if let Some(l) = &args.layout {
                v["fields"] = l.json(data);
            }
            writeln!(out, "{v}")?;
        }
        Format::Hex => {
            writeln!(out, "#{} pos {} len {}", n + 1, rec.pos, data.len())?;
            if let Some(l) = &args.layout {
                writeln!(out, "  {}", l.text(data))?;
            }
            hexdump(out, data)?;
        }
    }
    Ok(())
}

/// `  0000  01 02 ... 08  09 ... 10  |................|`
fn hexdump(out: &mut impl Write, data: &[u8]) -> std::io::Result<()> {
    for (i, line) in data.chunks(16).enumerate() {
        let mut hexes = String::with_capacity(50);
        for j in 0..16 {
            if j == 8 {
                hexes.push(' ');
            }
            match line.get(j) {
                Some(b) => hexes.push_str(&format!("{b:02x} ")),
                None => hexes.push_str("   "),
            }
        }
        let ascii: String = line
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        writeln!(out, "  {:04x}  {hexes} |{ascii}|", 16 * i)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hexdump_lines() {
        let mut out = Vec::new();
        hexdump(&mut out, b"0123456789abcdefXY\x00").unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "  0000  30 31 32 33 34 35 36 37  38 39 61 62 63 64 65 66  |0123456789abcdef|"
        );
        assert!(lines[1].starts_with("  0010  58 59 00    "), "{}", lines[1]);
        assert!(lines[1].ends_with(" |XY.|"), "{}", lines[1]);
    }
}
