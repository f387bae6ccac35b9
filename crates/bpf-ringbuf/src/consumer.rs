//! [`Consumer`]: the non-blocking core of a ring buffer consumer. It holds the
//! cursor and the map's descriptor, and never sleeps; the blocking
//! [`Reader`](crate::Reader), the many-ring poller and async adapters are
//! built on it.

use std::ops::ControlFlow;

use crate::claim::{Claim, Key};
use crate::error::{Error, Result};
use crate::map::{check_consumer_flags, check_map};
use crate::ring::cursor::{Cursor, DrainEnd, Head, HeadState};
use crate::sys::fd::{AsFd, BorrowedFd, OwnedFd};
#[cfg(target_os = "linux")]
use crate::sys::mmap::Mmap;
use crate::sys::{self, bpf};

/// A record copied out of the ring by [`Reader::read`](crate::Reader::read),
/// [`Reader::read_into`](crate::Reader::read_into) or [`Consumer::try_read_into`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// The payload. The `read_into` calls reuse this allocation.
    pub data: Vec<u8>,
    /// Ring bytes (headers and padding included) between the end of this
    /// record and the producer position seen when it was read: what was left
    /// to read at that moment, as in cilium/ebpf.
    pub remaining: usize,
}

/// Limits for one [`Consumer::consume_with_budget`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Deliver at most this many records.
    pub max_records: usize,
    /// Stop once at least this many payload bytes have been delivered (the
    /// record that crosses the limit is delivered whole).
    pub max_bytes: usize,
}

impl Budget {
    /// No limit beyond the producer position seen when the call started.
    pub const UNLIMITED: Budget = Budget {
        max_records: usize::MAX,
        max_bytes: usize::MAX,
    };

    /// At most `n` records.
    pub const fn records(n: usize) -> Budget {
        Budget {
            max_records: n,
            max_bytes: usize::MAX,
        }
    }

    /// At least `n` payload bytes, then stop.
    pub const fn bytes(n: usize) -> Budget {
        Budget {
            max_records: usize::MAX,
            max_bytes: n,
        }
    }
}

impl Default for Budget {
    fn default() -> Budget {
        Budget::UNLIMITED
    }
}

/// Why a [`Consumer::consume`] call stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// Every record up to the producer position seen at the start was read.
    Empty,
    /// The [`Budget`] was used up.
    Budget,
    /// The callback returned [`ControlFlow::Break`]; that record counts as consumed.
    Callback,
    /// The next record is reserved but not yet committed by its producer.
    Busy,
}

/// What one [`Consumer::consume`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumeStats {
    /// Records delivered to the callback (discarded records are not counted).
    pub records: usize,
    /// Payload bytes delivered.
    pub bytes: usize,
    /// Why it stopped.
    pub stop: StopReason,
}

/// What [`Consumer::prepare_wait`] found after publishing the consumer
/// position and fencing (see the crate docs on wakeups).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Readiness {
    /// The ring is empty: sleep on the descriptor. The kernel wakes it when
    /// the next record is committed (unless the program commits with
    /// `BPF_RB_NO_WAKEUP`: then only a timeout of yours notices it).
    Empty,
    /// A record is there (or a discarded one to skip): read, don't sleep.
    Ready,
    /// The next record is reserved but not yet committed (BUSY). Sleep on the
    /// descriptor, **with a timeout**: its commit wakes you, unless it is
    /// made with `BPF_RB_NO_WAKEUP`. A BPF program cannot hold a reservation
    /// past its exit, so the record is committed within microseconds; a
    /// timeout of 1 ms or less is plenty.
    InProgress,
}

/// The non-blocking core of a `BPF_MAP_TYPE_RINGBUF` consumer: a cursor over
/// the ring's memory and the map's descriptor, and nothing that sleeps.
///
/// Use it to drive a ring from your own event loop (epoll, mio, tokio),
/// sleeping on its [`AsFd`] descriptor after [`prepare_wait`](Self::prepare_wait).
/// [`Reader`](crate::Reader) wraps it with blocking reads, deadlines, flush
/// and close.
///
/// * [`try_read_zero_copy`](Self::try_read_zero_copy) lends a record in
///   place; [`commit`](Self::commit) hands every lent record back to the
///   kernel with one store. The borrow checker ends every lent slice first.
/// * [`consume`](Self::consume) delivers everything present to a callback,
///   then commits once.
/// * [`try_read_into`](Self::try_read_into) copies one record out and
///   publishes the position past it.
///
/// # One consumer per map
///
/// A second live `Consumer` (or `Reader`) of the same map in the same process
/// is refused with [`Error::ConsumerExists`], until the first is dropped.
/// Another **process** consuming the same map cannot be detected: it would
/// publish its own position and let the kernel overwrite records this one
/// still lends. That is the one precondition safe code cannot check, and it
/// is yours to keep.
///
/// ```no_run
/// # fn main() -> bpf_ringbuf::Result<()> {
/// use bpf_ringbuf::{Consumer, Readiness, RingBuf};
/// let ring = RingBuf::create(1 << 20)?;
/// let mut consumer = Consumer::new(&ring)?;
/// loop {
///     while let Some(rec) = consumer.try_read_zero_copy()? {
///         println!("{} bytes", rec.len());
///     }
///     match consumer.prepare_wait()? {
///         Readiness::Ready => continue,
///         // Sleep on consumer.as_fd() (epoll, poll, an async runtime);
///         // with a short timeout when a record is in progress.
///         Readiness::Empty | Readiness::InProgress => break,
///         _ => break,
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Consumer {
    /// The cursor over the ring, owning its mappings. Declared first, so the
    /// memory is unmapped before the descriptor closes.
    cur: Cursor,
    /// The ring's descriptor (a duplicate of the caller's; or a fake ring's
    /// eventfd): readable while the kernel has unconsumed data.
    fd: OwnedFd,
    /// Publish within a long [`consume`](Self::consume) every this many
    /// ring bytes.
    publish_every: usize,
    /// This process's claim on the map, released last, once no slice can
    /// be alive.
    _claim: Claim,
}

/// What a consumer has done since it was opened: a snapshot of counters that
/// are always on ([`Consumer::stats`], [`Reader::stats`](crate::Reader::stats)).
///
/// They cost one add per record on the zero-copy path and nothing per record
/// in [`consume`](Consumer::consume) (which counts in a register); the rest
/// are counted once per batch or in the slow paths. `max_fill` close to the
/// ring size warns that the producer is about to lose events.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Records delivered: lent, copied, or passed to a callback.
    pub records: u64,
    /// Discarded records skipped.
    pub discarded: u64,
    /// Ring bytes handed back to the kernel (headers and padding included).
    pub bytes: u64,
    /// Stores of the consumer position (commits that moved it).
    pub commits: u64,
    /// The most bytes the kernel held unconsumed at any load of the producer
    /// position: the ring's fill high-water mark (compare with the size).
    pub max_fill: usize,
    /// Times the reader went to sleep (or napped) on an empty ring.
    pub sleeps: u64,
    /// Times a sleep ended with a wakeup from the kernel (not a timeout,
    /// flush or close).
    pub wakeups: u64,
    /// Times a read found the next record reserved but not committed and had
    /// to wait for it.
    pub busy_stalls: u64,
}

impl Consumer {
    /// The default cadence of [`set_publish_every`](Self::set_publish_every):
    /// a page of ring bytes (4 KiB), or a quarter of a smaller ring. Small
    /// enough that a BPF program sampling its wakeups on the unconsumed data
    /// (`bpf_ringbuf_query(BPF_RB_AVAIL_DATA)` against a threshold, then
    /// `BPF_RB_FORCE_WAKEUP`) sees a woken reader's progress within
    /// microseconds and stops forcing wakeups (measured in BENCHMARKS.md's
    /// sampled-wakeup tables: a quarter of the ring forced about twice as
    /// many as libbpf, which publishes after every record); large enough
    /// that the store costs nothing per record.
    pub const PUBLISH_EVERY: usize = 4096;

    /// Opens a consumer of a ring buffer map: a [`RingBuf`](crate::RingBuf),
    /// or any `AsFd` that is one (an aya or libbpf-rs map, a raw `OwnedFd`).
    ///
    /// The descriptor is duplicated, so the consumer outlives the caller's
    /// handle. The consumer page is mapped read-write, the rest read-only. The
    /// consumer starts at the kernel's current consumer position, so a
    /// consumer of a reopened pinned ring continues where the last one
    /// committed.
    ///
    /// Errors: [`Error::WrongMapType`] for any other map type (including
    /// `USER_RINGBUF`), [`Error::NotAMap`], [`Error::BadFd`],
    /// [`Error::UnsupportedMapFlags`] for an overwrite-mode ring,
    /// [`Error::ConsumerExists`] if this process already consumes the map,
    /// [`Error::ReadOnlyMap`] for a read-only descriptor,
    /// [`Error::MisalignedConsumerPosition`], or the failing call.
    pub fn new(map: impl AsFd) -> Result<Consumer> {
        let borrowed = map.as_fd();
        let checked = check_map(borrowed, bpf::BPF_MAP_TYPE_RINGBUF)?;
        check_consumer_flags(checked.flags)?;
        let claim = Claim::take(Key::Map(checked.id))?;
        let fd = sys::dup(borrowed)?;
        let cur = map_ring(fd.as_fd(), checked.size)?;
        Ok(Consumer::from_parts(cur, fd, claim))
    }

    /// The map's descriptor (the consumer's own duplicate).
    pub(crate) fn map_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(crate) fn from_parts(cur: Cursor, fd: OwnedFd, claim: Claim) -> Consumer {
        let publish_every = (cur.raw().size() / 4).min(Consumer::PUBLISH_EVERY);
        Consumer {
            cur,
            fd,
            publish_every,
            _claim: claim,
        }
    }

    /// Within one [`consume`](Self::consume) call, publish the consumer
    /// position after every `bytes` ring bytes as well as at the end
    /// (default: [`PUBLISH_EVERY`](Self::PUBLISH_EVERY), or a quarter of a
    /// smaller ring). A long drain then shows its progress
    /// to the kernel, and to a BPF program that decides its wakeups from the
    /// unconsumed data (`bpf_ringbuf_query(BPF_RB_AVAIL_DATA)`), at the cost
    /// of one store per `bytes`, not per record. Zero-copy reads cannot do
    /// this: their records stay lent until [`commit`](Self::commit).
    pub fn set_publish_every(&mut self, bytes: usize) {
        self.publish_every = bytes.max(crate::abi::HEADER_SIZE);
    }

    /// The cadence set by [`set_publish_every`](Self::set_publish_every).
    pub fn publish_every(&self) -> usize {
        self.publish_every
    }

    /// The counters since this consumer was opened (see [`Stats`]). The
    /// waiting counters (`sleeps`, `wakeups`, `busy_stalls`) stay zero here:
    /// a `Consumer` never waits; [`Reader::stats`](crate::Reader::stats)
    /// fills them.
    pub fn stats(&self) -> Stats {
        let c = self.cur.counters();
        let copied = c.copied.get();
        Stats {
            records: c.records.get().wrapping_add(copied),
            discarded: c.discarded.get(),
            bytes: self.cur.bytes_published(),
            commits: c.commits.get().wrapping_add(copied),
            max_fill: c.max_fill.get(),
            ..Stats::default()
        }
    }

    #[inline(always)]
    pub(crate) fn cursor(&self) -> &Cursor {
        &self.cur
    }

    #[inline(always)]
    pub(crate) fn cursor_mut(&mut self) -> &mut Cursor {
        &mut self.cur
    }

    /// Lends the next committed record in place, advancing only the local
    /// cursor; `Ok(None)` when there is none now (the ring is empty, or the
    /// next record is reserved but not yet committed). Never blocks.
    ///
    /// The slice stays valid and unchanged until [`commit`](Self::commit) (or
    /// any `&mut self` call), which the borrow checker orders after its last
    /// use. Discarded records are skipped. A corrupt header is
    /// [`Error::Corrupt`], reported again on every call.
    #[inline]
    pub fn try_read_zero_copy(&self) -> Result<Option<&[u8]>> {
        loop {
            if let Some(rec) = self.cur.next_record() {
                return Ok(Some(rec));
            }
            if !self.record_at_cursor()? {
                return Ok(None);
            }
        }
    }

    /// The fast paths' fallback: skips discards, reloads the producer
    /// position once if the cached one is reached, and says whether a
    /// committed record is at the cursor now (the fast path then takes it:
    /// a committed header stays so until we publish past it).
    #[cold]
    #[inline(never)]
    fn record_at_cursor(&self) -> Result<bool> {
        let mut reloaded = false;
        loop {
            match self.cur.skip_discards() {
                Head::Record => return Ok(true),
                Head::End if !reloaded => {
                    reloaded = true;
                    if !self.cur.reload()? {
                        return Ok(false);
                    }
                }
                Head::End | Head::Busy => return Ok(false),
                Head::Corrupt(c) => return Err(c.into()),
            }
        }
    }

    /// Publishes the local cursor: every record lent by
    /// [`try_read_zero_copy`](Self::try_read_zero_copy) so far goes back to
    /// the kernel. One release store, and none if nothing was read.
    #[inline]
    pub fn commit(&mut self) {
        self.cur.publish();
    }

    /// Copies the next committed record into `rec` (reusing its allocation)
    /// and publishes the position past it; `Ok(false)` when there is none
    /// now. Commits outstanding zero-copy reads first. Never blocks.
    #[inline]
    pub fn try_read_into(&mut self, rec: &mut Record) -> Result<bool> {
        loop {
            // Publishes past the record it copies, and so past every
            // outstanding zero-copy read.
            if let Some(remaining) = self.cur.copy_next_record(&mut rec.data) {
                rec.remaining = remaining;
                return Ok(true);
            }
            if !self.record_at_cursor_published()? {
                return Ok(false);
            }
        }
    }

    /// [`record_at_cursor`](Self::record_at_cursor), then a publish: it
    /// commits outstanding zero-copy reads and hands back skipped discards.
    #[cold]
    #[inline(never)]
    fn record_at_cursor_published(&mut self) -> Result<bool> {
        let found = self.record_at_cursor();
        self.cur.publish();
        found
    }

    /// Delivers every record present to `f`, then commits once. Never blocks.
    ///
    /// It reads up to the producer position loaded when the call starts, so
    /// a producer that keeps up cannot keep it running. `f` returning
    /// [`ControlFlow::Break`] stops after that record, which counts as
    /// consumed. A corrupt header is returned as [`Error::Corrupt`] after the
    /// records before it are committed. The position is published at the end,
    /// and every [`publish_every`](Self::publish_every) bytes within a long
    /// drain. If `f` panics, the records after the last publish are delivered
    /// again (at-least-once). Commits outstanding zero-copy reads first.
    ///
    /// ```no_run
    /// # fn main() -> bpf_ringbuf::Result<()> {
    /// # let ring = bpf_ringbuf::RingBuf::create(1 << 20)?;
    /// use std::ops::ControlFlow;
    /// let mut consumer = bpf_ringbuf::Consumer::new(&ring)?;
    /// let mut total = 0;
    /// let stats = consumer.consume(|rec| {
    ///     total += rec.len();
    ///     ControlFlow::Continue(())
    /// })?;
    /// println!("{} records, stopped because {:?}", stats.records, stats.stop);
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn consume<F>(&mut self, f: F) -> Result<ConsumeStats>
    where
        F: FnMut(&[u8]) -> ControlFlow<()>,
    {
        self.consume_with_budget(Budget::UNLIMITED, f)
    }

    /// [`consume`](Self::consume), stopping also when `budget` is used up.
    #[inline]
    pub fn consume_with_budget<F>(&mut self, budget: Budget, f: F) -> Result<ConsumeStats>
    where
        F: FnMut(&[u8]) -> ControlFlow<()>,
    {
        // Outstanding zero-copy reads are committed by the drain's own
        // publish; only they need one first (a record held back by a napping
        // reader stays held until the drain publishes past it).
        self.cur.publish_if_lent();
        let (records, bytes, end) =
            self.cur
                .drain(budget.max_records, budget.max_bytes, self.publish_every, f);
        let stop = match end {
            DrainEnd::Empty => StopReason::Empty,
            DrainEnd::Budget => StopReason::Budget,
            DrainEnd::Callback => StopReason::Callback,
            DrainEnd::Busy => StopReason::Busy,
            DrainEnd::Corrupt(c) => return Err(c.into()),
        };
        Ok(ConsumeStats {
            records,
            bytes,
            stop,
        })
    }

    /// Publishes the consumer position, issues the wakeup fence, and looks
    /// at the ring once more (see the crate docs). **Required before every
    /// sleep** on [`AsFd`], edge- or level-triggered: without it the kernel
    /// may not wake you. See [`Readiness`] for what to do next.
    ///
    /// Commits outstanding zero-copy reads first. Errors: a corrupt producer
    /// position.
    pub fn prepare_wait(&mut self) -> Result<Readiness> {
        Ok(match self.cur.prepare_wait()? {
            HeadState::Empty => Readiness::Empty,
            HeadState::Ready => Readiness::Ready,
            HeadState::Busy => Readiness::InProgress,
        })
    }

    /// The ring's data size in bytes.
    pub fn buffer_size(&self) -> usize {
        self.cur.raw().size()
    }

    /// Bytes the kernel still holds as unconsumed: the producer position minus
    /// the *published* consumer position (headers and padding included).
    pub fn available_bytes(&self) -> usize {
        let cons = self.cur.raw().load_consumer();
        self.cur.raw().load_producer().wrapping_sub(cons)
    }

    /// The consumer position as published to the kernel.
    pub fn consumer_position(&self) -> usize {
        self.cur.raw().load_consumer()
    }

    /// The producer position now.
    pub fn producer_position(&self) -> usize {
        self.cur.raw().load_producer()
    }

    /// The local read cursor: ahead of [`consumer_position`](Self::consumer_position)
    /// by the zero-copy records not yet committed.
    pub fn read_position(&self) -> usize {
        self.cur.pos()
    }
}

/// Maps the ring of `fd` (`size` data bytes): the consumer page
/// read-write, the producer page and the data (mapped twice) read-only.
#[cfg(target_os = "linux")]
fn map_ring(fd: BorrowedFd<'_>, size: usize) -> Result<Cursor> {
    let page = sys::page_size();
    let (consumer, producer) = Mmap::map_ring(fd, page, size, true).map_err(|e| match e {
        // The descriptor lacks write access: the kernel's
        // ringbuf_map_mmap_kern refuses a writable mapping of the
        // consumer page.
        Error::PermissionDenied {
            call: call @ "mmap(consumer page)",
            source,
        } => Error::ReadOnlyMap { call, source },
        e => e,
    })?;
    Ok(Cursor::from_kernel_mappings(
        consumer, producer, page, size,
    )?)
}

/// Maps the ring of `fd` (`size` data bytes) with eBPF for Windows'
/// `ebpf_ring_buffer_map_map_buffer`: the same layout as Linux.
#[cfg(windows)]
fn map_ring(fd: BorrowedFd<'_>, size: usize) -> Result<Cursor, Error> {
    let mapping = sys::windows::RingMapping::map(fd, size)?;
    Ok(Cursor::from_efw_mapping(mapping)?)
}

/// Linux only: the descriptor is pollable there (not on Windows, where a
/// [`Reader`](crate::Reader) waits on an event registered with the map).
#[cfg(target_os = "linux")]
impl AsFd for Consumer {
    /// The ring's descriptor: readable (level-triggered) while the producer
    /// position differs from the published consumer position, and woken by
    /// the kernel's adaptive wakeups (see [`prepare_wait`](Consumer::prepare_wait)).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// In-place peeking for the ordered merge of a
/// [`RingSet`](crate::RingSet): reload once, peek each head, take it.
#[cfg(target_os = "linux")]
impl Consumer {
    /// Loads the producer position: the records present now are what
    /// [`peek_head`](Self::peek_head) and [`take_head`](Self::take_head)
    /// see until the next reload.
    pub(crate) fn snapshot(&self) -> Result<()> {
        self.cur.reload()?;
        Ok(())
    }

    /// The committed record at the cursor within the snapshot, in place,
    /// without moving (discards before it are skipped).
    pub(crate) fn peek_head(&self) -> Result<Option<&[u8]>> {
        Ok(self.cur.peek_head_record()?)
    }

    /// Takes the record [`peek_head`](Self::peek_head) returned, moving the
    /// local cursor past it (published by the next commit).
    pub(crate) fn take_head(&self) -> Option<&[u8]> {
        self.cur.next_record()
    }
}
