//! Read Linux BPF ring buffers (`BPF_MAP_TYPE_RINGBUF`) in place, at the speed
//! of memory.
//!
//! A [`Reader`] maps the ring and hands out each record as a slice of the
//! kernel's memory ([`Reader::read_zero_copy`]); the consumer position goes
//! back to the kernel once per batch ([`Reader::commit`]), not once per
//! record. Because `commit` takes `&mut self`, the borrow checker proves that
//! no slice is used after its space is returned to the kernel.
//!
//! ```no_run
//! # fn main() -> bpf_ringbuf::Result<()> {
//! use bpf_ringbuf::{Error, Reader, RingBuf};
//!
//! let ring = RingBuf::create(1 << 20)?; // or RingBuf::open_pinned, from_id, from_fd
//! let mut reader = Reader::new(&ring)?;
//! loop {
//!     match reader.read_zero_copy() {
//!         Ok(rec) => println!("{} bytes", rec.len()),
//!         // The ring ran dry with records still borrowed: hand them back,
//!         // then the next read sleeps until the kernel wakes us.
//!         Err(Error::CommitRequired) => reader.commit(),
//!         Err(e) => return Err(e),
//!     }
//! }
//! # }
//! ```
//!
//! # Ways to read
//!
//! | call | copies | blocks | publishes the consumer position |
//! |---|---|---|---|
//! | [`read_zero_copy`](Reader::read_zero_copy) + [`commit`](Reader::commit) | no | when empty | at `commit` (or any `&mut self` call) |
//! | [`batch`](Reader::batch) | no | until a record is there | when the [`Batch`] drops |
//! | [`consume`](Reader::consume) / [`consume_with_budget`](Reader::consume_with_budget) | no | never | once per call |
//! | [`read`](Reader::read) / [`read_into`](Reader::read_into) | yes | when empty | after every record |
//!
//! # The zero-copy contract
//!
//! * A slice from `read_zero_copy` is the record's bytes in the ring. It is
//!   valid, and unchanged, until the next `&mut self` call on the reader
//!   (`commit`, `read`, `read_into`, `consume`, `wait`, `batch`), which
//!   publishes the consumer position past it. The compiler rejects any use
//!   after that (see `tests/ui/`).
//! * Dropping a reader does **not** commit: records read but not committed
//!   are delivered again to the next reader of the map. Nothing is lost.
//! * The kernel cannot reuse the space of uncommitted records. A ring whose
//!   reader holds too much uncommitted makes the BPF program's reservations
//!   fail (it sees NULL or `-EAGAIN` and must count the drop itself). Commit
//!   often: once per batch of tens to thousands of records.
//! * **One consumer per map.** Another consumer of the same map (another
//!   `Reader`, another library, another process) publishing its position
//!   would hand our borrowed records to the kernel while we still read them.
//!
//! # Waiting and wakeups
//!
//! The kernel wakes a sleeping consumer only when it commits a record at the
//! position the consumer has *published* (the consumer had caught up), unless
//! the program passes `BPF_RB_FORCE_WAKEUP`; with `BPF_RB_NO_WAKEUP` it never
//! does. So before sleeping the reader publishes its position, issues a
//! `SeqCst` fence, and checks the ring once more (see the `ring` module
//! source for the full argument). Consequences:
//!
//! * When the ring runs dry while zero-copy records are still uncommitted,
//!   `read_zero_copy` returns [`Error::CommitRequired`] instead of waiting:
//!   sleeping unpublished would sleep through new records, and polling would
//!   spin. Commit, then read again.
//! * Records sent with `BPF_RB_NO_WAKEUP` wake nobody: read them with a
//!   deadline ([`Reader::set_deadline`]; a deadline in the past means "read
//!   what is there now"), a poll interval, or a [`ReaderHandle::flush`].
//!   Once a record at the reader's position was committed without a wakeup,
//!   the records after it wake nobody either, whatever their flags: the
//!   kernel wakes only for a record at the *published* consumer position, and
//!   the reader is now behind. Nothing wakes it until it reads (so a
//!   producer that mixes flags needs the same deadline or interval).
//! * A record that is reserved but not committed (BUSY) stops every reader:
//!   records after it are not returned before it. Blocking reads back off
//!   (spin, yield, then naps on epoll with the position published, so the
//!   commit wakes them) until it is committed.
//! * Each wakeup costs the producer (the BPF program's commit) far more than
//!   the record itself. [`Reader::set_wake_policy`] chooses how an empty ring
//!   is waited for:
//!
//! | [`WakePolicy`] | latency | producer cost | choose it when |
//! |---|---|---|---|
//! | `Kernel` (default) | lowest | a wakeup whenever the reader had caught up | events are rare, or each must be seen at once |
//! | `Interval(d)` | up to `d` | at most one default wakeup per nap | a steady stream with a latency budget |
//! | `Adaptive { max_latency }` | up to `max_latency`, less when the ring fills | as `Interval` | bursty streams, small rings |
//!
//! Every policy answers a wakeup the producer forces (`BPF_RB_FORCE_WAKEUP`),
//! a flush and a close at once. [`Reader::stats`] and [`Consumer::stats`]
//! count records, discards, commits, sleeps, wakeups, BUSY stalls and the
//! ring's fill high-water mark.
//!
//! # The other direction
//!
//! [`UserRingBuf`] produces into a `BPF_MAP_TYPE_USER_RINGBUF`, which a BPF
//! program drains with `bpf_user_ringbuf_drain()`: samples are reserved and
//! written in place ([`Sample`] derefs to `&mut [u8]`), then submitted or
//! discarded, several at a time and in any order. It is `Send` but not
//! `Sync` (one reserving thread, as the kernel requires), and
//! [`Error::SampleTooLarge`] (never fits) is told apart from
//! [`Error::RingFull`] (retry; [`UserRingBuf::reserve_blocking`] waits).
//!
//! # What this crate does not do
//!
//! It does not load or attach BPF programs (use aya or libbpf-rs for that and
//! hand the map's descriptor to [`Reader::new`]), and it does not parse record
//! payloads. A [`Reader`] refuses `BPF_F_RB_OVERWRITE` rings (Linux 6.19+)
//! with [`Error::UnsupportedMapFlags`]: a zero-copy reader cannot read them
//! safely; a [`FlightRecorder`] reads them. Only 64-bit targets are
//! supported (the crate refuses to build for others).
//!
//! # Reads that never consume
//!
//! A [`Spectator`] watches a ring without taking its records (it never
//! writes the consumer position, so an agent's own reader is not disturbed),
//! and a [`FlightRecorder`] reads overwrite-mode rings: the last records,
//! everything since a position, or every record as it comes with gaps
//! in-band. Both copy each record, then check that the producer cannot have
//! overwritten it meanwhile; see the [`spectator`] module for when to use
//! which and why the check is sound.
//!
//! # The core and the blocking reader
//!
//! [`Consumer`] is the non-blocking core: a cursor over one ring and the
//! map's descriptor. Event loops (epoll, mio, tokio) drive it and sleep on
//! its descriptor after [`Consumer::prepare_wait`]. [`Reader`] wraps a
//! `Consumer` with blocking reads, deadlines, a [`WakePolicy`], and a
//! [`ReaderHandle`] to flush or close it from another thread.
//!
//! # One error type
//!
//! Every call returns this crate's one [`Error`]. Read outcomes that are not
//! failures (a passed deadline, a flush, a close, [`Error::CommitRequired`])
//! are variants of it too, rather than a separate type: a read loop matches
//! the two or three it expects and passes the rest up with `?`, and
//! everything converts into `std::io::Error` the same way. The variants a
//! read loop meets are listed on each read method.
//!
//! # Requirements
//!
//! Linux 5.8 or later (ring buffers; 6.1 for the user ring buffer producer),
//! `CAP_BPF` or root to create or open maps.
//! The `testing` feature's kernel producer needs Linux 5.12 (BPF atomics) and
//! `CAP_BPF` + `CAP_PERFMON`/root. Developed and tested on Linux 6.18 x86_64.
//!
//! # Windows
//!
//! On Windows the crate reads the ring buffers of eBPF for Windows (v1.0 or
//! later), whose consumer mapping has the Linux layout, through the same
//! ring parser. `ebpfapi.dll` is loaded on first use: without it, calls
//! return `Error::PlatformNotInstalled` (the program still starts).
//! Available there: [`RingBuf`] (create, `open_pinned`, `from_id`,
//! `from_fd`, `pin`), [`Consumer`] and [`Reader`] with every read path,
//! deadlines, [`WakePolicy`] and [`ReaderHandle`], and the `zerocopy`
//! feature. Descriptors are efW's `fd_t`, in the module `fd` (`AsFd`,
//! `OwnedFd`, `BorrowedFd`). Linux only: `RingSet`, `Spectator`,
//! `FlightRecorder`, `LostCounter`, `AsFd` on `Consumer` and `Reader` (the
//! pollable descriptor), the `tokio` and `testing` features. The Windows code is compiled and linked in CI
//! (`x86_64-pc-windows-gnu`) but has never run on Windows.
#![deny(missing_docs)]
// The docs are written for Linux and link its items (`Spectator`,
// `FlightRecorder`, ...); built for Windows, where those items do not exist,
// the links stay plain text instead of failing the build.
#![cfg_attr(not(target_os = "linux"), allow(rustdoc::broken_intra_doc_links))]
#![deny(unsafe_code)]
#![warn(rust_2018_idioms)]

mod claim;
mod consumer;
mod error;
#[cfg(target_os = "linux")]
mod lost;
mod map;
#[cfg(target_os = "linux")]
mod map_info;
mod reader;
#[expect(unsafe_code, reason = "the ring protocol over mapped memory")]
mod ring;
#[cfg(target_os = "linux")]
mod ring_set;
#[cfg(target_os = "linux")]
pub mod spectator;
#[expect(unsafe_code, reason = "raw system calls")]
mod sys;
mod wait;

#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "tokio")]
pub mod tokio;
#[cfg(feature = "zerocopy")]
mod typed;
#[cfg(target_os = "linux")]
mod user_ringbuf;

#[cfg(feature = "tokio")]
pub use crate::tokio::{AsyncBatch, AsyncReader, AsyncUserRingBuf, RecordStream};
pub use consumer::{Budget, ConsumeStats, Consumer, Readiness, Record, Stats, StopReason};
pub use error::{Error, Result};
#[cfg(target_os = "linux")]
pub use lost::{LostCounter, LostEvents};
pub use map::RingBuf;
#[cfg(target_os = "linux")]
pub use map_info::{map_ids, MapIds, MapInfo};
pub use reader::{Batch, Reader, WakePolicy};
pub use ring::abi;
#[cfg(target_os = "linux")]
pub use ring_set::{RingSet, RingSetStats, RoundStats};
#[cfg(target_os = "linux")]
pub use spectator::{
    Entry, Event, FlightRecorder, Gap, Observed, Recorded, Spectator, SpectatorStats, Start,
};
/// Windows only: eBPF for Windows' descriptors (`fd_t`), in the shape of
/// `std::os::fd` (which Windows lacks).
#[cfg(windows)]
pub use sys::windows::fd;
#[cfg(feature = "zerocopy")]
pub use typed::{view, view_prefix, view_slice, ExpectedSize, RecordExt};
#[cfg(target_os = "linux")]
pub use user_ringbuf::{ProducerHandle, ProducerStats, Sample, UserRingBuf};
pub use wait::ReaderHandle;

/// The runtime page size (`sysconf(_SC_PAGESIZE)`). Ring sizes are multiples of it.
pub fn page_size() -> usize {
    sys::page_size()
}
