//! `stat <ID|PIN>`: one ring in detail; `--watch` redraws it with rates.

use std::io::{IsTerminal as _, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bpf_ringbuf::{LostCounter, MapInfo, Spectator};

use crate::common::{
    describe_lost, holders_of, human_bytes, lost_counter, parse_duration, watcher, Positions,
    Target,
};
use crate::list::{flags, kind};

/// Show one ring in detail; --watch for rates
///
/// Size, flags, positions, fill, the processes that hold it, and its
/// lost-event counter (the library's `NAME_lost` convention) when there is
/// one.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  bpf-ringbuf stat 42
  bpf-ringbuf stat /sys/fs/bpf/events --watch          redraw every second
  bpf-ringbuf stat 42 --watch 250ms --samples 20 | tee fill.log

With --watch on a terminal the screen is redrawn with rates (bytes/s produced
and consumed), the consumer's lag and the fill; piped, one line per interval.
The lost-event counter is found pinned at PIN_lost, or as a map named NAME_lost.")]
pub struct Args {
    /// The ring: a map id (see `list`) or a pin path.
    target: Target,
    /// Redraw every INTERVAL (default 1s) with rates, until Ctrl-C.
    #[arg(long, value_name = "INTERVAL", num_args = 0..=1, default_missing_value = "1s",
          value_parser = parse_duration)]
    watch: Option<Duration>,
    /// With --watch: stop after N samples.
    #[arg(long, value_name = "N", requires = "watch")]
    samples: Option<u64>,
}

/// One look at the ring.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    pos: Positions,
    lost: Option<u64>,
}

fn sample(ring: &Spectator, lost: Option<&LostCounter>) -> Sample {
    Sample {
        at: Instant::now(),
        pos: Positions::now(ring),
        lost: lost.and_then(|l| l.read().ok()).map(|l| l.total),
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let ring = args.target.open()?;
    let info = MapInfo::of(&ring)?;
    let ring = watcher(&ring)?;
    let lost = lost_counter(&args.target, &info.name);
    let mut out = std::io::stdout().lock();
    let Some(every) = args.watch else {
        return details(
            &mut out,
            &info,
            &sample(&ring, lost.as_ref()),
            lost.as_ref(),
            None,
        );
    };
    let tty = std::io::stdout().is_terminal();
    let mut prev = sample(&ring, lost.as_ref());
    if !tty {
        writeln!(
            out,
            "# time_s produced_Bps consumed_Bps lag_bytes fill_pct lost (map {}, every {:?})",
            info.id, every
        )?;
    }
    let start = prev.at;
    // Ctrl-C ends the watch between two samples, with exit code 0.
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed))
        .context("cannot handle Ctrl-C")?;
    let mut n = 0u64;
    while args.samples.is_none_or(|max| n < max) {
        let wake = Instant::now() + every;
        while !stop.load(Ordering::Relaxed) && Instant::now() < wake {
            std::thread::sleep((wake - Instant::now()).min(Duration::from_millis(50)));
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let now = sample(&ring, lost.as_ref());
        let secs = now.at.duration_since(prev.at).as_secs_f64().max(1e-9);
        let rates = Rates {
            produced: now.pos.producer.wrapping_sub(prev.pos.producer) as f64 / secs,
            consumed: now.pos.consumer.wrapping_sub(prev.pos.consumer) as f64 / secs,
            lost: match (now.lost, prev.lost) {
                (Some(a), Some(b)) => Some(a.wrapping_sub(b) as f64 / secs),
                _ => None,
            },
        };
        if tty {
            // Home, clear the screen, draw.
            write!(out, "\x1b[H\x1b[2J")?;
            details(&mut out, &info, &now, lost.as_ref(), Some(&rates))?;
            writeln!(out, "\n(every {every:?}; Ctrl-C to stop)")?;
        } else {
            writeln!(
                out,
                "{:.3} {:.0} {:.0} {} {:.1} {}",
                now.at.duration_since(start).as_secs_f64(),
                rates.produced,
                rates.consumed,
                now.pos.unconsumed(),
                100.0 * crate::list::fill(&info, now.pos),
                now.lost.map_or("-".into(), |l| l.to_string()),
            )?;
        }
        out.flush()?;
        prev = now;
        n += 1;
    }
    Ok(())
}

/// Rates between two samples, per second.
struct Rates {
    produced: f64,
    consumed: f64,
    lost: Option<f64>,
}

fn details(
    out: &mut impl Write,
    info: &MapInfo,
    s: &Sample,
    lost: Option<&LostCounter>,
    rates: Option<&Rates>,
) -> anyhow::Result<()> {
    let size = u64::from(info.max_entries);
    writeln!(out, "map id:             {}", info.id)?;
    writeln!(out, "name:               {}", info.name)?;
    writeln!(
        out,
        "kind:               {} (BPF_MAP_TYPE_{})",
        kind(info),
        info.type_name
    )?;
    writeln!(
        out,
        "size:               {size} bytes ({})",
        human_bytes(size)
    )?;
    writeln!(
        out,
        "flags:              {} ({:#x})",
        flags(info),
        info.map_flags
    )?;
    writeln!(out, "producer position:  {}", s.pos.producer)?;
    writeln!(out, "consumer position:  {}", s.pos.consumer)?;
    writeln!(
        out,
        "unconsumed:         {} bytes ({:.1}% full)",
        s.pos.unconsumed(),
        100.0 * crate::list::fill(info, s.pos)
    )?;
    let holders = holders_of(info.id);
    let held = if holders.is_empty() {
        "no other process".to_string()
    } else {
        holders
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    writeln!(out, "held by:            {held}")?;
    match lost.map(|l| (l.id(), l.read())) {
        Some((id, Ok(l))) => writeln!(
            out,
            "lost events:        {} (counter map {id})",
            describe_lost(&l)
        )?,
        Some((id, Err(e))) => {
            writeln!(out, "lost events:        unreadable counter map {id}: {e}")?
        }
        None => writeln!(
            out,
            "lost events:        no counter (no map {} pinned or named by the convention)",
            LostCounter::name_for(&info.name)
        )?,
    }
    if let Some(r) = rates {
        writeln!(
            out,
            "produced:           {}/s",
            human_bytes(r.produced as u64)
        )?;
        writeln!(
            out,
            "consumed:           {}/s",
            human_bytes(r.consumed as u64)
        )?;
        writeln!(out, "consumer lag:       {} bytes", s.pos.unconsumed())?;
        if let Some(l) = r.lost {
            writeln!(out, "lost:               {l:.1} events/s")?;
        }
    }
    Ok(())
}
