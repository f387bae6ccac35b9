//! [`Reader`]: the safe consumer API.

use std::ops::ControlFlow;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::map::check_map;
use crate::ring::consumer::{Consumer, CorruptAt, DrainEnd, Step};
use crate::ring::Peek;
use crate::sys::{self, bpf, mmap::Mmap};
use crate::wait::{self, ReaderHandle, Shared, Waiter};

/// A record copied out of the ring by [`Reader::read`] or [`Reader::read_into`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// The payload. [`Reader::read_into`] reuses this allocation.
    pub data: Vec<u8>,
    /// Ring bytes (headers and padding included) between the end of this
    /// record and the producer position seen when it was read: what was left
    /// to read at that moment, as in cilium/ebpf.
    pub remaining: usize,
}

/// Limits for one [`Reader::consume_with_budget`] call.
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

/// Why a [`Reader::consume`] call stopped.
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

/// What one [`Reader::consume`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumeStats {
    /// Records delivered to the callback (discarded records are not counted).
    pub records: usize,
    /// Payload bytes delivered.
    pub bytes: usize,
    /// Why it stopped.
    pub stop: StopReason,
}

/// A consumer of a `BPF_MAP_TYPE_RINGBUF` map.
///
/// Three ways to read, all skipping discarded records and all stopping at a
/// record that is reserved but not yet committed:
///
/// * **Zero-copy, deferred commit**: [`read_zero_copy`](Self::read_zero_copy)
///   returns a slice of the ring and advances only a local cursor;
///   [`commit`](Self::commit) hands the space back to the kernel with one store.
///   The borrow checker ensures no slice outlives the commit.
/// * **Callback drain**: [`consume`](Self::consume), non-blocking, one commit per call.
/// * **Copying**: [`read`](Self::read) and [`read_into`](Self::read_into)
///   publish the consumer position past each record before they return.
///
/// Blocking reads honour a [deadline](Self::set_deadline) and the
/// [`ReaderHandle`]'s flush and close. See the crate docs for the zero-copy
/// contract and the wakeup rules.
///
/// Every `&mut self` method first commits the zero-copy reads still
/// outstanding: they count as consumed. Dropping the reader does not.
///
/// One reader per ring: two consumers of one map would hand each other's
/// records back to the kernel.
///
/// ```no_run
/// # fn main() -> bpf_ringbuf::Result<()> {
/// use bpf_ringbuf::{Reader, RingBuf};
/// let ring = RingBuf::create(1 << 20)?;
/// let mut reader = Reader::new(&ring)?;
/// loop {
///     let mut sum = 0u64;
///     for _ in 0..64 {
///         match reader.read_zero_copy() {
///             Ok(rec) => sum += rec.len() as u64,
///             Err(bpf_ringbuf::Error::CommitRequired) => break,
///             Err(e) => return Err(e),
///         }
///     }
///     reader.commit(); // one release store for the whole batch
///     println!("{sum} bytes");
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Reader {
    /// The cursor over the ring, owning its mappings. Declared before `fd`,
    /// so the memory is unmapped before the descriptor closes.
    cur: Consumer,
    deadline: Option<Instant>,
    /// Poll-interval mode: sleep this long instead of asking for a wakeup.
    poll_interval: Option<Duration>,
    shared: Arc<Shared>,
    waiter: Waiter,
    /// The ring's descriptor (the map, or a fake ring's eventfd), watched by `waiter`.
    fd: OwnedFd,
}

impl Reader {
    /// Opens a reader on a ring buffer map: a [`RingBuf`](crate::RingBuf), or
    /// any `AsFd` that is one (an aya or libbpf-rs map, a raw `OwnedFd`).
    ///
    /// The descriptor is duplicated, so the reader outlives the caller's
    /// handle. The consumer page is mapped read-write, the rest read-only. The
    /// reader starts at the kernel's current consumer position, so a reader on
    /// a reopened pinned ring continues where the last one committed.
    ///
    /// Errors: [`Error::WrongMapType`] for any other map type (including
    /// `USER_RINGBUF`), [`Error::NotAMap`], [`Error::BadFd`], or the failing call.
    pub fn new(map: impl AsFd) -> Result<Reader> {
        let borrowed = map.as_fd();
        let checked = check_map(borrowed, bpf::BPF_MAP_TYPE_RINGBUF)?;
        let fd = sys::dup(borrowed)?;
        let size = checked.size;
        let page = sys::page_size();
        let consumer = Mmap::map("mmap(consumer page)", fd.as_fd(), page, 0, true)?;
        let producer = Mmap::map(
            "mmap(producer page and data)",
            fd.as_fd(),
            page + 2 * size,
            page,
            false,
        )?;
        let cur =
            Consumer::from_kernel_mappings(consumer, producer, page, size).map_err(misaligned)?;
        Reader::from_consumer(cur, fd)
    }

    /// Builds a reader over a cursor, sleeping on `fd` (readable when the
    /// ring has data).
    pub(crate) fn from_consumer(cur: Consumer, fd: OwnedFd) -> Result<Reader> {
        let shared = Shared::new()?;
        let waiter = Waiter::new(fd.as_fd(), &shared)?;
        Ok(Reader {
            cur,
            deadline: None,
            poll_interval: None,
            shared,
            waiter,
            fd,
        })
    }

    // ---- zero-copy -------------------------------------------------------

    /// Returns the next record as a slice of the ring, advancing only the
    /// local cursor. Nothing is handed back to the kernel until
    /// [`commit`](Self::commit) (or any `&mut self` call).
    ///
    /// Several slices can be held at once; they stay valid and unchanged
    /// until `commit`, which the borrow checker orders after their last use.
    ///
    /// When the ring is empty this waits like [`read`](Self::read), honouring
    /// the deadline, flush and close — except when earlier zero-copy records
    /// are still uncommitted: then it returns [`Error::CommitRequired`] at
    /// once, because waiting with an unpublished position would either spin
    /// (epoll keeps reporting the unconsumed bytes) or sleep through new
    /// records (the kernel wakes only a consumer that has caught up). Commit
    /// and call again.
    ///
    /// ```no_run
    /// # fn main() -> bpf_ringbuf::Result<()> {
    /// # let ring = bpf_ringbuf::RingBuf::create(1 << 20)?;
    /// let mut reader = bpf_ringbuf::Reader::new(&ring)?;
    /// reader.set_deadline(Some(std::time::Instant::now())); // don't block
    /// let a = reader.read_zero_copy()?;
    /// let b = reader.read_zero_copy()?; // `a` is still valid
    /// println!("{} {}", a.len(), b.len());
    /// reader.commit(); // `a` and `b` can no longer be used
    /// # Ok(()) }
    /// ```
    #[inline]
    pub fn read_zero_copy(&self) -> Result<&[u8]> {
        loop {
            if self.shared.is_closed() {
                return Err(Error::Closed);
            }
            match self.cur.step() {
                Step::Record(rec) => return Ok(rec),
                Step::End => self.refill()?,
                stalled => self.stalled(stalled)?,
            }
        }
    }

    /// Non-blocking [`read_zero_copy`](Self::read_zero_copy): `Ok(None)` when
    /// no committed record is there now (empty, or the next one is BUSY).
    /// Ignores the deadline and flush; returns [`Error::Closed`] after close.
    ///
    /// This is the primitive for event loops that wait on [`AsFd`] themselves;
    /// before sleeping they must call [`prepare_wait`](Self::prepare_wait).
    #[inline]
    pub fn try_read_zero_copy(&self) -> Result<Option<&[u8]>> {
        if self.shared.is_closed() {
            return Err(Error::Closed);
        }
        let mut reloaded = false;
        loop {
            match self.cur.step() {
                Step::Record(rec) => return Ok(Some(rec)),
                Step::End if !reloaded => {
                    reloaded = true;
                    if !self.cur.reload()? {
                        return Ok(None);
                    }
                }
                Step::End | Step::Busy => return Ok(None),
                Step::Corrupt(c) => return Err(c.into()),
            }
        }
    }

    /// Publishes the local cursor: every record returned by
    /// [`read_zero_copy`](Self::read_zero_copy) so far goes back to the
    /// kernel. One release store, and none if nothing was read.
    #[inline]
    pub fn commit(&mut self) {
        self.cur.publish();
    }

    /// Waits until a record is available to read now (or a discarded one to
    /// skip), honouring the deadline, flush and close. Publishes outstanding
    /// zero-copy reads first. Pair it with [`consume`](Self::consume) or
    /// [`batch`](Self::batch).
    pub fn wait(&mut self) -> Result<()> {
        self.cur.publish();
        loop {
            if self.shared.is_closed() {
                return Err(Error::Closed);
            }
            match self.cur.head() {
                None => self.refill()?,
                Some(Peek::Record { .. } | Peek::Discard { .. }) => return Ok(()),
                Some(Peek::Busy) => self.stalled(Step::Busy)?,
                Some(Peek::Corrupt { len, available }) => {
                    return Err(CorruptAt {
                        pos: self.cur.pos(),
                        len,
                        available,
                    }
                    .into())
                }
            }
        }
    }

    /// Waits like [`wait`](Self::wait), then returns a [`Batch`] over the
    /// records present, which commits them all when dropped.
    ///
    /// ```no_run
    /// # fn main() -> bpf_ringbuf::Result<()> {
    /// # let ring = bpf_ringbuf::RingBuf::create(1 << 20)?;
    /// let mut reader = bpf_ringbuf::Reader::new(&ring)?;
    /// let batch = reader.batch()?;
    /// for rec in &batch {
    ///     println!("{} bytes", rec.len());
    /// }
    /// drop(batch); // one commit
    /// # Ok(()) }
    /// ```
    pub fn batch(&mut self) -> Result<Batch<'_>> {
        self.wait()?;
        Ok(Batch { reader: self })
    }

    /// Publishes the consumer position and re-checks the ring with the fence
    /// described in the crate docs. Returns `true` when the ring is empty and
    /// it is safe to sleep on [`AsFd`] (the kernel will wake you); `false`
    /// when there is something to read (or a record in progress).
    ///
    /// For external event loops (epoll, mio, tokio) that drive
    /// [`try_read_zero_copy`](Self::try_read_zero_copy) or [`consume`](Self::consume)
    /// themselves. Required before every sleep, edge- or level-triggered.
    pub fn prepare_wait(&mut self) -> bool {
        self.cur.publish_and_check_empty()
    }

    // ---- callback drain -----------------------------------------------------

    /// Delivers every record present to `f`, then commits once. Never blocks.
    ///
    /// It reads up to the producer position loaded when the call starts, so
    /// a producer that keeps up cannot keep it running. `f` returning
    /// [`ControlFlow::Break`] stops after that record, which counts as
    /// consumed. Returns [`Error::Closed`] after close; a corrupt header is
    /// returned as [`Error::Corrupt`] after the records before it are committed.
    /// If `f` panics, nothing from this call is committed: its records are
    /// delivered again (at-least-once).
    ///
    /// ```no_run
    /// # fn main() -> bpf_ringbuf::Result<()> {
    /// # let ring = bpf_ringbuf::RingBuf::create(1 << 20)?;
    /// use std::ops::ControlFlow;
    /// let mut reader = bpf_ringbuf::Reader::new(&ring)?;
    /// let mut total = 0;
    /// let stats = reader.consume(|rec| {
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
        self.cur.publish();
        if self.shared.is_closed() {
            return Err(Error::Closed);
        }
        let (records, bytes, end) = self.cur.drain(budget.max_records, budget.max_bytes, f);
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

    // ---- copying ------------------------------------------------------------

    /// Reads the next record into a new [`Record`], waiting if the ring is
    /// empty. Publishes the consumer position past it before returning.
    pub fn read(&mut self) -> Result<Record> {
        let mut rec = Record::default();
        self.read_into(&mut rec)?;
        Ok(rec)
    }

    /// Reads the next record into `rec`, reusing its allocation, waiting if
    /// the ring is empty. Publishes the consumer position past it (and past
    /// any outstanding zero-copy reads) before returning.
    #[inline]
    pub fn read_into(&mut self, rec: &mut Record) -> Result<()> {
        // Outstanding zero-copy reads are published here (only if there are
        // any: a load and a predictable branch), then by `copy_next` past each
        // record it copies.
        self.cur.publish_if_lent();
        loop {
            if self.shared.is_closed() {
                self.cur.publish();
                return Err(Error::Closed);
            }
            match self.cur.copy_next(&mut rec.data) {
                Step::Record(_) => {
                    rec.remaining = self.cur.known_remaining();
                    return Ok(());
                }
                Step::End => self.refill()?,
                stalled => self.stalled(stalled)?,
            }
        }
    }

    // ---- settings and introspection ------------------------------------------

    /// Sets the deadline for blocking reads. `None` waits forever; a deadline
    /// in the past means "read what is there now", then
    /// [`Error::DeadlineExceeded`].
    ///
    /// Like every `&mut self` method, it first commits outstanding zero-copy reads.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.cur.publish();
        self.deadline = deadline;
    }

    /// Poll-interval mode. With `Some(interval)`, a blocking read that finds
    /// the ring empty does not wait for the kernel's wakeup: it sleeps for
    /// `interval` (or until the deadline, a flush or a close) and looks again.
    /// `None` (the default) sleeps until the kernel wakes the reader.
    ///
    /// Why: each wakeup is paid by the **producer**, inside the BPF program's
    /// commit (an `irq_work`, then waking the sleeping thread: tens of
    /// microseconds per event on a VM, see BENCHMARKS.md). In poll-interval
    /// mode the reader is behind the producer between its looks, and the
    /// kernel queues a wakeup only for a record it finds the consumer caught
    /// up with: at most one per look, and then no thread sleeps on the ring
    /// to be woken. The reader collects records in batches. The price is latency:
    /// up to `interval` before a record is seen. Records committed with
    /// `BPF_RB_NO_WAKEUP` are picked up too.
    ///
    /// ```no_run
    /// # fn main() -> bpf_ringbuf::Result<()> {
    /// # let ring = bpf_ringbuf::RingBuf::create(1 << 20)?;
    /// let mut reader = bpf_ringbuf::Reader::new(&ring)?;
    /// reader.set_poll_interval(Some(std::time::Duration::from_millis(1)));
    /// # Ok(()) }
    /// ```
    ///
    /// Like every `&mut self` method, it first commits outstanding zero-copy reads.
    pub fn set_poll_interval(&mut self, interval: Option<Duration>) {
        self.cur.publish();
        self.poll_interval = interval;
    }

    /// The interval set by [`set_poll_interval`](Self::set_poll_interval).
    pub fn poll_interval(&self) -> Option<Duration> {
        self.poll_interval
    }

    /// The deadline set by [`set_deadline`](Self::set_deadline).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// A handle to flush or close this reader from any thread.
    pub fn handle(&self) -> ReaderHandle {
        ReaderHandle {
            shared: self.shared.clone(),
        }
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

    // ---- internals ------------------------------------------------------------

    /// The cached batch is used up: load the producer position, and wait
    /// while the ring is empty. Returns when there is something at the cursor.
    #[cold]
    #[inline(never)]
    fn refill(&self) -> Result<()> {
        loop {
            if self.cur.reload()? {
                return Ok(());
            }
            // Hand skipped discards back before returning an error, unless a
            // slice is lent (then `commit` will).
            self.cur.publish_unlent();
            wait::check_stop(&self.shared, self.deadline)?;
            // Publish (past skipped discards, or the same value again: either
            // way it must be ordered before the re-check), fence, re-check:
            // see `ring` for why.
            match self.cur.publish_unlent_and_check_empty() {
                None => return Err(Error::CommitRequired),
                Some(false) => continue,
                Some(true) => match self.poll_interval {
                    None => self.waiter.sleep(&self.shared, self.deadline)?,
                    Some(interval) => {
                        let until = Instant::now() + interval;
                        let until = self.deadline.map_or(until, |d| d.min(until));
                        self.waiter.nap(&self.shared, until)?;
                    }
                },
            }
        }
    }

    /// The record at the cursor is BUSY or corrupt.
    ///
    /// BUSY: the producer is writing it and will commit within microseconds
    /// (a BPF program cannot keep a reservation past its exit). Spin briefly,
    /// then yield, then sleep on epoll with the position published, so the
    /// kernel's commit wakes us at once; the sleep is bounded (growing to
    /// 1 ms) because a `BPF_RB_NO_WAKEUP` commit wakes nobody.
    #[cold]
    #[inline(never)]
    fn stalled(&self, what: Step<'_>) -> Result<()> {
        if let Step::Corrupt(c) = what {
            return Err(c.into());
        }
        let mut step = 0u32;
        loop {
            wait::check_stop(&self.shared, self.deadline)?;
            if let Some(nap) = wait::busy_backoff(&mut step) {
                if !self.cur.publish_unlent_and_check_busy() {
                    return Ok(());
                }
                let until = Instant::now() + nap;
                let until = self.deadline.map_or(until, |d| d.min(until));
                self.waiter.sleep(&self.shared, Some(until))?;
            }
            if !matches!(self.cur.head(), Some(Peek::Busy)) {
                return Ok(());
            }
        }
    }
}

fn misaligned(pos: usize) -> Error {
    CorruptAt {
        pos,
        len: 0,
        available: 0,
    }
    .into()
}

impl AsFd for Reader {
    /// The ring's descriptor: readable (level-triggered) while the producer
    /// position differs from the published consumer position.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Records present when [`Reader::batch`] returned; iterate `&batch`. All of
/// them are committed, with one store, when the batch is dropped.
///
/// Iteration never blocks and stops at the producer position seen by the
/// wait (or at a BUSY or corrupt record; the next read reports the latter).
/// The commit on drop also happens when unwinding from a panic.
#[derive(Debug)]
pub struct Batch<'r> {
    reader: &'r mut Reader,
}

impl Batch<'_> {
    /// The next record of the batch, or `None` at its end.
    #[inline]
    pub fn next_record(&self) -> Option<&[u8]> {
        match self.reader.cur.step() {
            Step::Record(rec) => Some(rec),
            _ => None,
        }
    }
}

impl<'b> Iterator for &'b Batch<'_> {
    type Item = &'b [u8];

    #[inline]
    fn next(&mut self) -> Option<&'b [u8]> {
        self.next_record()
    }
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        self.reader.cur.publish();
    }
}
