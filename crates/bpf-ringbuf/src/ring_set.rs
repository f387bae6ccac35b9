//! [`RingSet`]: many rings, one epoll instance, one eventfd for flush and
//! close, drained round-robin with a fair budget per ring.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::ops::ControlFlow;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::consumer::{Budget, Consumer, Readiness, Stats, StopReason};
use crate::error::{Error, Result};
use crate::reader::{self, earliest, WakePolicy};
use crate::ring::Peek;
use crate::sys::{bpf, epoll::Epoll};
use crate::wait::{self, ReaderHandle, Shared};

/// The epoll token of the flush/close eventfd; a ring's token is its slot.
const TOKEN_EVENT: u64 = u64::MAX;
/// Events taken per `epoll_wait`; more are taken by the next call.
const EVENTS: usize = 64;

/// Many ring buffers read from one thread: one epoll instance, one eventfd
/// for flush and close, round-robin rounds with a fair [`Budget`] per ring,
/// and an ordered merge.
///
/// Rings are keyed by a key of your choosing (`K`: a CPU number, a name),
/// which the callbacks receive with each record. Every record of every ring
/// is delivered exactly once, in order within its ring; zero-copy, as a
/// slice of the ring lent to the callback.
///
/// Agents shard their events over many rings (one per CPU, or per group of
/// CPUs) because one ring's reservation lock saturates. A `RingSet` reads
/// them all from one thread:
///
/// * **One descriptor per ring.** Each ring is a [`Consumer`] (its map's
///   descriptor, duplicated, and its mappings), registered edge-triggered in
///   the set's one epoll instance. Flush and close share one eventfd.
/// * **Fair rounds.** [`poll`](Self::poll) drains the rings that have
///   records round-robin, each at most one [`Budget`] per round
///   ([`set_budget`](Self::set_budget), records and bytes), with one
///   commit per ring per round. A ring that floods cannot delay another
///   ready ring by more than one round: between two records of a trickling
///   ring, a flooding one delivers at most two budgets (the rest of the
///   round under way, and its turn in the next).
/// * **Idle rings cost nothing.** A round visits only the rings that may
///   have records: those the kernel woke, and those found non-empty last
///   time. A ring found empty leaves the round after it was published,
///   fenced and re-checked ([`Consumer::prepare_wait`]), so its next record
///   wakes the set. With [`WakePolicy::Kernel`] and no deadline, a poll never
///   scans the idle rings. Under `Interval` and `Adaptive` a ring drained
///   empty leaves it holding its last record back instead (see
///   [`set_wake_policy`](Self::set_wake_policy)), and every round of
///   `poll` looks at the rings holding one (a load of each one's producer
///   position).
/// * **Same waiting as a [`Reader`](crate::Reader).** Deadlines
///   ([`set_deadline`](Self::set_deadline)), [`ReaderHandle::flush`] and
///   [`ReaderHandle::close`] from another thread, and the [`WakePolicy`]
///   ([`set_wake_policy`](Self::set_wake_policy)). A deadline, a flush
///   and the end of every nap (`Interval`, `Adaptive`) make the next round
///   look at every ring once, so records committed with `BPF_RB_NO_WAKEUP`
///   are read then; a napping `poll` that keeps delivering (another ring
///   floods, so it never naps) looks at every ring once per nap too, at
///   least 1 ms apart.
/// * **Ordered merge** ([`poll_ordered`](Self::poll_ordered)): records of
///   all rings in the order of a `u64` key read from each record (a
///   timestamp at offset 0, say), by peeking each ring's head in place.
///
/// # Before the one sleep
///
/// The kernel wakes a ring's waiters only when it commits a record at the
/// consumer position published for that ring (see the crate docs). Every
/// ring that leaves the round has been published, fenced and re-checked, and
/// the set sleeps only when no ring is left in the round (or only rings
/// whose head record is reserved and not yet committed: then the sleep is
/// bounded, as a `Reader`'s is). A record committed on any ring after its
/// re-check finds the published position and wakes the epoll instance:
/// edge-triggered, that wakeup is queued even if it comes before the set
/// sleeps. `tests/loom.rs` models this for several rings sharing one sleep.
/// Under a napping policy a ring may leave the round holding a record back
/// instead, unpublished on purpose: then the set sleeps one nap at most,
/// and the nap's end looks at every ring.
///
/// # Driving a set from another event loop
///
/// `RingSet` implements [`AsFd`]: its epoll descriptor, readable when a ring
/// was woken (or on flush and close). Sleep on it, then call
/// [`try_consume`](Self::try_consume) until it delivers nothing, then
/// [`prepare_wait`](Self::prepare_wait) before sleeping again (sleep only
/// on [`Readiness::Empty`]; with a short timeout on
/// [`Readiness::InProgress`]).
///
/// # Thread per shard
///
/// A `RingSet` is `Send` but not `Sync`: one thread drives it. To use more
/// CPUs, split the rings over threads, **one `RingSet` per thread** (for
/// rings per CPU: the rings of CPUs `0..n/2` on one thread, the rest on
/// another). Each ring belongs to exactly one set: a ring is a `Consumer`,
/// and a second consumer of the same map in this process is refused
/// ([`Error::ConsumerExists`]), so a ring cannot end up in two sets by
/// mistake. To move a ring between threads, [`remove`](Self::remove) it
/// (what was delivered from it is committed), send the `Consumer` over a
/// channel, and [`insert_consumer`](Self::insert_consumer) it there. Keep
/// a [`ReaderHandle`] of each set to close them all.
///
/// Pin each thread to the CPUs whose rings it drains. A record is read
/// fastest by the CPU that wrote it (it is still in that CPU's cache): in
/// the benchmark (BENCHMARKS.md, "thread per shard"), two threads each
/// draining the rings written on their own CPU are several times faster
/// than one thread, and barely faster when each drains the other CPU's.
///
/// # Inner rings of a map of maps
///
/// [`insert_inner`](Self::insert_inner) opens the ring stored at a key
/// of a `BPF_MAP_TYPE_ARRAY_OF_MAPS` or `BPF_MAP_TYPE_HASH_OF_MAPS` (from
/// userspace a lookup returns the inner map's id, which is then opened).
///
/// ```no_run
/// # fn main() -> bpf_ringbuf::Result<()> {
/// use std::ops::ControlFlow;
/// use bpf_ringbuf::{Budget, Error, RingBuf, RingSet};
///
/// let rings: Vec<RingBuf> = (0..4)
///     .map(|_| RingBuf::create(1 << 20))
///     .collect::<Result<_, _>>()?;
/// let mut set = RingSet::new()?;
/// for (cpu, ring) in rings.iter().enumerate() {
///     set.insert(cpu, ring)?;
/// }
/// set.set_budget(Budget { max_records: 256, max_bytes: 64 << 10 });
/// let handle = set.handle(); // close() or flush() from another thread
/// loop {
///     match set.poll(|cpu, rec| {
///         println!("cpu {cpu}: {} bytes", rec.len());
///         ControlFlow::Continue(())
///     }) {
///         Ok(_round) => {}
///         Err(Error::Closed) => break,
///         Err(e) => return Err(e),
///     }
/// }
/// # drop(handle);
/// # Ok(()) }
/// ```
pub struct RingSet<K> {
    /// The rings; a ring's index here is its epoll token.
    slots: Vec<Option<Slot<K>>>,
    index: HashMap<K, usize>,
    /// Free indices of `slots`.
    free: Vec<usize>,
    /// The rings that may have records, in round-robin order: woken by the
    /// kernel, found non-empty, or swept in. A ring not here was published,
    /// fenced and found empty, so the kernel wakes it; or (napping) it holds
    /// a record back and is in `held`, looked at every round.
    queue: VecDeque<usize>,
    epoll: Epoll,
    events: Vec<libc::epoll_event>,
    shared: Arc<Shared>,
    budget: Budget,
    policy: WakePolicy,
    deadline: Option<Instant>,
    /// `Adaptive`: the current nap.
    nap: Duration,
    /// Numbers the naps, so a ring's first wakeup within one is recognised.
    nap_seq: u64,
    /// How late naps end, learnt (`Interval`, `Adaptive`).
    nap_timer: reader::NapTimer,
    /// A flush was taken from the handle and not yet reported.
    flush_seen: bool,
    /// Every ring was put in the round since the flush or deadline (and
    /// since the last sleep): the next empty round may report it.
    swept: bool,
    /// Backoff while only BUSY heads are left.
    busy_step: u32,
    totals: RingSetStats,
    /// Scratch for the ordered merge (kept to avoid allocating per round).
    heap: BinaryHeap<Reverse<(u64, usize)>>,
    order: Vec<usize>,
    /// The slot whose error the last call returned ([`RingSet::failed_key`]).
    failed: Option<usize>,
    /// Inside `poll` under a napping policy: a ring drained empty leaves
    /// the round with its last record held back (see `settle`).
    hold_round: bool,
    /// Rings that left the round holding a record back, each listed once
    /// (`Slot::listed`; an entry may be stale after a remove:
    /// [`release_held`](RingSet::release_held) checks).
    held: Vec<usize>,
    /// When every ring was last put in the round (`sweep`, napping policies
    /// only): see [`look_due`](RingSet::look_due).
    swept_at: Option<Instant>,
}

/// One ring of a set.
#[derive(Debug)]
struct Slot<K> {
    key: K,
    consumer: Consumer,
    /// In `queue`.
    queued: bool,
    /// The last check found the head record reserved, not committed.
    busy: bool,
    wakeups: u64,
    busy_stalls: u64,
    budget_exhausted: u64,
    /// The nap in which this ring last woke (`RingSet::nap_seq`).
    nap_woken: u64,
    /// Listed in `RingSet::held`.
    listed: bool,
    /// Records and payload bytes delivered in this ordered round.
    round_records: usize,
    round_bytes: usize,
}

/// What one round of [`RingSet::poll`] (or `try_consume`, `poll_ordered`)
/// did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RoundStats {
    /// Records delivered to the callback.
    pub records: usize,
    /// Payload bytes delivered.
    pub bytes: usize,
    /// Rings visited.
    pub rings: usize,
    /// Rings that used up their [`Budget`] (they have more, and are first
    /// in line for the next round).
    pub budget_exhausted: usize,
    /// The callback returned [`ControlFlow::Break`]: the round stopped after
    /// that record, which counts as delivered.
    pub interrupted: bool,
}

/// What a [`RingSet`] has done since it was created ([`RingSet::totals`]);
/// the counters of each ring are [`RingSet::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RingSetStats {
    /// Rounds run (including rounds that found nothing).
    pub rounds: u64,
    /// Times the set went to sleep (or napped) with no ring to read.
    pub sleeps: u64,
    /// Times a sleep ended with a wakeup from a ring's kernel.
    pub wakeups: u64,
    /// Times any ring used up its budget in a round.
    pub budget_exhausted: u64,
}

/// How the set's sleep ended.
#[derive(Debug, Default, Clone, Copy)]
struct Woke {
    /// Events taken.
    n: usize,
    /// A ring woke.
    ring: bool,
    /// A flush or close.
    event: bool,
    /// A nap must end: a ring woke a second time in it, or is filling.
    end_nap: bool,
}

impl<K> fmt::Debug for RingSet<K>
where
    K: fmt::Debug,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RingSet")
            .field("rings", &self.index.keys().collect::<Vec<_>>())
            .field("queued", &self.queue.len())
            .field("budget", &self.budget)
            .field("policy", &self.policy)
            .field("deadline", &self.deadline)
            .field("totals", &self.totals)
            .finish_non_exhaustive()
    }
}

impl<K> RingSet<K>
where
    K: Clone + Eq + Hash,
{
    /// The budget of each ring per round unless [`set_budget`](Self::set_budget)
    /// says otherwise: 1024 records or 256 KiB of payload.
    pub const DEFAULT_BUDGET: Budget = Budget {
        max_records: 1024,
        max_bytes: 256 << 10,
    };

    /// An empty set: one epoll instance and one eventfd.
    pub fn new() -> Result<RingSet<K>> {
        let shared = Shared::new()?;
        let epoll = Epoll::new()?;
        epoll.add(shared.event_fd(), libc::EPOLLIN as u32, TOKEN_EVENT)?;
        Ok(RingSet {
            slots: Vec::new(),
            index: HashMap::new(),
            free: Vec::new(),
            queue: VecDeque::new(),
            epoll,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS],
            shared,
            budget: Self::DEFAULT_BUDGET,
            policy: WakePolicy::Kernel,
            deadline: None,
            nap: reader::MIN_NAP,
            nap_seq: 0,
            nap_timer: reader::NapTimer::default(),
            flush_seen: false,
            swept: false,
            busy_step: 0,
            totals: RingSetStats::default(),
            heap: BinaryHeap::new(),
            order: Vec::new(),
            failed: None,
            hold_round: false,
            held: Vec::new(),
            swept_at: None,
        })
    }

    // ---- rings --------------------------------------------------------------

    /// Adds the ring buffer `map` under `key` (see [`Consumer::new`] for what
    /// is mapped, and its errors: among them [`Error::ConsumerExists`] if
    /// this process already consumes the map, in this set or elsewhere).
    /// A ring already under `key` is replaced and returned, committed.
    pub fn insert(&mut self, key: K, map: impl AsFd) -> Result<Option<Consumer>> {
        self.insert_consumer(key, Consumer::new(map)?)
    }

    /// Adds a [`Consumer`] under `key` (a kernel ring's, or a
    /// `testing::FakeRing`'s). It costs one descriptor, the consumer's own.
    /// A ring already under `key` is replaced and returned, committed.
    /// Errors: the `epoll_ctl` that registers it.
    pub fn insert_consumer(&mut self, key: K, consumer: Consumer) -> Result<Option<Consumer>> {
        let idx = match self.index.get(&key) {
            Some(&idx) => idx,
            None => self.free.last().copied().unwrap_or(self.slots.len()),
        };
        // Edge-triggered: the set learns of a ring's records through the
        // kernel's wakeups (and puts the ring in the round itself until it
        // is published, fenced and found empty). Registering polls the ring
        // at once, as a freshly added ring is in the round anyway.
        self.epoll.add(
            consumer.as_fd(),
            (libc::EPOLLIN | libc::EPOLLET) as u32,
            idx as u64,
        )?;
        let old = self.remove(&key);
        if self.free.last() == Some(&idx) {
            self.free.pop();
        }
        consumer.cursor().set_hold_last(napping(self.policy));
        let slot = Slot {
            key: key.clone(),
            consumer,
            queued: true,
            busy: false,
            wakeups: 0,
            busy_stalls: 0,
            budget_exhausted: 0,
            nap_woken: 0,
            listed: false,
            round_records: 0,
            round_bytes: 0,
        };
        if idx == self.slots.len() {
            self.slots.push(Some(slot));
        } else {
            self.slots[idx] = Some(slot);
        }
        self.index.insert(key, idx);
        self.queue.push_back(idx);
        Ok(old)
    }

    /// Adds the ring buffer stored at `outer_key` of a map of maps (a
    /// `BPF_MAP_TYPE_ARRAY_OF_MAPS`, whose keys are `u32` indices in native
    /// byte order, or a `BPF_MAP_TYPE_HASH_OF_MAPS`) under `key`: looks
    /// `outer_key` up (`BPF_MAP_LOOKUP_ELEM` returns the inner map's id),
    /// then opens the inner map by id (`BPF_MAP_GET_FD_BY_ID`), as
    /// [`insert`](Self::insert) would take it.
    ///
    /// Errors: [`Error::WrongMapType`] if `outer` is not a map of maps,
    /// [`Error::WrongMapLayout`] if `outer_key` is not the map's key size,
    /// the lookup's `ENOENT` (no map at that key) as [`Error::Syscall`], and
    /// those of [`insert`](Self::insert) (an inner map that is not a ring
    /// buffer is [`Error::WrongMapType`]).
    pub fn insert_inner(
        &mut self,
        key: K,
        outer: impl AsFd,
        outer_key: &[u8],
    ) -> Result<Option<Consumer>> {
        let inner = open_inner(outer.as_fd(), outer_key)?;
        self.insert(key, inner)
    }

    /// Removes the ring under `key` and returns its [`Consumer`], with
    /// everything delivered from it committed (a new consumer of the map
    /// starts after it). `None` if there is no such ring.
    pub fn remove(&mut self, key: &K) -> Option<Consumer> {
        let idx = self.index.remove(key)?;
        let mut slot = self.slots.get_mut(idx)?.take()?;
        // A registration lasts as long as the open file, and the caller may
        // hold another descriptor of the map: deregister explicitly. If this
        // failed, a stale wakeup could only put another ring that reuses the
        // slot into a round for nothing.
        let _ = self.epoll.delete(slot.consumer.as_fd());
        if slot.queued {
            self.queue.retain(|&i| i != idx);
        }
        if self.failed == Some(idx) {
            self.failed = None;
        }
        self.free.push(idx);
        slot.consumer.cursor().set_hold_last(false);
        slot.consumer.commit();
        Some(slot.consumer)
    }

    /// Whether a ring is under `key`.
    pub fn contains_key(&self, key: &K) -> bool {
        self.index.contains_key(key)
    }

    /// The number of rings.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the set has no ring.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The keys of the rings, in no particular order.
    pub fn keys(&self) -> impl Iterator<Item = &K> + '_ {
        self.index.keys()
    }

    /// The ring under `key`, for its positions and sizes.
    pub fn consumer(&self, key: &K) -> Option<&Consumer> {
        self.slot(key).map(|s| &s.consumer)
    }

    /// The key of the ring whose error the last `poll`, `try_consume`,
    /// `poll_ordered`, `try_consume_ordered` or `prepare_wait` returned (a
    /// corrupt header or producer position: [`Error::Corrupt`],
    /// [`Error::CorruptProducerPosition`]); `None` when that call succeeded
    /// or failed for the whole set ([`Error::Closed`], a deadline, an
    /// `epoll_wait` error). The ring stays in the set and reports the same
    /// error again: remove it to go on with the others.
    ///
    /// ```no_run
    /// # fn main() -> bpf_ringbuf::Result<()> {
    /// use bpf_ringbuf::{Error, RingSet};
    /// use std::ops::ControlFlow;
    ///
    /// let mut set: RingSet<u32> = RingSet::new()?;
    /// // ... insert rings ...
    /// loop {
    ///     match set.poll(|_cpu, _rec| ControlFlow::Continue(())) {
    ///         Ok(_) => {}
    ///         Err(e @ (Error::Corrupt { .. } | Error::CorruptProducerPosition { .. })) => {
    ///             let cpu = *set.failed_key().expect("a ring's error");
    ///             eprintln!("ring {cpu}: {e}; dropping it");
    ///             set.remove(&cpu);
    ///         }
    ///         Err(e) => return Err(e),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn failed_key(&self) -> Option<&K> {
        self.slots.get(self.failed?)?.as_ref().map(|s| &s.key)
    }

    fn slot(&self, key: &K) -> Option<&Slot<K>> {
        let idx = *self.index.get(key)?;
        self.slots.get(idx)?.as_ref()
    }

    // ---- settings and telemetry -----------------------------------------------

    /// Each ring's limit per round (default [`DEFAULT_BUDGET`](Self::DEFAULT_BUDGET)):
    /// a ring stops after this many records, or once this many payload bytes
    /// are delivered, and its next records wait for the next round.
    pub fn set_budget(&mut self, budget: Budget) {
        self.budget = budget;
    }

    /// The budget set by [`set_budget`](Self::set_budget).
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// How [`poll`](Self::poll) waits when no ring has records: see
    /// [`WakePolicy`] (default [`WakePolicy::Kernel`]). `Interval` and
    /// `Adaptive` nap, and look at every ring at the end of each nap.
    ///
    /// Under `Interval` and `Adaptive`, a ring that `poll` drains empty
    /// leaves the round with its last record held back (published when the
    /// ring is next read, removed, or the set is dropped), as a napping
    /// [`Reader`](crate::Reader) does: the kernel then sees the consumer
    /// behind and sends no default wakeups for a trickle of records, so the
    /// producer pays none. Every round of `poll` looks at the rings holding
    /// a record (one load of each one's producer position, cached while its
    /// producer is idle), so a held ring's next record is read in the next
    /// round, as a woken ring's is, also while another ring floods. Only
    /// records of up to 1/32 of the ring are held (a held record takes room
    /// from the producer). [`poll_ordered`](Self::poll_ordered) commits
    /// every ring it reads, so it holds nothing back.
    /// [`try_consume`](Self::try_consume) and
    /// [`prepare_wait`](Self::prepare_wait) hand every held record back
    /// first, so an external event loop's sleep is woken as usual.
    pub fn set_wake_policy(&mut self, policy: WakePolicy) {
        self.policy = policy;
        if let WakePolicy::Adaptive { max_latency } = policy {
            self.nap = reader::first_nap(max_latency);
        }
        let hold = napping(policy);
        for s in self.slots.iter().flatten() {
            s.consumer.cursor().set_hold_last(hold);
        }
    }

    /// The policy set by [`set_wake_policy`](Self::set_wake_policy).
    pub fn wake_policy(&self) -> WakePolicy {
        self.policy
    }

    /// The deadline of blocking polls, as [`Reader::set_deadline`](crate::Reader::set_deadline):
    /// `None` waits forever; a deadline in the past means "read what every
    /// ring holds now", then [`Error::DeadlineExceeded`].
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
        self.swept = false;
    }

    /// The deadline set by [`set_deadline`](Self::set_deadline).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// A handle to flush or close this set from any thread: the same
    /// [`ReaderHandle`] as a `Reader`'s, with the same meaning for the whole
    /// set.
    pub fn handle(&self) -> ReaderHandle {
        ReaderHandle {
            shared: self.shared.clone(),
        }
    }

    /// The counters of the ring under `key` (see [`Stats`]): its records,
    /// discards, commits and fill high-water mark; `wakeups` counts the
    /// kernel's wakeups of this ring, `busy_stalls` the times its head was
    /// found reserved and not committed. `sleeps` stays zero: the set
    /// sleeps, not the ring (see [`totals`](Self::totals)).
    pub fn stats(&self, key: &K) -> Option<Stats> {
        let s = self.slot(key)?;
        Some(Stats {
            wakeups: s.wakeups,
            busy_stalls: s.busy_stalls,
            ..s.consumer.stats()
        })
    }

    /// How many rounds the ring under `key` used up its budget in: a ring
    /// often exhausted is flooding (or its budget is too small).
    pub fn budget_exhausted(&self, key: &K) -> Option<u64> {
        self.slot(key).map(|s| s.budget_exhausted)
    }

    /// The set's own counters: rounds, sleeps, wakeups, budget exhaustions.
    pub fn totals(&self) -> RingSetStats {
        self.totals
    }

    // ---- reading --------------------------------------------------------------

    /// Waits until some ring has records, then runs one round: each ring in
    /// the round delivers its records to `f(key, record)`, at most one
    /// [`Budget`] each, round-robin, with one commit per ring. Returns what
    /// the round did (at least one record, unless `f` broke off at once).
    ///
    /// `f` returning [`ControlFlow::Break`] ends the round after that record,
    /// which counts as consumed. Call `poll` in a loop: a ring with more
    /// records than its budget continues in the next round. If `f` panics,
    /// its ring stays in the round, and the records delivered from that ring
    /// in that call since its last publish come again, as with
    /// [`Consumer::consume`].
    ///
    /// Errors, as a [`Reader`](crate::Reader)'s blocking reads: [`Error::Closed`]
    /// at once after close, even with records left; [`Error::Flushed`] once
    /// after a flush, when every ring has been read empty since;
    /// [`Error::DeadlineExceeded`] likewise once the deadline passed; a
    /// corrupt ring's error ([`failed_key`](Self::failed_key) names the
    /// ring, which stays in the set: remove it).
    pub fn poll<F>(&mut self, mut f: F) -> Result<RoundStats>
    where
        F: FnMut(&K, &[u8]) -> ControlFlow<()>,
    {
        self.failed = None;
        self.run(|set| set.round(&mut f))
    }

    /// One round over the rings that may have records, without sleeping:
    /// the rings the kernel woke since the last call, and those left with
    /// records. For event loops that sleep on [`AsFd`] themselves (see the
    /// [type docs](RingSet)); call [`prepare_wait`](Self::prepare_wait)
    /// before sleeping. Ignores the deadline and flush; [`Error::Closed`]
    /// after close.
    pub fn try_consume<F>(&mut self, mut f: F) -> Result<RoundStats>
    where
        F: FnMut(&K, &[u8]) -> ControlFlow<()>,
    {
        self.failed = None;
        // Set only inside `poll` (a callback that panicked may have left it).
        self.hold_round = false;
        self.check_closed()?;
        self.release_held()?;
        self.harvest()?;
        self.round(&mut f)
    }

    /// Prepares an external event loop's sleep on [`AsFd`]: publishes, fences
    /// and re-checks every ring still in the round ([`Consumer::prepare_wait`];
    /// the others were already). [`Readiness::Empty`]: sleep.
    /// [`Readiness::Ready`]: a ring has records, call
    /// [`try_consume`](Self::try_consume). [`Readiness::InProgress`]: a
    /// ring's next record is reserved, not committed; sleep with a short
    /// timeout (1 ms). [`Error::Closed`] after close.
    pub fn prepare_wait(&mut self) -> Result<Readiness> {
        self.failed = None;
        // Set only inside `poll` (a callback that panicked may have left it).
        self.hold_round = false;
        self.check_closed()?;
        self.release_held()?;
        self.harvest()?;
        let (mut ready, mut busy) = (false, false);
        for _ in 0..self.queue.len() {
            let Some(idx) = self.queue.pop_front() else {
                break;
            };
            match self.settle(idx)? {
                Readiness::Empty => {}
                Readiness::InProgress => busy = true,
                _ => ready = true,
            }
        }
        Ok(if ready {
            Readiness::Ready
        } else if busy {
            Readiness::InProgress
        } else {
            Readiness::Empty
        })
    }

    /// [`poll`](Self::poll) in **merged order**: waits until some ring has
    /// records, then delivers the records of every ring in the round in the
    /// order of `order(record)` (for example a `u64` timestamp at offset 0),
    /// smallest first, ties in slot order. Each ring's head is peeked in
    /// place; nothing is copied. One commit per ring per round.
    ///
    /// The guarantee: **the records present when the round started are
    /// delivered ordered among themselves**, provided each ring's records
    /// are in order within the ring (as per-CPU rings written with
    /// `bpf_ktime_get_ns()` are). A record committed later on some ring may
    /// carry a smaller key than one already delivered; a round does not
    /// wait for it. A reserved, uncommitted record ends its ring's part of
    /// the round (what follows it is delivered in a later round). The round
    /// ends when a ring uses up its [`Budget`] (every ring's next record
    /// waits for the next round, so the order holds up to there).
    pub fn poll_ordered<O, F>(&mut self, mut order: O, mut f: F) -> Result<RoundStats>
    where
        O: FnMut(&[u8]) -> u64,
        F: FnMut(&K, &[u8]) -> ControlFlow<()>,
    {
        self.failed = None;
        self.run(|set| set.round_ordered(&mut order, &mut f))
    }

    /// [`poll_ordered`](Self::poll_ordered) without sleeping, as
    /// [`try_consume`](Self::try_consume) is to `poll`.
    pub fn try_consume_ordered<O, F>(&mut self, mut order: O, mut f: F) -> Result<RoundStats>
    where
        O: FnMut(&[u8]) -> u64,
        F: FnMut(&K, &[u8]) -> ControlFlow<()>,
    {
        self.failed = None;
        // Set only inside `poll` (a callback that panicked may have left it).
        self.hold_round = false;
        self.check_closed()?;
        self.release_held()?;
        self.harvest()?;
        self.round_ordered(&mut order, &mut f)
    }

    // ---- internals ------------------------------------------------------------

    fn check_closed(&self) -> Result<()> {
        if self.shared.is_closed() {
            return Err(Error::Closed);
        }
        Ok(())
    }

    /// The blocking loop of `poll` and `poll_ordered`: rounds until one
    /// delivers, sleeping as the policy says when no ring has records.
    fn run<R>(&mut self, mut round: R) -> Result<RoundStats>
    where
        R: FnMut(&mut Self) -> Result<RoundStats>,
    {
        self.check_closed()?;
        self.hold_round = napping(self.policy);
        if !self.hold_round {
            // Records held back under a napping policy set before: a
            // sleep on the kernel's wakeups needs them handed back.
            self.release_held()?;
        }
        let res = self.run_loop(&mut round);
        self.hold_round = false;
        res
    }

    fn run_loop<R>(&mut self, round: &mut R) -> Result<RoundStats>
    where
        R: FnMut(&mut Self) -> Result<RoundStats>,
    {
        loop {
            self.check_closed()?;
            if self.hold_round {
                // Held rings get no default wakeups: a nap's end looks at
                // them, but a poll that keeps delivering (another ring
                // floods) never naps. So every round looks at them first,
                // and, less often, at every ring (for records committed
                // with BPF_RB_NO_WAKEUP, which no nap's end finds then).
                if self.look_due() {
                    self.sweep();
                } else {
                    self.requeue_held();
                }
            }
            self.harvest()?;
            let st = round(self)?;
            if st.records > 0 || st.interrupted {
                self.busy_step = 0;
                return Ok(st);
            }
            if self.any_queued(|s| !s.busy) {
                // A ring filled up between its drain and its re-check.
                continue;
            }
            if self.check_stop()? {
                // Every ring was put in the round: look again before
                // reporting the flush or deadline.
                continue;
            }
            if self.any_queued(|_| true) {
                // Only reserved, uncommitted heads are left: back off as a
                // Reader does, with every ring in the round published (their
                // commits wake us unless made with BPF_RB_NO_WAKEUP).
                if let Some(nap) = wait::busy_backoff(&mut self.busy_step) {
                    let until = earliest(Instant::now().checked_add(nap), self.deadline);
                    self.sleep(until, None)?;
                    self.swept = false;
                }
                continue;
            }
            self.busy_step = 0;
            match self.policy {
                WakePolicy::Kernel => {
                    // As a Reader: caught up, sleep at once (see
                    // `Reader::refill` for the yield that was measured and
                    // removed).
                    self.totals.sleeps += 1;
                    let woke = self.sleep(self.deadline, None)?;
                    if woke.ring {
                        self.totals.wakeups += 1;
                    }
                }
                WakePolicy::Interval(d) => self.nap(d)?,
                WakePolicy::Adaptive { max_latency } => {
                    let d = self.nap;
                    self.nap(d)?;
                    let (mut filling, mut empty) = (false, true);
                    for s in self.slots.iter().flatten() {
                        let avail = s.consumer.available_bytes();
                        filling |= reader::fills(avail, s.consumer.buffer_size());
                        empty &= reader::unread(&s.consumer) == 0;
                    }
                    self.nap = reader::adapt_nap(d, max_latency, filling, empty);
                }
            }
            self.swept = false;
        }
    }

    /// Closed, flushed, deadline passed, in the documented order; before
    /// reporting a flush or deadline every ring is put in the round once
    /// (`Ok(true)`: look again), so that the records present are returned
    /// first, those committed without a wakeup included.
    fn check_stop(&mut self) -> Result<bool> {
        self.check_closed()?;
        if self.shared.take_flush() {
            self.flush_seen = true;
            self.swept = false;
        }
        let late = self.deadline.is_some_and(|d| Instant::now() >= d);
        if !self.flush_seen && !late {
            return Ok(false);
        }
        if !self.swept {
            self.sweep();
            self.swept = true;
            return Ok(true);
        }
        self.swept = false;
        if self.flush_seen {
            self.flush_seen = false;
            return Err(Error::Flushed);
        }
        Err(Error::DeadlineExceeded)
    }

    /// Puts every ring in the round (so none is left holding out of it).
    fn sweep(&mut self) {
        self.held.clear();
        if self.hold_round {
            self.swept_at = Some(Instant::now());
        }
        for (idx, slot) in self.slots.iter_mut().enumerate() {
            if let Some(s) = slot {
                s.listed = false;
                if !s.queued {
                    s.queued = true;
                    self.queue.push_back(idx);
                }
            }
        }
    }

    /// Under a napping policy: every ring should be looked at again, as a
    /// nap's end would, because a nap's length has passed since the last
    /// sweep, and at least [`FLOOD_SWEEP`] (so that a poll that never naps,
    /// another ring flooding, spends a bounded share of its time on the idle
    /// rings however short the nap). Never with a nap too long to add.
    fn look_due(&self) -> bool {
        let nap = match self.policy {
            WakePolicy::Interval(d) => d,
            WakePolicy::Adaptive { .. } => self.nap,
            _ => return false,
        };
        match self.swept_at {
            None => true,
            Some(at) => at
                .checked_add(nap.max(FLOOD_SWEEP))
                .is_some_and(|due| Instant::now() >= due),
        }
    }

    /// Puts the held rings with new records (or a reserved head) back in
    /// the round: one load of each one's producer position, which stays in
    /// this CPU's cache while its producer is idle. Entries of rings no
    /// longer holding (or gone) are dropped.
    fn requeue_held(&mut self) {
        let mut i = 0;
        while i < self.held.len() {
            let idx = self.held[i];
            let Some(Some(slot)) = self.slots.get_mut(idx) else {
                self.held.swap_remove(i);
                continue;
            };
            if slot.queued || !slot.consumer.cursor().is_holding() {
                slot.listed = false;
                self.held.swap_remove(i);
                continue;
            }
            if reader::unread(&slot.consumer) != 0 {
                slot.listed = false;
                slot.queued = true;
                self.queue.push_back(idx);
                self.held.swap_remove(i);
                continue;
            }
            i += 1;
        }
    }

    fn any_queued(&self, pred: impl Fn(&Slot<K>) -> bool) -> bool {
        self.queue
            .iter()
            .any(|&i| self.slots[i].as_ref().is_some_and(&pred))
    }

    /// Naps up to `d` (and the deadline), as a `Reader` does: a ring's first
    /// wakeup in the nap is slept through unless the ring is a quarter full;
    /// a second one (forced by its producer), a flush or a close ends it.
    /// Then every ring is put in the round (records committed without a
    /// wakeup, and those whose wakeup was slept through).
    fn nap(&mut self, d: Duration) -> Result<()> {
        let until = earliest(self.nap_timer.until(Instant::now(), d), self.deadline);
        self.nap_seq += 1;
        self.totals.sleeps += 1;
        loop {
            let woke = self.sleep(until, Some(self.nap_seq))?;
            if woke.ring {
                self.totals.wakeups += 1;
            }
            if woke.event || woke.end_nap {
                break;
            }
            if let Some(u) = until {
                let now = Instant::now();
                if now >= u {
                    self.nap_timer.ended(u, now);
                    break;
                }
            }
        }
        self.sweep();
        Ok(())
    }

    /// Sleeps on the epoll instance until `until` (`None`: until an event).
    fn sleep(&mut self, until: Option<Instant>, nap: Option<u64>) -> Result<Woke> {
        let timeout = until.map(|d| d.saturating_duration_since(Instant::now()));
        self.take_events(timeout, nap)
    }

    /// Takes the events pending now, without sleeping: the rings the kernel
    /// woke join the round.
    fn harvest(&mut self) -> Result<()> {
        while self.take_events(Some(Duration::ZERO), None)?.n == self.events.len() {}
        Ok(())
    }

    /// One `epoll_wait`: woken rings join the round; the eventfd is reset.
    fn take_events(&mut self, timeout: Option<Duration>, nap: Option<u64>) -> Result<Woke> {
        let n = self.epoll.wait(&mut self.events, timeout)?;
        let mut woke = Woke {
            n,
            ..Woke::default()
        };
        for i in 0..n {
            let token = self.events[i].u64;
            if token == TOKEN_EVENT {
                // Level-triggered: reset it; the caller checks the flags.
                self.shared.drain_event();
                woke.event = true;
                continue;
            }
            // A stale token (a ring removed meanwhile) finds no slot, or
            // puts the slot's new ring in the round for nothing.
            let idx = token as usize;
            let Some(Some(s)) = self.slots.get_mut(idx) else {
                continue;
            };
            woke.ring = true;
            s.wakeups += 1;
            if let Some(seq) = nap {
                let filling = reader::is_filling(&s.consumer);
                if s.nap_woken == seq || filling {
                    woke.end_nap = true;
                }
                s.nap_woken = seq;
            }
            if !s.queued {
                s.queued = true;
                self.queue.push_back(idx);
            }
        }
        Ok(woke)
    }

    /// Hands back the records held back by rings out of the round (see
    /// [`set_wake_policy`](Self::set_wake_policy)): publish, fence,
    /// re-check, as `settle` does without a hold; a ring with records goes
    /// back in the round.
    fn release_held(&mut self) -> Result<()> {
        while let Some(idx) = self.held.pop() {
            let Some(Some(slot)) = self.slots.get_mut(idx) else {
                continue;
            };
            slot.listed = false;
            if slot.queued || !slot.consumer.cursor().is_holding() {
                continue;
            }
            match slot.consumer.prepare_wait() {
                Ok(Readiness::Empty) => {}
                Ok(_) => {
                    slot.queued = true;
                    self.queue.push_back(idx);
                }
                Err(e) => {
                    slot.queued = true;
                    self.queue.push_back(idx);
                    self.failed = Some(idx);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// The ring at `idx` (just taken off the front of the round) is drained
    /// or stopped at a BUSY head: publish, fence, re-check. Empty: it leaves
    /// the round (its next record wakes us). Otherwise it goes to the back.
    fn settle(&mut self, idx: usize) -> Result<Readiness> {
        let slot = self.slots[idx]
            .as_mut()
            .expect("a ring in the round is live");
        if self.hold_round && slot.consumer.cursor().is_holding() {
            // Drained empty by a napping `poll`, its last record held back:
            // look without publishing (no fence either: the kernel would
            // not wake us for this ring anyway). Every later round looks
            // at it (`requeue_held`), and so does the nap's end.
            let cur = slot.consumer.cursor();
            match cur.reload() {
                Err(c) => {
                    self.queue.push_back(idx);
                    self.failed = Some(idx);
                    return Err(c.into());
                }
                Ok(false) => {
                    slot.queued = false;
                    slot.busy = false;
                    if !slot.listed {
                        slot.listed = true;
                        self.held.push(idx);
                    }
                    return Ok(Readiness::Empty);
                }
                Ok(true) => {
                    let busy = matches!(cur.head(), Some(Peek::Busy));
                    if busy && !slot.busy {
                        slot.busy_stalls += 1;
                    }
                    slot.busy = busy;
                    self.queue.push_back(idx);
                    return Ok(if busy {
                        Readiness::InProgress
                    } else {
                        Readiness::Ready
                    });
                }
            }
        }
        let r = match slot.consumer.prepare_wait() {
            Ok(r) => r,
            Err(e) => {
                self.queue.push_back(idx);
                self.failed = Some(idx);
                return Err(e);
            }
        };
        match r {
            Readiness::Empty => {
                slot.queued = false;
                slot.busy = false;
                return Ok(r);
            }
            Readiness::InProgress => {
                if !slot.busy {
                    slot.busy = true;
                    slot.busy_stalls += 1;
                }
            }
            _ => slot.busy = false,
        }
        self.queue.push_back(idx);
        Ok(r)
    }

    /// One round-robin round over the rings in the round, each with its budget.
    fn round<F>(&mut self, f: &mut F) -> Result<RoundStats>
    where
        F: FnMut(&K, &[u8]) -> ControlFlow<()>,
    {
        self.totals.rounds += 1;
        let mut st = RoundStats::default();
        for _ in 0..self.queue.len() {
            // Close is checked per ring: it stops a round at once.
            self.check_closed()?;
            // Taken off the round only once its drain returned: a callback
            // that panics leaves the ring at the front, still in the round.
            let Some(&idx) = self.queue.front() else {
                break;
            };
            let budget = self.budget;
            let slot = self.slots[idx]
                .as_mut()
                .expect("a ring in the round is live");
            let key = &slot.key;
            let c = slot.consumer.consume_with_budget(budget, |rec| f(key, rec));
            self.queue.pop_front();
            let c = match c {
                Ok(c) => c,
                Err(e) => {
                    // Corrupt: the ring stays, and reports it again.
                    self.queue.push_back(idx);
                    self.failed = Some(idx);
                    return Err(e);
                }
            };
            st.rings += 1;
            st.records += c.records;
            st.bytes += c.bytes;
            if c.records > 0 {
                slot.busy = false;
            }
            match c.stop {
                StopReason::Budget => {
                    slot.budget_exhausted += 1;
                    self.totals.budget_exhausted += 1;
                    st.budget_exhausted += 1;
                    self.queue.push_back(idx);
                }
                StopReason::Callback => {
                    self.queue.push_back(idx);
                    st.interrupted = true;
                    return Ok(st);
                }
                _ => {
                    self.settle(idx)?;
                }
            }
        }
        Ok(st)
    }

    /// One merged round: snapshot every ring in the round, then deliver
    /// the smallest head until the rings are drained up to their snapshots,
    /// a budget is used up, or `f` breaks off; then one commit per ring.
    fn round_ordered<O, F>(&mut self, order: &mut O, f: &mut F) -> Result<RoundStats>
    where
        O: FnMut(&[u8]) -> u64,
        F: FnMut(&K, &[u8]) -> ControlFlow<()>,
    {
        self.totals.rounds += 1;
        let mut st = RoundStats::default();
        let mut rings = std::mem::take(&mut self.order);
        let mut heap = std::mem::take(&mut self.heap);
        rings.clear();
        heap.clear();
        rings.extend(self.queue.iter().copied());
        let res = self.merge(&rings, &mut heap, order, f, &mut st);
        // One commit per ring per round, whatever ended it.
        for &idx in &rings {
            if let Some(s) = self.slots[idx].as_mut() {
                s.consumer.commit();
            }
        }
        let whole = matches!(res, Ok(true));
        self.order = rings;
        self.heap = heap;
        res?;
        st.rings = self.order.len();
        if whole {
            // Every ring is at its snapshot's end or at a BUSY head.
            for _ in 0..self.queue.len() {
                let Some(idx) = self.queue.pop_front() else {
                    break;
                };
                self.settle(idx)?;
            }
        }
        Ok(st)
    }

    /// The merge of [`round_ordered`](Self::round_ordered): `Ok(true)` if
    /// every ring was drained up to its snapshot (or a BUSY head).
    fn merge<O, F>(
        &mut self,
        rings: &[usize],
        heap: &mut BinaryHeap<Reverse<(u64, usize)>>,
        order: &mut O,
        f: &mut F,
        st: &mut RoundStats,
    ) -> Result<bool>
    where
        O: FnMut(&[u8]) -> u64,
        F: FnMut(&K, &[u8]) -> ControlFlow<()>,
    {
        for &idx in rings {
            let s = self.slots[idx]
                .as_mut()
                .expect("a ring in the round is live");
            s.round_records = 0;
            s.round_bytes = 0;
            let head = s.consumer.snapshot().and_then(|()| s.consumer.peek_head());
            match head {
                Ok(Some(rec)) => heap.push(Reverse((order(rec), idx))),
                Ok(None) => {}
                Err(e) => {
                    self.failed = Some(idx);
                    return Err(e);
                }
            }
        }
        let budget = self.budget;
        while let Some(Reverse((_, idx))) = heap.pop() {
            self.check_closed()?;
            let s = self.slots[idx]
                .as_mut()
                .expect("a ring in the round is live");
            let rec = s.consumer.take_head().expect("the head was peeked");
            s.round_records += 1;
            s.round_bytes += rec.len();
            st.records += 1;
            st.bytes += rec.len();
            s.busy = false;
            if f(&s.key, rec).is_break() {
                st.interrupted = true;
                return Ok(false);
            }
            if s.round_records >= budget.max_records || s.round_bytes >= budget.max_bytes {
                s.budget_exhausted += 1;
                self.totals.budget_exhausted += 1;
                st.budget_exhausted += 1;
                return Ok(false);
            }
            match s.consumer.peek_head() {
                Ok(Some(rec)) => heap.push(Reverse((order(rec), idx))),
                Ok(None) => {}
                Err(e) => {
                    self.failed = Some(idx);
                    return Err(e);
                }
            }
        }
        Ok(true)
    }
}

impl<K> AsFd for RingSet<K> {
    /// The epoll instance: readable when a ring was woken, or on flush and
    /// close. See the [`RingSet`] docs for the loop around it.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }
}

/// Opens the inner map at `key` of a map of maps.
fn open_inner(outer: BorrowedFd<'_>, key: &[u8]) -> Result<std::os::fd::OwnedFd> {
    let info = bpf::map_info(outer)?;
    if !matches!(
        info.map_type,
        bpf::BPF_MAP_TYPE_ARRAY_OF_MAPS | bpf::BPF_MAP_TYPE_HASH_OF_MAPS
    ) {
        return Err(Error::WrongMapType {
            found: info.map_type,
            found_name: bpf::map_type_name(info.map_type),
            expected: bpf::BPF_MAP_TYPE_ARRAY_OF_MAPS,
            expected_name: bpf::map_type_name(bpf::BPF_MAP_TYPE_ARRAY_OF_MAPS),
        });
    }
    // The kernel copies `key_size` bytes from the key and `value_size` into
    // the value: both buffers must be exactly that long.
    if key.len() != info.key_size as usize {
        return Err(Error::WrongMapLayout {
            map_id: info.id,
            layout: "a map of maps looked up with this key",
            reason: format!(
                "its key size is {}, the key given has {} bytes",
                info.key_size,
                key.len()
            ),
        });
    }
    if info.value_size != 4 {
        return Err(Error::WrongMapLayout {
            map_id: info.id,
            layout: "a map of maps",
            reason: format!("value size {}, expected 4 (a map id)", info.value_size),
        });
    }
    let mut id = [0u8; 4];
    bpf::map_lookup(outer, key, &mut id)?;
    bpf::map_get_fd_by_id(u32::from_ne_bytes(id), 0)
}

/// The shortest time between two looks at every ring of a napping set that
/// does not nap (see `RingSet::look_due`): a look costs each idle ring a
/// load, a store and a fence (tens of ns), so at this period it costs a
/// set of 256 rings about 1 % of its time.
const FLOOD_SWEEP: Duration = Duration::from_millis(1);

/// Whether `policy` naps (and so holds each drained ring's last record back).
fn napping(policy: WakePolicy) -> bool {
    !matches!(policy, WakePolicy::Kernel)
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;
    use crate::testing::{FakeRing, Wakeup};

    /// A ring that holds a record back is listed once however often it is
    /// drained: forced wakeups put it back in the round at every record,
    /// and polls that always deliver never nap (whose sweep clears the list).
    #[test]
    fn a_ring_holding_back_is_listed_once() {
        let ring = FakeRing::new(crate::page_size()).unwrap();
        let mut set = RingSet::new().unwrap();
        set.insert_consumer(0u8, ring.consumer().unwrap()).unwrap();
        set.set_wake_policy(WakePolicy::Interval(Duration::from_secs(3600)));
        set.set_deadline(Some(Instant::now() + Duration::from_secs(60)));
        for i in 0..1000u64 {
            ring.output(&i.to_le_bytes(), Wakeup::ForceWakeup).unwrap();
            let mut got = None;
            let st = set
                .poll(|_, rec| {
                    got = Some(u64::from_le_bytes(rec.try_into().unwrap()));
                    ControlFlow::Continue(())
                })
                .unwrap();
            assert_eq!((st.records, got), (1, Some(i)));
            assert!(set.held.len() <= 1, "{} entries", set.held.len());
        }
        assert_eq!(set.held, vec![0]);
    }
}
