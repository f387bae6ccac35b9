//! Event sources for the `bpf-ringbuf` CLI: BPF programs that write into a
//! ring buffer, hand-assembled (no compiler, no object file) and loaded here,
//! so the tool has something real to show out of the box.
//!
//! [`ExecTracer`] is an execsnoop: a program on the `sched_process_exec` raw
//! tracepoint (a raw tracepoint needs no tracefs) that writes an
//! [`ExecEvent`] (pid, parent pid, uid, command name) for every `execve`
//! on the host into a [`RingBuf`]. Read it with the library's `Reader`.
//!
//! ```no_run
//! use bpf_ringbuf::Reader;
//! use bpf_ringbuf_trace::{ExecEvent, ExecTracer};
//!
//! let tracer = ExecTracer::new(1 << 16)?;
//! let mut reader = Reader::new(tracer.ring())?;
//! let rec = reader.read()?;
//! let ev = ExecEvent::parse(&rec.data).expect("the program writes whole events");
//! println!("{} {} {} {}", ev.pid, ev.ppid, ev.uid, ev.comm);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The library does not load programs (that is aya's and libbpf-rs's job);
//! this crate is the CLI's, and its `unsafe` stays in `sys.rs`. Needs root
//! (`CAP_BPF` and `CAP_PERFMON`), Linux 5.8+ and kernel BTF
//! (`/sys/kernel/btf/vmlinux`) for the offsets of `task_struct`.
#![deny(missing_docs)]
#![deny(unsafe_code)]

mod btf;
mod prog;
#[expect(unsafe_code, reason = "the bpf() system call")]
mod sys;

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use bpf_ringbuf::{LostCounter, RingBuf};

/// What can go wrong while loading or attaching a tracer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TraceError {
    /// Creating the ring failed.
    #[error(transparent)]
    Ring(#[from] bpf_ringbuf::Error),
    /// The kernel refused for lack of privilege.
    #[error("{call}: permission denied (tracing needs root, or CAP_BPF and CAP_PERFMON)")]
    PermissionDenied {
        /// The system call.
        call: &'static str,
        /// `EPERM` or `EACCES`.
        #[source]
        source: io::Error,
    },
    /// Another system call failure.
    #[error("{call} failed: {source}")]
    Syscall {
        /// The system call.
        call: &'static str,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The verifier refused the program.
    #[error("the BPF verifier rejected the program ({source}): {log}")]
    Rejected {
        /// The failed load.
        source: Box<TraceError>,
        /// The end of the verifier log.
        log: String,
    },
    /// The kernel's BTF is missing or not understood.
    #[error("kernel BTF: {0}")]
    Btf(String),
}

impl TraceError {
    fn from_os(call: &'static str, source: io::Error) -> TraceError {
        match source.raw_os_error() {
            Some(libc::EPERM) => TraceError::PermissionDenied { call, source },
            _ => TraceError::Syscall { call, source },
        }
    }
}

/// One `execve`, as the program writes it: 32 bytes, little-endian.
///
/// | offset | field |
/// |---|---|
/// | 0 | `u32 pid` (the thread group id: what `ps` calls the pid) |
/// | 4 | `u32 ppid` (`task->real_parent->tgid`) |
/// | 8 | `u32 uid` |
/// | 12 | `u32` reserved, 0 |
/// | 16 | `char comm[16]` (the new program's name, NUL-padded) |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecEvent {
    /// Process id of the process that exec'd.
    pub pid: u32,
    /// Its parent's process id.
    pub ppid: u32,
    /// Its real user id.
    pub uid: u32,
    /// The command name after the exec (at most 15 bytes).
    pub comm: String,
}

impl ExecEvent {
    /// The record size.
    pub const SIZE: usize = 32;
    /// The record's layout for the CLI's `--layout` option.
    pub const LAYOUT: &'static str = "u32 pid, u32 ppid, u32 uid, u32 reserved, char[16] comm";

    /// Decodes a record; `None` unless it is [`SIZE`](Self::SIZE) bytes.
    pub fn parse(rec: &[u8]) -> Option<ExecEvent> {
        if rec.len() != Self::SIZE {
            return None;
        }
        let word = |at: usize| u32::from_le_bytes(rec[at..at + 4].try_into().expect("4 bytes"));
        let comm = &rec[16..];
        let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
        Some(ExecEvent {
            pid: word(0),
            ppid: word(4),
            uid: word(8),
            comm: String::from_utf8_lossy(&comm[..end]).into_owned(),
        })
    }
}

/// The execsnoop: a program attached to `sched_process_exec` that writes an
/// [`ExecEvent`] per exec into its own ring, and counts the events it could
/// not write (the ring was full) in a [`LostCounter`] named by the
/// library's convention (`exec_event_lost`). Dropping it detaches the
/// program.
#[derive(Debug)]
pub struct ExecTracer {
    /// The attachment: closed first, so the program stops before anything else.
    _link: OwnedFd,
    _prog: OwnedFd,
    ring: RingBuf,
    lost: LostCounter,
}

impl ExecTracer {
    /// The ring's map name.
    pub const RING_NAME: &'static str = "exec_events";

    /// Creates a ring of `ring_size` bytes (a power of two, a multiple of
    /// the page size) and its lost-event counter, loads the program and
    /// attaches it. A reservation that fails because the ring is full loses
    /// that event, and counts it.
    pub fn new(ring_size: usize) -> Result<ExecTracer, TraceError> {
        let ring = RingBuf::create_named(ring_size, Self::RING_NAME)?;
        let lost = LostCounter::create(&LostCounter::name_for(Self::RING_NAME))?;
        let blob = std::fs::read(btf::VMLINUX)
            .map_err(|e| TraceError::Btf(format!("{}: {e}", btf::VMLINUX)))?;
        let offs =
            btf::Btf::parse(&blob)?.member_offsets("task_struct", &["real_parent", "tgid"])?;
        let insns = prog::exec_program(
            ring.as_fd().as_raw_fd(),
            lost.as_fd().as_raw_fd(),
            offs[0],
            offs[1],
        );
        let prog = sys::load_raw_tracepoint(&insns, "execsnoop")?;
        let link = sys::raw_tracepoint_open(prog.as_fd(), c"sched_process_exec")?;
        Ok(ExecTracer {
            _link: link,
            _prog: prog,
            ring,
            lost,
        })
    }

    /// The count of events lost because the ring was full.
    pub fn lost(&self) -> &LostCounter {
        &self.lost
    }

    /// The ring the program writes into.
    pub fn ring(&self) -> &RingBuf {
        &self.ring
    }
}
