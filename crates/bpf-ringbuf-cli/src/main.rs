//! `bpf-ringbuf`: a command-line tool for BPF ring buffers. Every command is
//! a module of its own with its own options; `--help` documents them.
//!
//! Exit codes: 0 success (also when stdout is closed early, `| head`), 1 an
//! error (one line on stderr), 2 a usage error (clap's message).
//!
//! Uses only the public API of the `bpf-ringbuf` crate (and the tracer
//! crate for `trace exec`).
#![forbid(unsafe_code)]

mod bench;
mod common;
mod completions;
mod demo;
mod layout;
mod list;
mod stat;
mod tail;
mod trace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The top-level help's closing lines.
const EXAMPLES: &str = "\
Examples:
  bpf-ringbuf list                            every ring buffer on the host
  bpf-ringbuf stat 42 --watch                 one ring's fill and rates, redrawn every second
  bpf-ringbuf tail /sys/fs/bpf/events --layout 'u32 pid, u32 tgid, u64 ts, char[16] comm'
  bpf-ringbuf trace exec                      every exec on the host, as it happens
  bpf-ringbuf demo                            a kernel producer, a zero-copy reader, verified

Rings are named by map id (as `list` shows) or by pin path. Needs root (or CAP_BPF;
`list` also CAP_SYS_ADMIN). Exit codes: 0 ok, 1 error, 2 usage.";

#[derive(Debug, Parser)]
#[command(
    name = "bpf-ringbuf",
    version,
    about = "Look into BPF ring buffers: list them, watch their fill, print their records",
    arg_required_else_help = true,
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    List(list::Args),
    Stat(stat::Args),
    Tail(tail::Args),
    Trace(trace::Args),
    Demo(demo::Args),
    Bench(bench::Args),
    Completions(completions::Args),
}

fn main() -> ExitCode {
    // clap prints usage errors and exits 2 (0 for --help and --version).
    let cli = Cli::parse();
    let result = match cli.command {
        Command::List(a) => list::run(a),
        Command::Stat(a) => stat::run(a),
        Command::Tail(a) => tail::run(a),
        Command::Trace(a) => trace::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Completions(a) => completions::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`| head`): that is the end
        // it asked for, not an error.
        Err(e) if common::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bpf-ringbuf: {}", common::one_line(&e));
            ExitCode::FAILURE
        }
    }
}
