//! `trace exec`: a real event source out of the box, an execsnoop.

use std::io::{BufWriter, IsTerminal as _, Write};

use anyhow::Context as _;
use bpf_ringbuf::{Error, Reader, Record};
use bpf_ringbuf_trace::{ExecEvent, ExecTracer};
use serde_json::json;

use crate::common::{parse_count, parse_size};

/// Trace events with a built-in BPF program (trace exec: an execsnoop)
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    what: What,
}

#[derive(Debug, clap::Subcommand)]
enum What {
    Exec(ExecArgs),
}

/// Print every exec on the host as it happens (an execsnoop)
///
/// Pid, parent pid, uid and command, from a BPF program on the
/// sched_process_exec raw tracepoint that writes them into a ring buffer.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  bpf-ringbuf trace exec
  bpf-ringbuf trace exec --json | jq 'select(.uid == 0)'
  bpf-ringbuf trace exec --comm make --count 1

While it runs, `bpf-ringbuf list` shows its ring (exec_events), and
`bpf-ringbuf tail <ID> --layout '...'` prints the same events from the ring
(the layout is: u32 pid, u32 ppid, u32 uid, u32 reserved, char[16] comm).")]
struct ExecArgs {
    /// JSON lines instead of a table.
    #[arg(long)]
    json: bool,
    /// Only commands with this name.
    #[arg(long, value_name = "NAME")]
    comm: Option<String>,
    /// Stop after N events.
    #[arg(long, short = 'n', value_name = "N", value_parser = parse_count)]
    count: Option<u64>,
    /// The ring's size.
    #[arg(long, value_name = "BYTES", default_value = "256K", value_parser = parse_size)]
    ring: usize,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.what {
        What::Exec(a) => exec(a),
    }
}

fn exec(args: ExecArgs) -> anyhow::Result<()> {
    let tracer = ExecTracer::new(args.ring).context("cannot start the exec tracer")?;
    let mut reader = Reader::new(tracer.ring())?;
    let handle = reader.handle();
    ctrlc::set_handler(move || handle.close()).context("cannot handle Ctrl-C")?;
    eprintln!(
        "tracing exec into ring {} (Ctrl-C to stop)",
        tracer.ring().id()
    );
    let tty = std::io::stdout().is_terminal();
    let mut out = BufWriter::new(std::io::stdout().lock());
    if !args.json {
        writeln!(out, "{:>8} {:>8} {:>6}  COMM", "PID", "PPID", "UID")?;
    }
    let mut rec = Record::default();
    let mut seen = 0u64;
    while args.count.is_none_or(|c| seen < c) {
        if !tty {
            // Each event as it happens, also into a pipe.
            out.flush()?;
        }
        match reader.read_into(&mut rec) {
            Ok(()) => {}
            Err(Error::Closed) => break,
            Err(e) => return Err(e.into()),
        }
        let Some(ev) = ExecEvent::parse(&rec.data) else {
            continue;
        };
        if args.comm.as_ref().is_some_and(|c| *c != ev.comm) {
            continue;
        }
        seen += 1;
        if args.json {
            let v = json!({"pid": ev.pid, "ppid": ev.ppid, "uid": ev.uid, "comm": ev.comm});
            writeln!(out, "{v}")?;
        } else {
            writeln!(
                out,
                "{:>8} {:>8} {:>6}  {}",
                ev.pid, ev.ppid, ev.uid, ev.comm
            )?;
        }
        if tty {
            out.flush()?;
        }
    }
    out.flush()?;
    Ok(())
}
