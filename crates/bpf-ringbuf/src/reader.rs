//! [`Reader`]: the safe consumer API.

use std::ops::ControlFlow;
#[cfg(target_os = "linux")]
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::cell::Cell;

use crate::consumer::{Budget, ConsumeStats, Consumer, Readiness, Record, Stats};
use crate::error::{Error, Result};
use crate::ring::cursor::{Corruption, Head};
use crate::ring::Peek;
use crate::sys::fd::AsFd;
use crate::wait::{self, ReaderHandle, Shared, Waiter};

/// A blocking consumer of a `BPF_MAP_TYPE_RINGBUF` map: a [`Consumer`] with
/// deadlines, flush and close, and a choice of how to wait.
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
/// One consumer per map: a second live `Reader` or [`Consumer`] of the same
/// map in this process is refused with [`Error::ConsumerExists`] until the
/// first is dropped (closing it is not enough). Another process consuming
/// the same map cannot be detected; see [`Consumer`].
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
    /// The non-blocking core: cursor, mappings, descriptor and claim.
    core: Consumer,
    deadline: Option<Instant>,
    /// How an empty ring is waited for.
    policy: WakePolicy,
    /// `Adaptive`: the current nap, between `MIN_NAP` and
    /// `longest_nap(max_latency)`.
    nap: Cell<Duration>,
    /// How late naps end, learnt (`Interval`, `Adaptive`).
    nap_timer: NapTimer,
    /// Waiting telemetry (see [`Stats`]).
    sleeps: Cell<u64>,
    wakeups: Cell<u64>,
    busy_stalls: Cell<u64>,
    shared: Arc<Shared>,
    /// Watches the core's descriptor and the eventfd of flush and close.
    waiter: Waiter,
}

impl Reader {
    /// Opens a reader on a ring buffer map: a [`RingBuf`](crate::RingBuf), or
    /// any `AsFd` that is one (an aya or libbpf-rs map, a raw `OwnedFd`).
    /// See [`Consumer::new`] for what is mapped and the errors.
    pub fn new(map: impl AsFd) -> Result<Reader> {
        Reader::from_consumer(Consumer::new(map)?)
    }

    /// Wraps a [`Consumer`] with blocking reads: one epoll instance and one
    /// eventfd (for flush and close) of its own.
    pub fn from_consumer(core: Consumer) -> Result<Reader> {
        let shared = Shared::new()?;
        let waiter = Waiter::new(core.map_fd(), &shared)?;
        Ok(Reader {
            core,
            deadline: None,
            policy: WakePolicy::Kernel,
            nap: Cell::new(MIN_NAP),
            nap_timer: NapTimer::default(),
            sleeps: Cell::new(0),
            wakeups: Cell::new(0),
            busy_stalls: Cell::new(0),
            shared,
            waiter,
        })
    }

    /// The non-blocking core, for positions and `try_` reads.
    pub fn consumer(&self) -> &Consumer {
        &self.core
    }

    /// Unwraps the core, committing outstanding zero-copy reads first. The
    /// claim on the map moves with it.
    pub fn into_consumer(mut self) -> Consumer {
        // A plain Consumer does not nap: its drains hand everything back.
        self.core.cursor().set_hold_last(false);
        self.core.commit();
        self.core
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
        // Close is checked per record: after `close()` every read returns
        // `Closed` at once, even with records left in the batch.
        if !self.shared.is_closed() {
            if let Some(rec) = self.core.cursor().next_record() {
                return Ok(rec);
            }
        }
        self.read_zero_copy_slow()
    }

    /// [`read_zero_copy`](Self::read_zero_copy) past its fast path. (It
    /// returns the record itself rather than looping back to the fast path:
    /// counted with callgrind, looping back made the caller's loop spill
    /// more per record.)
    #[cold]
    #[inline(never)]
    fn read_zero_copy_slow(&self) -> Result<&[u8]> {
        loop {
            self.wait_for_record()?;
            if let Some(rec) = self.core.cursor().next_record() {
                return Ok(rec);
            }
        }
    }

    /// The fast paths' fallback: returns `Ok` once a committed record is at
    /// the cursor (the fast path then takes it: a committed header stays so
    /// until we publish past it), skipping discards, reloading the producer
    /// position and waiting as needed; or the close, deadline, flush or
    /// corrupt header that stops the read.
    #[cold]
    #[inline(never)]
    fn wait_for_record(&self) -> Result<()> {
        loop {
            if self.shared.is_closed() {
                return Err(Error::Closed);
            }
            match self.core.cursor().skip_discards() {
                Head::Record => return Ok(()),
                Head::End => self.refill()?,
                Head::Busy => self.stalled()?,
                Head::Corrupt(c) => return Err(c.into()),
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
        self.core.try_read_zero_copy()
    }

    /// Publishes the local cursor: every record returned by
    /// [`read_zero_copy`](Self::read_zero_copy) so far goes back to the
    /// kernel. One release store, and none if nothing was read.
    #[inline]
    pub fn commit(&mut self) {
        self.core.cursor_mut().publish();
    }

    /// Waits until a record is available to read now (or a discarded one to
    /// skip), honouring the deadline, flush and close. Publishes outstanding
    /// zero-copy reads first. Pair it with [`consume`](Self::consume) or
    /// [`batch`](Self::batch).
    pub fn wait(&mut self) -> Result<()> {
        // Outstanding zero-copy reads are committed; a record a napping
        // reader holds back stays held (see `WakePolicy::Interval`).
        self.core.cursor_mut().publish_if_lent();
        loop {
            if self.shared.is_closed() {
                return Err(Error::Closed);
            }
            match self.core.cursor().head() {
                None => self.refill()?,
                Some(Peek::Record { .. } | Peek::Discard { .. }) => return Ok(()),
                Some(Peek::Busy) => self.stalled()?,
                Some(Peek::Corrupt { len, available }) => {
                    return Err(Corruption::Header {
                        pos: self.core.cursor().pos(),
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

    /// [`Consumer::prepare_wait`], for an external event loop that drives
    /// this reader with [`try_read_zero_copy`](Self::try_read_zero_copy) or
    /// [`consume`](Self::consume): publishes, fences, and says whether it is
    /// safe to sleep on [`AsFd`]. Returns [`Error::Closed`] after close.
    ///
    /// An external loop sleeping on the ring's descriptor does not learn of
    /// [`ReaderHandle::close`] or `flush`; such loops are better built on a
    /// [`Consumer`] with a shutdown signal of their own.
    pub fn prepare_wait(&mut self) -> Result<Readiness> {
        if self.shared.is_closed() {
            return Err(Error::Closed);
        }
        self.core.prepare_wait()
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
        if self.shared.is_closed() {
            self.core.commit();
            return Err(Error::Closed);
        }
        self.core.consume_with_budget(budget, f)
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
        loop {
            if !self.shared.is_closed() {
                // Publishes past the record it copies, and so past every
                // outstanding zero-copy read.
                if let Some(remaining) = self.core.cursor_mut().copy_next_record(&mut rec.data) {
                    rec.remaining = remaining;
                    return Ok(());
                }
            }
            self.wait_for_record_published()?;
        }
    }

    /// [`wait_for_record`](Self::wait_for_record) for the copying reads:
    /// publishes first (outstanding zero-copy reads count as consumed), and
    /// again on an error, to hand back the discards skipped.
    #[cold]
    #[inline(never)]
    fn wait_for_record_published(&mut self) -> Result<()> {
        self.core.cursor_mut().publish();
        let res = self.wait_for_record();
        if res.is_err() {
            self.core.cursor_mut().publish();
        }
        res
    }

    // ---- settings and introspection ------------------------------------------

    /// Sets the deadline for blocking reads. `None` waits forever; a deadline
    /// in the past means "read what is there now", then
    /// [`Error::DeadlineExceeded`].
    ///
    /// Like every `&mut self` method, it first commits outstanding zero-copy
    /// reads. It is meant to be called before every wait (a deadline per
    /// wait): a record a napping reader holds back (see
    /// [`WakePolicy::Interval`]) stays held, so setting a deadline does not
    /// make the producer pay a wakeup for the next record.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.core.cursor_mut().publish_if_lent();
        self.deadline = deadline;
    }

    /// How a blocking read waits for an empty ring: see [`WakePolicy`]
    /// (default [`WakePolicy::Kernel`]).
    ///
    /// ```no_run
    /// # fn main() -> bpf_ringbuf::Result<()> {
    /// # let ring = bpf_ringbuf::RingBuf::create(1 << 20)?;
    /// use std::time::Duration;
    /// use bpf_ringbuf::{Reader, WakePolicy};
    /// let mut reader = Reader::new(&ring)?;
    /// // Spare the producer its wakeups, but never see a record later than 2 ms.
    /// reader.set_wake_policy(WakePolicy::Adaptive { max_latency: Duration::from_millis(2) });
    /// # Ok(()) }
    /// ```
    ///
    /// Like every `&mut self` method, it first commits outstanding zero-copy reads.
    pub fn set_wake_policy(&mut self, policy: WakePolicy) {
        self.core.cursor_mut().publish();
        self.policy = policy;
        self.core
            .cursor()
            .set_hold_last(!matches!(policy, WakePolicy::Kernel));
        if let WakePolicy::Adaptive { max_latency } = policy {
            self.nap.set(first_nap(max_latency));
        }
    }

    /// The policy set by [`set_wake_policy`](Self::set_wake_policy).
    pub fn wake_policy(&self) -> WakePolicy {
        self.policy
    }

    /// `Some(interval)` is [`WakePolicy::Interval`]`(interval)`; `None` is
    /// [`WakePolicy::Kernel`]. Kept for code written before wake policies.
    ///
    /// Like every `&mut self` method, it first commits outstanding zero-copy reads.
    pub fn set_poll_interval(&mut self, interval: Option<Duration>) {
        self.set_wake_policy(interval.map_or(WakePolicy::Kernel, WakePolicy::Interval));
    }

    /// The interval of a [`WakePolicy::Interval`] policy, else `None`.
    pub fn poll_interval(&self) -> Option<Duration> {
        match self.policy {
            WakePolicy::Interval(d) => Some(d),
            _ => None,
        }
    }

    /// The counters since this reader was opened, waiting included (see
    /// [`Stats`]).
    pub fn stats(&self) -> Stats {
        Stats {
            sleeps: self.sleeps.get(),
            wakeups: self.wakeups.get(),
            busy_stalls: self.busy_stalls.get(),
            ..self.core.stats()
        }
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
        self.core.buffer_size()
    }

    /// Bytes the kernel still holds as unconsumed: the producer position minus
    /// the *published* consumer position (headers and padding included).
    pub fn available_bytes(&self) -> usize {
        self.core.available_bytes()
    }

    /// The consumer position as published to the kernel.
    pub fn consumer_position(&self) -> usize {
        self.core.consumer_position()
    }

    /// The producer position now.
    pub fn producer_position(&self) -> usize {
        self.core.producer_position()
    }

    /// The local read cursor: ahead of [`consumer_position`](Self::consumer_position)
    /// by the zero-copy records not yet committed.
    pub fn read_position(&self) -> usize {
        self.core.read_position()
    }

    // ---- internals ------------------------------------------------------------

    /// The cached batch is used up: load the producer position, and wait
    /// while the ring is empty, as the [`WakePolicy`] says. Returns when
    /// there is something at the cursor.
    #[cold]
    #[inline(never)]
    fn refill(&self) -> Result<()> {
        loop {
            let cur = self.core.cursor();
            if cur.reload()? {
                return Ok(());
            }
            // Hand skipped discards back before returning an error, unless a
            // slice is lent (then `commit` will) or a napping reader holds
            // its last record back (see `WakePolicy::Interval`).
            let holding = cur.hold_fits();
            if !holding {
                cur.publish_unlent();
            }
            wait::check_stop(&self.shared, self.deadline)?;
            if cur.is_lent() {
                // Sleeping unpublished would sleep through new records, and
                // publishing would end the lent slices: hand it back at once.
                return Err(Error::CommitRequired);
            }
            // Caught up, the Kernel policy sleeps at once. It used to yield
            // the CPU once first and look again, against sleeps a reader
            // made while records were still arriving (seen on producers that
            // sample their wakeups, before `consume` published within long
            // drains). Measured again once it did, side by side on the same
            // tree, the yield cost more than it saved: records/s of `consume`
            // and `read_into` on a steady stream 15-25 % lower, the sampled
            // producer at 500 records per call 12 % slower, and no fewer
            // sleeps per record (BENCHMARKS.md, "Wake policies"). Spinning
            // is worse still: a consumer always caught up makes every
            // commit queue a wakeup.
            // Publish (past skipped discards, or the same value again: either
            // way it must be ordered before the re-check), fence, re-check:
            // see `ring` for why. A napping reader that holds its last record
            // back stays behind instead: the kernel then sends it no default
            // wakeup, only forced ones, and the nap bounds the wait.
            let empty = if holding {
                Some(!cur.reload()?)
            } else {
                cur.publish_unlent_and_check_empty()
            };
            match empty {
                None => return Err(Error::CommitRequired),
                Some(false) => continue,
                Some(true) => match self.policy {
                    WakePolicy::Kernel => {
                        bump(&self.sleeps);
                        if self.waiter.sleep(&self.shared, self.deadline)?.ring {
                            bump(&self.wakeups);
                        }
                    }
                    WakePolicy::Interval(d) => self.nap(d)?,
                    WakePolicy::Adaptive { max_latency } => {
                        let d = self.nap.get();
                        self.nap(d)?;
                        self.nap.set(next_nap(d, &self.core, max_latency));
                    }
                },
            }
        }
    }

    /// Naps up to `d` (and the deadline) on an empty ring, with the position
    /// published and the ring's descriptor watched, so that a wakeup the
    /// producer *forces* is answered at once. The kernel also wakes a
    /// consumer that had caught up for the first record committed after it:
    /// that one wakeup is not a request, so it is slept through unless the
    /// ring is already filling (a quarter full). Any further wakeup within
    /// the nap can only be forced: the nap ends. Flush and close end it too.
    fn nap(&self, d: Duration) -> Result<()> {
        // An interval too long to add to now (Duration::MAX) means: until
        // the deadline, a flush or a close.
        let until = earliest(self.nap_timer.until(Instant::now(), d), self.deadline);
        let mut first = true;
        bump(&self.sleeps);
        loop {
            let woke = self.waiter.sleep(&self.shared, until)?;
            if woke.event {
                return Ok(());
            }
            if woke.ring {
                bump(&self.wakeups);
                let filling = is_filling(&self.core);
                if !first || filling {
                    return Ok(());
                }
                first = false;
            }
            if let Some(u) = until {
                let now = Instant::now();
                if now >= u {
                    self.nap_timer.ended(u, now);
                    return Ok(());
                }
            }
        }
    }

    /// The record at the cursor is BUSY: the producer is writing it and will
    /// commit within microseconds (a BPF program cannot keep a reservation
    /// past its exit). Spin briefly,
    /// then yield, then sleep on epoll with the position published, so the
    /// kernel's commit wakes us at once; the sleep is bounded (growing to
    /// 1 ms) because a `BPF_RB_NO_WAKEUP` commit wakes nobody. A napping
    /// reader holding a record back does not publish: the commit then
    /// wakes nobody, and the bounded sleep finds it.
    #[cold]
    #[inline(never)]
    fn stalled(&self) -> Result<()> {
        bump(&self.busy_stalls);
        let mut step = 0u32;
        loop {
            wait::check_stop(&self.shared, self.deadline)?;
            if let Some(nap) = wait::busy_backoff(&mut step) {
                let cur = self.core.cursor();
                let busy = if cur.hold_fits() {
                    // A napping reader holding a record back stays behind:
                    // the commit then wakes nobody (the producer pays no
                    // wakeup), and this sleep is bounded anyway.
                    matches!(cur.head(), Some(Peek::Busy))
                } else {
                    cur.publish_unlent_and_check_busy()
                };
                if !busy {
                    return Ok(());
                }
                let until = earliest(Instant::now().checked_add(nap), self.deadline);
                self.waiter.sleep(&self.shared, until)?;
            }
            if !matches!(self.core.cursor().head(), Some(Peek::Busy)) {
                return Ok(());
            }
        }
    }
}

/// The shortest nap of [`WakePolicy::Adaptive`].
pub(crate) const MIN_NAP: Duration = Duration::from_micros(50);

/// How late the timer ends a nap, learnt from the naps it ended, so that a
/// nap of `d` ends about `d` after it began. The kernel extends a sleep's
/// timeout by the thread's timer slack (50 µs by default, or a thousandth
/// of the timeout if that is more), and the wakeup takes scheduling time
/// (tens of µs on a VM): without this, every nap would last `d` plus both,
/// and a record of a steady stream would wait up to that long.
#[derive(Debug, Default)]
pub(crate) struct NapTimer {
    late: Cell<Duration>,
}

impl NapTimer {
    /// When a nap of `d` that starts `now` should end: early by the
    /// lateness learnt, by at most half of `d`. `None`: never (too long to
    /// add to now).
    pub(crate) fn until(&self, now: Instant, d: Duration) -> Option<Instant> {
        now.checked_add(d - self.late.get().min(d / 2))
    }

    /// The timer ended a nap due `until` at `now`. The estimate rises at
    /// once to a later ending and falls by a sixteenth of the way to an
    /// earlier one, so it follows the late endings rather than the mean
    /// (a record's worst wait is what a nap bounds), and one long
    /// preemption fades within about a hundred naps (meanwhile naps are at
    /// most halved).
    pub(crate) fn ended(&self, until: Instant, now: Instant) {
        let sample = now.saturating_duration_since(until);
        let late = self.late.get();
        self.late.set(if sample > late {
            sample
        } else {
            late - (late - sample) / 16
        });
    }

    /// The lateness learnt so far.
    #[cfg(test)]
    pub(crate) fn late(&self) -> Duration {
        self.late.get()
    }
}

/// [`WakePolicy::Adaptive`]'s first nap.
pub(crate) fn first_nap(max_latency: Duration) -> Duration {
    let longest = longest_nap(max_latency);
    (max_latency / 8).clamp(MIN_NAP.min(longest), longest)
}

/// [`WakePolicy::Adaptive`]'s longest nap: seven eighths of `max_latency`.
/// The eighth left is for what follows a nap before a record is handed
/// over: the wakeup's scheduling, and the drain of the records before it
/// (a burst of thousands takes tens of µs).
pub(crate) fn longest_nap(max_latency: Duration) -> Duration {
    max_latency - max_latency / 8
}

/// [`WakePolicy::Adaptive`]'s nap after one of `d`: it grows while the ring
/// stays empty and shrinks fast when the ring was found filling.
pub(crate) fn next_nap(d: Duration, core: &Consumer, max_latency: Duration) -> Duration {
    let fill = core.cursor().known_fill().max(core.available_bytes());
    adapt_nap(
        d,
        max_latency,
        fills(fill, core.buffer_size()),
        unread(core) == 0,
    )
}

/// Bytes produced past the reader's cursor: 0 when the ring stayed empty
/// (a record held back by a napping reader was read already, so it does
/// not count, unlike in the unconsumed bytes the kernel sees).
pub(crate) fn unread(core: &Consumer) -> usize {
    core.producer_position().wrapping_sub(core.read_position())
}

/// The rule of [`WakePolicy::Adaptive`], given what the last nap left: a
/// quarter of the nap when a ring was found `filling`, twice it when every
/// ring was `empty`, else the same; within
/// `MIN_NAP..=longest_nap(max_latency)`.
pub(crate) fn adapt_nap(
    d: Duration,
    max_latency: Duration,
    filling: bool,
    empty: bool,
) -> Duration {
    let next = if filling {
        d / 4
    } else if empty {
        d.saturating_mul(2)
    } else {
        d
    };
    let longest = longest_nap(max_latency);
    next.clamp(MIN_NAP.min(longest), longest)
}

/// Whether `fill` unconsumed bytes of a ring of `size` count as filling: a
/// quarter of the ring or more.
pub(crate) fn fills(fill: usize, size: usize) -> bool {
    fill >= size / 4
}

/// Whether a napping reader answers the kernel's first (default) wakeup: only
/// when the ring is already filling. Any later wakeup in the same nap can only
/// be forced, and always ends it.
pub(crate) fn is_filling(core: &Consumer) -> bool {
    fills(core.available_bytes(), core.buffer_size())
}

fn bump(c: &Cell<u64>) {
    c.set(c.get().wrapping_add(1));
}

/// How a blocking read waits when the ring is empty. Each wakeup from the
/// kernel is paid by the **producer**, inside the BPF program's commit (an
/// `irq_work`, then waking the sleeping thread: microseconds, tens of them on
/// a VM); a reader that looks again on its own pays with latency instead.
///
/// | policy | latency | producer cost | choose it when |
/// |---|---|---|---|
/// | [`Kernel`](Self::Kernel) | lowest (a wakeup) | a wakeup whenever the reader had caught up | events are rare, or each must be seen at once |
/// | [`Interval(d)`](Self::Interval) | up to `d` | at most one default wakeup per nap | a steady stream, a latency budget of `d` |
/// | [`Adaptive { max_latency }`](Self::Adaptive) | up to `max_latency`, less when the ring fills | as `Interval` | bursty streams, small rings: naps grow while idle and shrink when the ring fills |
///
/// Every policy answers a wakeup that the producer **forces**
/// (`BPF_RB_FORCE_WAKEUP`) at once, and a flush or close at once. Programs
/// that sample their own wakeups (commit with `BPF_RB_NO_WAKEUP` until
/// `bpf_ringbuf_query(BPF_RB_AVAIL_DATA)` reaches a threshold, then force)
/// are served by every policy; see also
/// [`Consumer::set_publish_every`](crate::Consumer::set_publish_every).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WakePolicy {
    /// Sleep until the kernel wakes the reader: it does when it commits a
    /// record at the position the reader published (the reader had caught
    /// up), or when the producer forces it.
    #[default]
    Kernel,
    /// Nap for this long on an empty ring, then look again; a forced wakeup
    /// ends the nap at once. Records committed with `BPF_RB_NO_WAKEUP` are
    /// picked up at the next look.
    ///
    /// A nap ends about `d` after it began, not later: the kernel ends a
    /// sleep late (the thread's timer slack, 50 µs by default, then the
    /// scheduling of the wakeup), so the reader learns how late its naps
    /// end and asks for that much less (at most half of `d`).
    ///
    /// The kernel wakes a consumer that has caught up for the next record
    /// (its default wakeup), which a napping reader does not want. So when a
    /// [`consume`](Reader::consume) empties the ring under this policy, the
    /// reader hands back everything but the last record it delivered: the
    /// kernel sees it behind and sends no default wakeup. That record is
    /// handed back by the next commit or when the reader drops (a crash
    /// would deliver it again to the next reader). It is held only if it
    /// takes at most 1/32 of the ring (with any discards after it), since
    /// the kernel counts it as unconsumed: a held record takes room from
    /// the producer. Other read paths publish
    /// everything (their contracts say so), and then the one default wakeup
    /// after catching up is slept through unless the ring is filling.
    Interval(Duration),
    /// Like `Interval`, with a nap that adapts: it doubles while the ring is
    /// found empty, up to seven eighths of `max_latency`, and shrinks to a
    /// quarter when the ring is found a quarter full or more (down to
    /// 50 µs), so a steady
    /// stream costs the producer no wakeups and a burst does not overflow a
    /// small ring. A record waits at most about `max_latency`: naps end on
    /// time as under `Interval`, and the eighth of `max_latency` left is
    /// for the wakeup's scheduling and the drain of the records before it.
    /// A preemption of the reading thread can still add to the wait.
    Adaptive {
        /// The longest wait of a record the policy aims for; the longest
        /// nap is seven eighths of it.
        max_latency: Duration,
    },
}

/// The earlier of two optional instants (`None` is "never").
pub(crate) fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

#[cfg(target_os = "linux")]
impl AsFd for Reader {
    /// The ring's descriptor ([`Consumer`]'s): readable (level-triggered)
    /// while the producer position differs from the published consumer
    /// position.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.core.as_fd()
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
        let cur = self.reader.core.cursor();
        if let Some(rec) = cur.next_record() {
            return Some(rec);
        }
        // A discard to skip, or the end of the batch (the known part of
        // the ring, a BUSY or a corrupt record: the next read reports it).
        match cur.skip_discards() {
            Head::Record => cur.next_record(),
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
        self.reader.core.cursor_mut().publish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn nap_timer_learns_how_late_naps_end_and_shortens_them_by_at_most_half() {
        let t = NapTimer::default();
        let now = Instant::now();
        // Nothing learnt: the nap is as asked; too long to add is "never".
        assert_eq!(t.until(now, 1000 * US), Some(now + 1000 * US));
        assert_eq!(t.until(now, Duration::MAX), None);
        // A nap ending 100 µs late: the estimate rises to it at once.
        let due = now + 1000 * US;
        t.ended(due, due + 100 * US);
        assert_eq!(t.late(), 100 * US);
        assert_eq!(t.until(now, 1000 * US), Some(now + 900 * US));
        // One ending less late: it falls a sixteenth of the way.
        t.ended(due, due + 20 * US);
        assert_eq!(t.late(), 95 * US);
        let late = t.late();
        // Never shortened by more than half.
        assert_eq!(t.until(now, 60 * US), Some(now + 30 * US));
        // A nap that ends on time: a sixteenth of the way down.
        t.ended(due, due);
        assert_eq!(t.late(), late - late / 16);
        // Ending early (a timer that fired before the instant) counts as on time.
        let before = t.late();
        t.ended(due, due - 10 * US);
        assert_eq!(t.late(), before - before / 16);
    }
}
