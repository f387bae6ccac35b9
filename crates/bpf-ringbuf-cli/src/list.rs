//! `list`: every ring buffer on the host.

use std::io::Write as _;

use anyhow::Context as _;
use bpf_ringbuf::{map_ids, MapInfo};
use serde_json::json;

use crate::common::{holders, human_bytes, Holder, Positions, Target};

/// List every ring buffer on the host, with its fill and holders
///
/// Every map from BPF_MAP_GET_NEXT_ID that is a ring buffer: id, name, kind,
/// size, flags, producer and consumer positions, fill and the processes that
/// hold it (from /proc/*/fdinfo).
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  bpf-ringbuf list
  bpf-ringbuf list --json | jq '.[] | select(.fill > 0.5)'

FILL is the share of the ring produced and not yet consumed. HELD BY lists the
processes with a descriptor of the map (this one excluded). Positions are shown
for kernel-producer rings (RINGBUF); a user ring (USER_RINGBUF) shows its size.")]
pub struct Args {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    json: bool,
}

/// One ring as listed.
struct Row {
    info: MapInfo,
    positions: Option<Positions>,
    holders: Vec<Holder>,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // Scan /proc before opening anything: our own descriptors are not listed.
    let mut held = holders();
    let mut rows = Vec::new();
    for id in map_ids() {
        let id = id.context("cannot list BPF maps")?;
        // A map freed between the two calls is simply not listed.
        let Ok(info) = MapInfo::from_id(id) else {
            continue;
        };
        if !info.is_ring_buffer() {
            continue;
        }
        let positions = if info.map_type == MapInfo::RINGBUF {
            Target::Id(id).open().and_then(|r| Positions::of(&r)).ok()
        } else {
            None
        };
        rows.push(Row {
            holders: held.remove(&id).unwrap_or_default(),
            info,
            positions,
        });
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let v: Vec<_> = rows.iter().map(row_json).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    writeln!(
        out,
        "{:>6}  {:<15}  {:<9}  {:>9}  {:<9}  {:>12}  {:>12}  {:>6}  HELD BY",
        "ID", "NAME", "KIND", "SIZE", "FLAGS", "PRODUCER", "CONSUMER", "FILL"
    )?;
    for r in &rows {
        let (prod, cons, fill) = match r.positions {
            Some(p) => (
                p.producer.to_string(),
                p.consumer.to_string(),
                format!("{:.1}%", 100.0 * fill(&r.info, p)),
            ),
            None => ("-".into(), "-".into(), "-".into()),
        };
        let holders = if r.holders.is_empty() {
            "-".to_string()
        } else {
            r.holders
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            out,
            "{:>6}  {:<15}  {:<9}  {:>9}  {:<9}  {:>12}  {:>12}  {:>6}  {holders}",
            r.info.id,
            r.info.name,
            kind(&r.info),
            human_bytes(r.info.max_entries.into()),
            flags(&r.info),
            prod,
            cons,
            fill,
        )?;
    }
    if rows.is_empty() {
        writeln!(out, "(no ring buffers)")?;
    }
    Ok(())
}

/// `ring` or `user ring`.
pub fn kind(info: &MapInfo) -> &'static str {
    if info.map_type == MapInfo::USER_RINGBUF {
        "user ring"
    } else {
        "ring"
    }
}

/// `-`, `overwrite`, or the flags in hex.
pub fn flags(info: &MapInfo) -> String {
    match info.map_flags {
        0 => "-".into(),
        f if f == MapInfo::OVERWRITE => "overwrite".into(),
        f => format!("{f:#x}"),
    }
}

/// Unconsumed bytes as a share of the size.
pub fn fill(info: &MapInfo, p: Positions) -> f64 {
    p.unconsumed() as f64 / f64::from(info.max_entries.max(1))
}

fn row_json(r: &Row) -> serde_json::Value {
    json!({
        "id": r.info.id,
        "name": r.info.name,
        "kind": kind(&r.info),
        "type": r.info.type_name,
        "size": r.info.max_entries,
        "flags": r.info.map_flags,
        "overwrite": r.info.map_flags & MapInfo::OVERWRITE != 0,
        "producer_pos": r.positions.map(|p| p.producer),
        "consumer_pos": r.positions.map(|p| p.consumer),
        "unconsumed": r.positions.map(|p| p.unconsumed()),
        "fill": r.positions.map(|p| fill(&r.info, p)),
        "holders": r.holders.iter().map(|h| json!({"pid": h.pid, "comm": h.comm})).collect::<Vec<_>>(),
    })
}
