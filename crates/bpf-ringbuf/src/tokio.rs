//! [`AsyncReader`]: a ring buffer read from tokio (feature `tokio`).
//!
//! ```no_run
//! # async fn run() -> bpf_ringbuf::Result<()> {
//! use bpf_ringbuf::{tokio::AsyncReader, Error, RingBuf};
//!
//! let ring = RingBuf::create(1 << 20)?;
//! let mut reader = AsyncReader::new(&ring)?; // inside a tokio runtime
//! let handle = reader.handle(); // close() or flush() from anywhere
//! loop {
//!     // Wait, then read in place; one commit when the batch drops.
//!     let batch = match reader.batch().await {
//!         Ok(batch) => batch,
//!         Err(Error::Closed) => break,
//!         Err(e) => return Err(e),
//!     };
//!     for rec in &batch {
//!         println!("{} bytes", rec.len());
//!     }
//! }
//! # drop(handle);
//! # Ok(()) }
//! ```
//!
//! [`read`](AsyncReader::read), [`read_into`](AsyncReader::read_into) and the
//! [`Stream`] of owned records ([`into_stream`](AsyncReader::into_stream))
//! copy; [`batch`](AsyncReader::batch) lends records in place.
//!
//! # Edge-triggered readiness, and why no wakeup is lost
//!
//! tokio registers descriptors with `EPOLLET`: an [`AsyncFd`] is told about
//! each *wakeup*, not about the ring being non-empty, and it remembers
//! readiness until told otherwise ([`tokio::io::unix::AsyncFdReadyMutGuard::clear_ready`]).
//! The kernel wakes a consumer only for a record committed at the consumer
//! position it has *published* (see the crate docs). So a task may sleep
//! only after it has published, fenced and re-checked
//! ([`Consumer::prepare_wait`]), and only the readiness seen *before* that
//! re-check may be cleared:
//!
//! 1. try to read; nothing there;
//! 2. poll the ring's readiness: if tokio holds readiness, take its guard;
//! 3. `prepare_wait()`: publish `consumer_pos`, `SeqCst` fence, look at the
//!    producer position and the head again. `Ready`: read again (keep the
//!    readiness);
//! 4. `Empty` (or `InProgress`): clear the guard's readiness, then poll once
//!    more, which registers the task's waker, then sleep.
//!
//! The fence pairs with the kernel's `xchg` of the header in
//! `bpf_ringbuf_commit` followed by its load of `consumer_pos`: either our
//! re-check sees the record, or the kernel sees our published position and
//! wakes us. Such a wakeup comes after the re-check, so it is a newer event
//! than the one the guard holds, and `clear_ready` (which clears only the
//! events up to its guard's) keeps it. Clearing *before* the re-check would
//! be safe as well; clearing without a re-check after it (a read that found
//! nothing, then `clear_ready`) is the lost wakeup that hangs edge-triggered
//! readers. When tokio holds no readiness, the waker is registered first and
//! the re-check comes after it: a wakeup after the re-check then wakes the task.
//!
//! A head record that is reserved but not committed (BUSY) wakes nobody if
//! it is committed with `BPF_RB_NO_WAKEUP`: the reader yields to the runtime
//! a few times, then naps 1 ms at a time on its readiness until the record
//! is committed.
//!
//! # Cancellation
//!
//! Records are taken from the ring only by the synchronous step that returns
//! them: the futures of [`read`](AsyncReader::read), [`read_into`](AsyncReader::read_into),
//! [`batch`](AsyncReader::batch) and the stream's `next()` hold no record
//! while they wait. Dropping one at any `.await` (a `select!` branch that
//! lost, a [`tokio::time::timeout`]) loses no record and delivers none twice.
//! An [`AsyncBatch`] commits, when dropped, exactly the records it delivered.
//! Timeouts are the runtime's: `AsyncReader` has no deadline of its own.
//!
//! # Cooperation
//!
//! A ring that keeps filling never makes a read wait, so a task draining it
//! would never return to the runtime, and the other branches of its
//! `select!` (timers, shutdown signals) and the other tasks on its thread
//! would starve. The reader spends one unit of tokio's cooperative budget
//! ([`tokio::task::coop`]) per [`yield_every`](AsyncReader::set_yield_every)
//! records delivered (64 by default), whatever the call: a read or a stream
//! item counts one, a batch counts its records (and holds at most
//! `yield_every`). When the task's budget (128 units per poll of the task)
//! is used up, the next call returns `Pending` once and the task yields. A
//! draining task then runs at most 128 × `yield_every` records per turn.
//! Inside [`tokio::task::coop::unconstrained`] there is no budget and no
//! yielding.
//!
//! # Close and flush
//!
//! [`AsyncReader::handle`] is the same [`ReaderHandle`] as a blocking
//! reader's: its flags and its eventfd. The reader registers a duplicate of
//! that eventfd as a second `AsyncFd`, so `close()` and `flush()` wake an
//! awaiting task from any thread, runtime or not, with no other
//! synchronisation (a `tokio::sync::Notify` would need a second signalling
//! path beside the eventfd that blocking readers already use). After
//! `close()` every read returns [`Error::Closed`] at once (the stream ends);
//! a `flush()` returns [`Error::Flushed`] once, after the records present.
//!
//! # Wake policies
//!
//! [`WakePolicy::Kernel`] (default) awaits the ring's readiness.
//! [`WakePolicy::Interval`] and [`WakePolicy::Adaptive`] await a tokio timer
//! raced against the readiness, as the blocking [`Reader`](crate::Reader)
//! naps: the kernel's first wakeup after the reader caught up is slept
//! through unless the ring is a quarter full; any later wakeup within the
//! nap can only be forced (`BPF_RB_FORCE_WAKEUP`) and ends it at once; so do
//! flush and close. tokio's timers have millisecond resolution: a nap ends
//! at a millisecond tick after it is due, up to 1 ms late (the blocking
//! readers learn how late their naps end and compensate; this one does
//! not), and naps shorter than 1 ms last about 1 ms. [`AsyncReader::stats`] counts sleeps,
//! wakeups and BUSY stalls as [`Reader::stats`](crate::Reader::stats) does.
//!
//! # Driving a `RingSet` from tokio
//!
//! A [`RingSet`](crate::RingSet) (many rings behind one epoll descriptor) is
//! driven the same way; there is no adapter type for it yet. Register a
//! duplicate of its [`AsFd`] descriptor (the epoll instance, readable while
//! a ring it watches has a wakeup pending) as an `AsyncFd` with
//! `Interest::READABLE`, then loop: drain with
//! [`try_consume`](crate::RingSet::try_consume); when a round found nothing,
//! take the readiness guard, call [`RingSet::prepare_wait`](crate::RingSet::prepare_wait)
//! (every ring published, fenced and re-checked) and clear the guard's
//! readiness only if it returned [`Readiness::Empty`]; await readiness (with
//! a 1 ms timer on [`Readiness::InProgress`]), and spend tokio's cooperative
//! budget once per round (`tokio::task::coop::consume_budget().await`), as
//! above. Flush and close of a `RingSet` come through that same epoll
//! descriptor.

use std::borrow::BorrowMut;
use std::cell::Cell;
mod user_ringbuf;
pub use user_ringbuf::AsyncUserRingBuf;

use std::future::{poll_fn, Future};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use ::tokio::io::unix::AsyncFd;
use ::tokio::io::Interest;
use ::tokio::task::coop;
use ::tokio::time::{Instant, Sleep};
use futures_core::Stream;

use crate::consumer::{Consumer, Readiness, Record, Stats};
use crate::error::{Error, Result};
use crate::reader::{self, WakePolicy};
use crate::ring::cursor::Head;
use crate::wait::{self, ReaderHandle, Shared};

/// Times a BUSY head record is looked at again after yielding to the runtime
/// before the reader naps on its readiness.
const BUSY_YIELDS: u32 = 8;
/// The nap while the head record is BUSY: its commit wakes the reader at
/// once unless made with `BPF_RB_NO_WAKEUP`; then this bounds the wait.
const BUSY_NAP: Duration = Duration::from_millis(1);
/// [`AsyncReader::set_yield_every`]'s default.
const YIELD_EVERY: usize = 64;
/// A nap too long to add to now: until a wakeup, a flush or a close.
const FOREVER: Duration = Duration::from_secs(60 * 60 * 24 * 365);

/// What the reader is waiting for between two looks at the ring. It holds
/// no record, so a future dropped in any state loses nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Not waiting.
    Idle,
    /// Asleep on the ring's readiness, published and re-checked
    /// ([`WakePolicy::Kernel`]).
    Asleep,
    /// Napping on the timer, the ring's readiness watched.
    Nap {
        /// This nap's length (it adapts under [`WakePolicy::Adaptive`]).
        len: Duration,
        /// No wakeup from the kernel yet in this nap.
        first: bool,
    },
    /// The head record is BUSY.
    Busy {
        /// Looks so far.
        step: u32,
        /// The timer is set for a [`BUSY_NAP`].
        armed: bool,
    },
}

/// An async consumer of a `BPF_MAP_TYPE_RINGBUF` map for tokio: a
/// [`Consumer`] whose reads await the ring's readiness (feature `tokio`).
///
/// See the [module docs](self) for how it waits under edge-triggered
/// readiness, why every future is cancellation-safe, how a long drain
/// yields to the runtime, and how close and flush reach it.
///
/// It must be created inside a tokio runtime with IO and time enabled
/// (`Builder::enable_all`, or `#[tokio::main]`), and used in that runtime.
///
/// ```no_run
/// # async fn run() -> bpf_ringbuf::Result<()> {
/// use bpf_ringbuf::{tokio::AsyncReader, RingBuf};
/// use std::time::Duration;
///
/// let ring = RingBuf::create(1 << 20)?;
/// let mut reader = AsyncReader::new(&ring)?;
/// // Each read waits for a record; the timeout drops it safely.
/// while let Ok(rec) = tokio::time::timeout(Duration::from_secs(1), reader.read()).await {
///     println!("{} bytes", rec?.data.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AsyncReader {
    /// The non-blocking core.
    core: Consumer,
    /// A duplicate of the ring's descriptor, registered with the runtime.
    ring: AsyncFd<OwnedFd>,
    /// A duplicate of `shared`'s eventfd, registered with the runtime.
    event: AsyncFd<OwnedFd>,
    shared: Arc<Shared>,
    policy: WakePolicy,
    /// `Adaptive`: the next nap.
    nap_len: Duration,
    /// Naps and BUSY back-off. Boxed once: `Sleep` is `!Unpin`.
    timer: Pin<Box<Sleep>>,
    wait: Wait,
    /// Records per unit of tokio's cooperative budget.
    yield_every: usize,
    /// Records delivered since the last unit was spent.
    since_unit: usize,
    sleeps: u64,
    wakeups: u64,
    busy_stalls: u64,
}

impl AsyncReader {
    /// Opens an async reader on a ring buffer map (see [`Consumer::new`]
    /// for what is mapped and the errors). Must be called inside a tokio
    /// runtime with IO and time enabled: outside any runtime it returns
    /// [`Error::NoAsyncRuntime`]; in a runtime built without the IO or time
    /// driver, tokio's own registration and timers panic.
    pub fn new(map: impl AsFd) -> Result<AsyncReader> {
        AsyncReader::from_consumer(Consumer::new(map)?)
    }

    /// Wraps a [`Consumer`] (for example a [`FakeRing`](crate::testing::FakeRing)'s):
    /// registers its descriptor and an eventfd for flush and close with the
    /// current runtime. Commits outstanding zero-copy reads first.
    pub fn from_consumer(mut core: Consumer) -> Result<AsyncReader> {
        // tokio's registration panics outside a runtime: say so instead.
        if ::tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoAsyncRuntime);
        }
        core.commit();
        let shared = Shared::new()?;
        let event = register(shared.event_fd(), "epoll_ctl(register eventfd with tokio)")?;
        let ring = register(core.as_fd(), "epoll_ctl(register ring with tokio)")?;
        Ok(AsyncReader {
            core,
            ring,
            event,
            shared,
            policy: WakePolicy::Kernel,
            nap_len: Duration::ZERO,
            timer: Box::pin(::tokio::time::sleep(Duration::ZERO)),
            wait: Wait::Idle,
            yield_every: YIELD_EVERY,
            since_unit: 0,
            sleeps: 0,
            wakeups: 0,
            busy_stalls: 0,
        })
    }

    /// The non-blocking core, for positions and statistics.
    pub fn consumer(&self) -> &Consumer {
        &self.core
    }

    fn core_mut(&mut self) -> &mut Consumer {
        &mut self.core
    }

    /// Unregisters the ring from the runtime and unwraps the core; the claim
    /// on the map moves with it.
    pub fn into_consumer(self) -> Consumer {
        self.core
    }

    /// A handle to flush or close this reader from any thread: the same type
    /// as a blocking reader's.
    pub fn handle(&self) -> ReaderHandle {
        ReaderHandle {
            shared: self.shared.clone(),
        }
    }

    // ---- reads ---------------------------------------------------------------

    /// Reads the next record into a new [`Record`], waiting while the ring
    /// is empty, and publishes the consumer position past it. Cancellation-safe.
    ///
    /// Errors: [`Error::Closed`] (at once after close, even with records
    /// left), [`Error::Flushed`] (once, after the records present),
    /// [`Error::Corrupt`] and friends.
    pub async fn read(&mut self) -> Result<Record> {
        let mut rec = Record::default();
        self.read_into(&mut rec).await?;
        Ok(rec)
    }

    /// [`read`](Self::read) into `rec`, reusing its allocation. Cancellation-safe:
    /// `rec` is written only when the future completes with `Ok`.
    pub async fn read_into(&mut self, rec: &mut Record) -> Result<()> {
        poll_fn(|cx| self.poll_read_into(cx, rec)).await
    }

    /// The poll form of [`read_into`](Self::read_into), for hand-written
    /// futures and streams: `Ready(Ok(()))` once a record is copied into
    /// `rec`; `Pending` with the task's waker registered for the ring, flush
    /// and close. Nothing is consumed by a call that returns `Pending`.
    pub fn poll_read_into(&mut self, cx: &mut Context<'_>, rec: &mut Record) -> Poll<Result<()>> {
        ready!(self.poll_cooperate(cx));
        loop {
            if self.shared.is_closed() {
                return Poll::Ready(Err(Error::Closed));
            }
            // Publishes past the record it copies: the one step that consumes.
            if self.core_mut().try_read_into(rec)? {
                self.delivered(1);
                return Poll::Ready(Ok(()));
            }
            ready!(self.poll_wait(cx))?;
        }
    }

    /// Waits until a record is there, then lends the records present in
    /// place, at most [`yield_every`](Self::yield_every) of them: iterate
    /// `&batch`. They are committed, with one store, when the batch drops.
    /// Cancellation-safe (the wait holds no record).
    ///
    /// Errors as [`read`](Self::read).
    pub async fn batch(&mut self) -> Result<AsyncBatch<'_>> {
        poll_fn(|cx| self.poll_batch_ready(cx)).await?;
        let left = self.yield_every.saturating_sub(self.since_unit).max(1);
        Ok(AsyncBatch {
            reader: self,
            left: Cell::new(left),
            taken: Cell::new(0),
        })
    }

    /// `Ready(Ok(()))` once a committed record is at the cursor.
    fn poll_batch_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        ready!(self.poll_cooperate(cx));
        loop {
            if self.shared.is_closed() {
                return Poll::Ready(Err(Error::Closed));
            }
            let core = self.core_mut();
            core.commit();
            let cur = core.cursor();
            match cur.skip_discards() {
                Head::Record => {
                    self.wait = Wait::Idle;
                    return Poll::Ready(Ok(()));
                }
                Head::End if cur.reload()? => continue,
                Head::End | Head::Busy => {}
                Head::Corrupt(c) => return Poll::Ready(Err(c.into())),
            }
            ready!(self.poll_wait(cx))?;
        }
    }

    /// A [`Stream`] of owned records that owns the reader (see [`RecordStream`]).
    pub fn into_stream(self) -> RecordStream<AsyncReader> {
        RecordStream {
            reader: self,
            done: false,
        }
    }

    /// A [`Stream`] of owned records borrowing the reader (see [`RecordStream`]).
    pub fn stream(&mut self) -> RecordStream<&mut AsyncReader> {
        RecordStream {
            reader: self,
            done: false,
        }
    }

    // ---- settings and introspection ------------------------------------------

    /// How an empty ring is waited for: see [`WakePolicy`] and the module
    /// docs (default [`WakePolicy::Kernel`]).
    pub fn set_wake_policy(&mut self, policy: WakePolicy) {
        self.policy = policy;
        self.wait = Wait::Idle;
        if let WakePolicy::Adaptive { max_latency } = policy {
            self.nap_len = reader::first_nap(max_latency);
        }
    }

    /// The policy set by [`set_wake_policy`](Self::set_wake_policy).
    pub fn wake_policy(&self) -> WakePolicy {
        self.policy
    }

    /// Spend one unit of tokio's cooperative budget per `records` records
    /// delivered (at least 1; default 64); a batch holds at most `records`
    /// records. Lower values let sibling `select!` branches and other tasks
    /// run sooner during a flood; higher values cost less per record. See
    /// the module docs.
    pub fn set_yield_every(&mut self, records: usize) {
        self.yield_every = records.max(1);
    }

    /// The value set by [`set_yield_every`](Self::set_yield_every).
    pub fn yield_every(&self) -> usize {
        self.yield_every
    }

    /// The counters since this reader was opened, waiting included (see
    /// [`Stats`]): `sleeps` counts the times a read found the ring empty and
    /// went to await it, `wakeups` the ones the kernel ended.
    pub fn stats(&self) -> Stats {
        Stats {
            sleeps: self.sleeps,
            wakeups: self.wakeups,
            busy_stalls: self.busy_stalls,
            ..self.consumer().stats()
        }
    }

    // ---- waiting --------------------------------------------------------------

    /// Spends a unit of tokio's budget once `yield_every` records were
    /// delivered; `Pending` (the task rescheduled) when the budget is used up.
    /// Also counts the wakeup that ended a sleep: the read after it finds
    /// the record before it would look at the readiness.
    fn poll_cooperate(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.since_unit >= self.yield_every {
            ready!(coop::poll_proceed(cx)).made_progress();
            self.since_unit = 0;
        }
        if self.wait == Wait::Asleep {
            // The readiness stays set: the next wait re-checks, then clears it.
            if let Poll::Ready(Ok(_)) = self.ring.poll_read_ready(cx) {
                self.wakeups += 1;
                self.wait = Wait::Idle;
            }
        }
        Poll::Ready(())
    }

    fn delivered(&mut self, records: usize) {
        self.since_unit = self.since_unit.saturating_add(records);
        self.wait = Wait::Idle;
    }

    /// Called when the last look found no record (empty, or BUSY at the
    /// head). `Ready(Ok(()))`: look again. `Ready(Err)`: closed, flushed,
    /// corrupt. `Pending`: the task's waker is registered for the ring's
    /// readiness (after the position was published, fenced and re-checked),
    /// the eventfd of flush and close, and the timer when one is running.
    fn poll_wait(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        loop {
            // Flush and close: the eventfd's waker is registered before the
            // flags are read, so a close after the read wakes us.
            self.poll_event(cx)?;
            if let Err(e) = wait::check_stop(&self.shared, None) {
                self.wait = Wait::Idle;
                return Poll::Ready(Err(e));
            }
            if let Wait::Nap { len, first } = self.wait {
                // The position was published and re-checked when the nap began.
                match self.ring.poll_read_ready_mut(cx) {
                    Poll::Ready(Ok(mut guard)) => {
                        self.wakeups += 1;
                        let filling = reader::is_filling(&self.core);
                        // Safe to clear unchecked: the nap ends on the timer
                        // in any case, and a later wakeup is a newer event.
                        guard.clear_ready();
                        if !first || filling {
                            self.end_nap(len);
                            return Poll::Ready(Ok(()));
                        }
                        self.wait = Wait::Nap { len, first: false };
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(io_error(e))),
                    Poll::Pending => {}
                }
                if self.timer.as_mut().poll(cx).is_ready() {
                    self.end_nap(len);
                    return Poll::Ready(Ok(()));
                }
                return Poll::Pending;
            }
            // Publish, fence, re-check; clear readiness only after the
            // re-check found nothing (see the module docs).
            let readiness = match self.ring.poll_read_ready_mut(cx) {
                Poll::Ready(Ok(mut guard)) => {
                    if self.wait == Wait::Asleep {
                        self.wakeups += 1;
                        self.wait = Wait::Idle;
                    }
                    match self.core.prepare_wait()? {
                        Readiness::Ready => return Poll::Ready(Ok(())),
                        // Empty or BUSY after the fence: any wakeup for a
                        // record committed from now on is a newer event
                        // than this guard's, so clearing cannot lose it.
                        _ => guard.clear_ready(),
                    }
                    // Poll again: that registers the waker (or finds a newer
                    // event), and the re-check below follows it.
                    continue;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(io_error(e))),
                // The waker is registered (or the budget is used up and the
                // task rescheduled): a wakeup after this re-check wakes us.
                Poll::Pending => self.core_mut().prepare_wait()?,
            };
            match readiness {
                Readiness::Ready => {
                    self.wait = Wait::Idle;
                    return Poll::Ready(Ok(()));
                }
                Readiness::InProgress => return self.poll_busy(cx),
                _ => match self.policy {
                    WakePolicy::Interval(d) => self.start_nap(d),
                    WakePolicy::Adaptive { .. } => self.start_nap(self.nap_len),
                    _ => {
                        if self.wait != Wait::Asleep {
                            self.sleeps += 1;
                            self.wait = Wait::Asleep;
                        }
                        return Poll::Pending;
                    }
                },
            }
        }
    }

    /// Drains the eventfd of flush and close when it fired, leaving the
    /// waker registered; the caller checks the flags next.
    fn poll_event(&mut self, cx: &mut Context<'_>) -> Result<()> {
        loop {
            match self.event.poll_read_ready_mut(cx) {
                Poll::Ready(Ok(mut guard)) => {
                    // Drain, then clear: a write after the drain is a newer
                    // event that clear_ready keeps.
                    self.shared.drain_event();
                    guard.clear_ready();
                }
                Poll::Ready(Err(e)) => return Err(io_error(e)),
                Poll::Pending => return Ok(()),
            }
        }
    }

    /// The head record is BUSY (re-checked after the fence, the ring's
    /// waker registered): yield to the runtime a few times, then nap
    /// [`BUSY_NAP`] at a time; its commit wakes us sooner unless made with
    /// `BPF_RB_NO_WAKEUP`.
    fn poll_busy(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let (step, armed) = match self.wait {
            Wait::Busy { step, armed } => (step, armed),
            _ => {
                self.busy_stalls += 1;
                (0, false)
            }
        };
        if step < BUSY_YIELDS {
            self.wait = Wait::Busy {
                step: step + 1,
                armed: false,
            };
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        if !armed {
            self.timer.as_mut().reset(Instant::now() + BUSY_NAP);
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            self.wait = Wait::Busy { step, armed: false };
            return Poll::Ready(Ok(()));
        }
        self.wait = Wait::Busy { step, armed: true };
        Poll::Pending
    }

    fn start_nap(&mut self, len: Duration) {
        self.sleeps += 1;
        let now = Instant::now();
        let until = now.checked_add(len).unwrap_or(now + FOREVER);
        self.timer.as_mut().reset(until);
        self.wait = Wait::Nap { len, first: true };
    }

    fn end_nap(&mut self, len: Duration) {
        if let WakePolicy::Adaptive { max_latency } = self.policy {
            self.nap_len = reader::next_nap(len, self.consumer(), max_latency);
        }
        self.wait = Wait::Idle;
    }
}

/// Registers a duplicate of `fd` with the current runtime (readable).
fn register(fd: BorrowedFd<'_>, call: &'static str) -> Result<AsyncFd<OwnedFd>> {
    let dup = crate::sys::dup(fd)?;
    crate::sys::async_fd::register(dup, Interest::READABLE)
        .map_err(|e| Error::from_syscall(call, e))
}

fn io_error(e: io::Error) -> Error {
    Error::from_syscall("epoll_wait(tokio readiness)", e)
}

impl AsFd for AsyncReader {
    /// The ring's descriptor ([`Consumer`]'s).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.core.as_fd()
    }
}

/// Records present when [`AsyncReader::batch`] returned, at most
/// [`AsyncReader::yield_every`] of them: iterate `&batch`. The records it
/// delivered are committed, with one store, when it drops (also when
/// unwinding from a panic); a record it did not deliver stays in the ring.
///
/// Iteration never waits; it stops at the batch's limit, at the producer
/// position seen by the wait, or at a BUSY or corrupt record (the next read
/// reports the latter).
#[derive(Debug)]
pub struct AsyncBatch<'r> {
    reader: &'r mut AsyncReader,
    /// Records it may still deliver.
    left: Cell<usize>,
    /// Records delivered.
    taken: Cell<usize>,
}

impl AsyncBatch<'_> {
    /// The next record of the batch, or `None` at its end.
    #[inline]
    pub fn next_record(&self) -> Option<&[u8]> {
        let left = self.left.get();
        if left == 0 {
            return None;
        }
        let cur = self.reader.consumer().cursor();
        let rec = match cur.next_record() {
            Some(rec) => rec,
            // A discard to skip, or the end of the batch.
            None => match cur.skip_discards() {
                Head::Record => cur.next_record()?,
                _ => return None,
            },
        };
        self.left.set(left - 1);
        self.taken.set(self.taken.get() + 1);
        Some(rec)
    }
}

impl<'b> Iterator for &'b AsyncBatch<'_> {
    type Item = &'b [u8];

    #[inline]
    fn next(&mut self) -> Option<&'b [u8]> {
        self.next_record()
    }
}

impl Drop for AsyncBatch<'_> {
    fn drop(&mut self) {
        self.reader.core_mut().commit();
        self.reader.delivered(self.taken.get());
    }
}

/// A [`Stream`] of owned records from an [`AsyncReader`]
/// ([`into_stream`](AsyncReader::into_stream) owns the reader,
/// [`stream`](AsyncReader::stream) borrows it).
///
/// Each item is [`AsyncReader::read`]'s result; [`Error::Closed`] ends the
/// stream instead (it yields `None`, then `None` forever). Dropping the
/// stream, or a `next()` future, at any point loses no record.
///
/// ```no_run
/// # async fn run(reader: bpf_ringbuf::tokio::AsyncReader) -> bpf_ringbuf::Result<()> {
/// use futures_core::Stream;
/// use std::pin::pin;
///
/// let mut records = pin!(reader.into_stream());
/// while let Some(rec) = std::future::poll_fn(|cx| records.as_mut().poll_next(cx)).await {
///     println!("{} bytes", rec?.data.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct RecordStream<R> {
    reader: R,
    done: bool,
}

impl<R> RecordStream<R> {
    /// The reader back (an owned one, or the borrow).
    pub fn into_inner(self) -> R {
        self.reader
    }
}

impl<R: BorrowMut<AsyncReader> + Unpin> Stream for RecordStream<R> {
    type Item = Result<Record>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Record>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let mut rec = Record::default();
        match ready!(this.reader.borrow_mut().poll_read_into(cx, &mut rec)) {
            Ok(()) => Poll::Ready(Some(Ok(rec))),
            Err(Error::Closed) => {
                this.done = true;
                Poll::Ready(None)
            }
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }
}
