//! [`UserRingBuf`]: the other direction. Userspace produces samples into a
//! `BPF_MAP_TYPE_USER_RINGBUF`; a BPF program drains them with
//! `bpf_user_ringbuf_drain()`.
//!
//! The reserve and commit steps are the ring layer's
//! ([`crate::ring::producer::UserProducer`], the same protocol code the fake
//! rings and unit tests run); this module adds the map (type checks,
//! mappings, one producer per map), errors, telemetry and waiting.

use std::cell::{Cell, OnceCell};
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::claim::{Claim, Key};
use crate::error::{Error, Result};
use crate::map::{check_map, check_size};
use crate::ring::abi::record_stride;
pub use crate::ring::producer::Sample;
use crate::ring::producer::{ReserveError, UserProducer};
use crate::sys::{self, bpf, mmap};
use crate::wait::{check_stop, Shared, Waiter};

/// The producer of a `BPF_MAP_TYPE_USER_RINGBUF` map: userspace reserves
/// samples, fills them in place and submits them; a BPF program drains them
/// with `bpf_user_ringbuf_drain()` (libbpf's `user_ring_buffer__*`, in Rust).
///
/// * **One reserving thread.** `UserRingBuf` is `Send` but not `Sync`: the
///   kernel's protocol allows one producer to reserve at a time, and the
///   type system enforces it, with no lock. Within a process, a map has one
///   live producer ([`Error::ProducerExists`]); another process producing
///   into the same map cannot be detected and must be avoided.
/// * **Several samples at once.** [`reserve`](Self::reserve) takes `&self`:
///   samples may be outstanding together and submitted in any order. The
///   kernel's drain stops at the first one not yet submitted (as our own
///   reader does), so one held sample holds back the ones after it.
/// * **Samples borrow their producer**: a [`Sample`] cannot outlive it, and
///   cannot be submitted to another ring.
/// * **Two size errors.** [`Error::SampleTooLarge`]: this ring can never hold
///   the sample (its record, 8-byte header included, is larger than the
///   ring, or the sample than a dynptr can describe). [`Error::RingFull`]:
///   not enough room now, retry once the kernel drains.
/// * **Waiting** ([`reserve_blocking`](Self::reserve_blocking)) sleeps on
///   `EPOLLOUT` of the map: the kernel wakes it after a drain that consumed
///   samples, unless the program drained with `BPF_RB_NO_WAKEUP` (then only
///   the deadline ends the wait). [`ProducerHandle::close`] wakes it from
///   another thread.
///
/// The mapping follows the kernel's rules for user rings: the consumer page
/// read-only, the producer page and data read-write.
///
/// ```no_run
/// # fn main() -> bpf_ringbuf::Result<()> {
/// use bpf_ringbuf::UserRingBuf;
///
/// // Or UserRingBuf::open_pinned / from_id / new(&map) for your loader's map.
/// let ring = UserRingBuf::create(1 << 20)?;
/// let mut sample = ring.reserve(16)?;
/// sample[..8].copy_from_slice(&42u64.to_le_bytes());
/// sample[8..].fill(0);
/// sample.submit(); // the BPF program sees it at its next drain
/// # Ok(()) }
/// ```
pub struct UserRingBuf {
    /// Declared first: dropped (unmapping the ring) before `fd` closes.
    producer: UserProducer,
    /// The map (or, for a fake ring, the eventfd its drain writes).
    fd: OwnedFd,
    /// What `fd` reports when a drain made room.
    wake_events: u32,
    size: usize,
    /// The map's id (`None` for a fake ring).
    id: Option<u32>,
    shared: Arc<Shared>,
    /// Made at the first wait.
    waiter: OnceCell<Waiter>,
    stats: Counters,
    _claim: Claim,
}

/// The waiting telemetry (what samples became is counted by the
/// producer itself): plain cells, since one thread uses it.
#[derive(Debug, Default)]
struct Counters {
    full_waits: Cell<u64>,
    failed_reserves: Cell<u64>,
}

fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

/// What a [`UserRingBuf`] did since it was opened ([`UserRingBuf::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProducerStats {
    /// Samples submitted.
    pub samples: u64,
    /// Payload bytes of the samples submitted.
    pub bytes: u64,
    /// Samples discarded ([`Sample::discard`], or dropped unsubmitted).
    pub discarded: u64,
    /// Sleeps of a blocking or async reserve waiting for the kernel to drain
    /// a full ring.
    pub full_waits: u64,
    /// Reservations refused for lack of room ([`Error::RingFull`]), including
    /// the attempts a blocking or async reserve retried.
    pub failed_reserves: u64,
}

impl fmt::Debug for UserRingBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRingBuf")
            .field("fd", &self.fd)
            .field("size", &self.size)
            .field("id", &self.id)
            .field("producer_pos", &self.producer.position())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl UserRingBuf {
    /// `bpf(BPF_MAP_CREATE)`: creates a user ring buffer of `size` data
    /// bytes and opens its producer. `size` must be a power of two and a
    /// multiple of the page size ([`Error::BadSize`] names the nearest one;
    /// [`RingBuf::round_up_size`](crate::RingBuf::round_up_size) computes it).
    pub fn create(size: usize) -> Result<UserRingBuf> {
        UserRingBuf::create_named(size, "bpf_user_ring")
    }

    /// Like [`create`](Self::create), with a map name (at most 15 characters
    /// of `[A-Za-z0-9_]` are kept).
    pub fn create_named(size: usize, name: &str) -> Result<UserRingBuf> {
        check_size(size)?;
        let fd = bpf::map_create(bpf::BPF_MAP_TYPE_USER_RINGBUF, 0, 0, size as u32, name)?;
        UserRingBuf::from_fd(fd)
    }

    /// `bpf(BPF_OBJ_GET)`: opens the producer of a user ring buffer pinned
    /// at `path` in a bpffs. A missing pin is [`Error::PinNotFound`].
    pub fn open_pinned(path: impl AsRef<Path>) -> Result<UserRingBuf> {
        UserRingBuf::from_fd(bpf::obj_get_pinned(path.as_ref())?)
    }

    /// `bpf(BPF_MAP_GET_FD_BY_ID)`: opens the producer of a user ring buffer
    /// by its map id.
    pub fn from_id(id: u32) -> Result<UserRingBuf> {
        UserRingBuf::from_fd(bpf::map_get_fd_by_id(id, 0)?)
    }

    /// Opens the producer of any user ring buffer map the caller has a
    /// descriptor of (an aya or libbpf-rs map, a `BorrowedFd`): the
    /// descriptor is duplicated.
    pub fn new(map: impl AsFd) -> Result<UserRingBuf> {
        let map = map.as_fd();
        // Check before duplicating, so a bad descriptor is named as given.
        check_map(map, bpf::BPF_MAP_TYPE_USER_RINGBUF)?;
        UserRingBuf::from_fd(sys::dup(map)?)
    }

    /// Adopts a descriptor: checks that it is a `BPF_MAP_TYPE_USER_RINGBUF`
    /// map (a `BPF_MAP_TYPE_RINGBUF`, or anything else, is
    /// [`Error::WrongMapType`]; not a map, [`Error::NotAMap`] or
    /// [`Error::BadFd`]), reads its size from the kernel, claims it
    /// ([`Error::ProducerExists`] if this process already produces into it)
    /// and maps it ([`Error::ReadOnlyMap`] for a read-only descriptor). On
    /// error the descriptor is closed.
    pub fn from_fd(fd: OwnedFd) -> Result<UserRingBuf> {
        let m = check_map(fd.as_fd(), bpf::BPF_MAP_TYPE_USER_RINGBUF)?;
        let claim = Claim::take(Key::Producer(m.id))?;
        let (consumer, producer) = mmap::map_user_ring(fd.as_fd(), m.size)?;
        let producer = UserProducer::from_kernel_mappings(consumer, producer, m.size);
        UserRingBuf::from_parts(producer, fd, libc::EPOLLOUT as u32, Some(m.id), claim)
    }

    /// A producer over a fake user ring (`testing::FakeUserRing`): `fd` is
    /// the eventfd its drain writes.
    #[cfg(feature = "testing")]
    pub(crate) fn from_fake(
        producer: UserProducer,
        fd: OwnedFd,
        claim: Claim,
    ) -> Result<UserRingBuf> {
        UserRingBuf::from_parts(producer, fd, libc::EPOLLIN as u32, None, claim)
    }

    fn from_parts(
        producer: UserProducer,
        fd: OwnedFd,
        events: u32,
        id: Option<u32>,
        claim: Claim,
    ) -> Result<UserRingBuf> {
        Ok(UserRingBuf {
            size: producer.ring().size(),
            producer,
            fd,
            // Edge-triggered: see `wait_for_room`.
            wake_events: events | libc::EPOLLET as u32,
            id,
            shared: Shared::new()?,
            waiter: OnceCell::new(),
            stats: Counters::default(),
            _claim: claim,
        })
    }

    /// `bpf(BPF_OBJ_PIN)`: pins the map at `path`, inside a mounted bpffs.
    pub fn pin(&self, path: impl AsRef<Path>) -> Result<()> {
        bpf::obj_pin(self.fd.as_fd(), path.as_ref())
    }

    /// The data size in bytes (`max_entries`).
    pub fn size(&self) -> usize {
        self.size
    }

    /// The kernel's id of the map (`None` for a fake ring).
    pub fn id(&self) -> Option<u32> {
        self.id
    }

    /// The largest sample this ring can ever hold: the ring size minus the
    /// 8-byte header, and at most
    /// [`abi::USER_RINGBUF_MAX_SAMPLE`](crate::abi::USER_RINGBUF_MAX_SAMPLE)
    /// (16 MiB - 1, what a dynptr describes). Anything larger is
    /// [`Error::SampleTooLarge`].
    pub fn max_sample(&self) -> usize {
        UserProducer::max_sample(self.size)
    }

    /// The ring bytes free now (`size - (producer_pos - consumer_pos)`): a
    /// sample of `n` bytes needs `round_up(n + 8, 8)` of them.
    pub fn available(&self) -> Result<usize> {
        self.producer.free().map_err(|e| self.error(e, 0))
    }

    /// A handle that closes this producer from another thread.
    pub fn handle(&self) -> ProducerHandle {
        ProducerHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The counters since this producer was opened.
    pub fn stats(&self) -> ProducerStats {
        let c = &self.stats;
        let s = self.producer.counters();
        ProducerStats {
            samples: s.samples.get(),
            bytes: s.bytes.get(),
            discarded: s.discarded.get(),
            full_waits: c.full_waits.get(),
            failed_reserves: c.failed_reserves.get(),
        }
    }

    /// Reserves a sample of `len` bytes (0 is allowed: the program gets an
    /// empty dynptr), without waiting. Fill it through `DerefMut` (its bytes
    /// start as whatever the ring held there: write all of them), then
    /// [`submit`](Sample::submit) it; dropping it discards it.
    ///
    /// Errors: [`Error::SampleTooLarge`] if the ring can never hold it
    /// ([`max_sample`](Self::max_sample)), [`Error::RingFull`] if there is
    /// no room now (retryable), [`Error::Closed`] after
    /// [`ProducerHandle::close`], [`Error::CorruptProducerPosition`] if the
    /// consumer position the kernel published is impossible (another
    /// producer wrote this map).
    ///
    /// ```no_run
    /// # fn main() -> bpf_ringbuf::Result<()> {
    /// use bpf_ringbuf::{Error, UserRingBuf};
    /// let ring = UserRingBuf::create(4096)?;
    /// assert!(matches!(ring.reserve(8192), Err(Error::SampleTooLarge { max: 4088, .. })));
    /// let first = ring.reserve(100)?;
    /// let second = ring.reserve(100)?; // two outstanding samples
    /// second.submit(); // in any order; the kernel drains both once `first` is done
    /// drop(first); // discarded: the program never sees it
    /// # Ok(()) }
    /// ```
    #[inline(always)]
    pub fn reserve(&self, len: usize) -> Result<Sample<'_>> {
        if self.shared.is_closed() {
            return Err(Error::Closed);
        }
        match self.producer.reserve(len) {
            Ok(s) => Ok(s),
            Err(e) => Err(self.error(e, len)),
        }
    }

    /// Like [`reserve`](Self::reserve), waiting while the ring is full:
    /// until the kernel's drain makes room (it wakes `EPOLLOUT` waiters
    /// after a drain that consumed samples), `deadline` passes
    /// ([`Error::DeadlineExceeded`]; `None` waits for ever), or the producer
    /// is closed from another thread ([`Error::Closed`]).
    ///
    /// A program that drains with `BPF_RB_NO_WAKEUP` wakes nobody: use a
    /// deadline then. A sample the ring can never hold is
    /// [`Error::SampleTooLarge`] at once.
    pub fn reserve_blocking(&self, len: usize, deadline: Option<Instant>) -> Result<Sample<'_>> {
        let mut waited = false;
        loop {
            match self.reserve(len) {
                Err(Error::RingFull { .. }) => {}
                other => return other,
            }
            check_stop(&self.shared, deadline)?;
            if !waited {
                bump(&self.stats.full_waits, 1);
                waited = true;
            }
            self.wait_for_room(deadline)?;
        }
    }

    /// Sleeps until a drain may have made room, a close, or the deadline.
    ///
    /// The ring's descriptor is watched edge-triggered, from the first wait
    /// on: a wakeup after the failed reservation is never lost (it is queued
    /// whether or not we sleep yet, and the registration itself reports the
    /// room there is then), and a ring with some room, but not enough, does
    /// not keep `epoll_wait` returning (the kernel reports `EPOLLOUT` while
    /// the ring is not completely full). Spurious returns just retry.
    fn wait_for_room(&self, deadline: Option<Instant>) -> Result<()> {
        let waiter = match self.waiter.get() {
            Some(w) => w,
            None => {
                let w = Waiter::with_events(self.fd.as_fd(), self.wake_events, &self.shared)?;
                self.waiter.get_or_init(|| w)
            }
        };
        waiter.sleep(&self.shared, deadline).map(drop)
    }

    /// Whether the descriptor reports room as writable (`EPOLLOUT`, a map)
    /// rather than readable (a fake ring's eventfd).
    #[cfg(feature = "tokio")]
    pub(crate) fn wakes_writable(&self) -> bool {
        self.wake_events & libc::EPOLLOUT as u32 != 0
    }

    /// The close flag and the eventfd [`ProducerHandle::close`] writes.
    #[cfg(feature = "tokio")]
    pub(crate) fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// Counts a wait for room (an async reserve's).
    #[cfg(feature = "tokio")]
    pub(crate) fn count_full_wait(&self) {
        bump(&self.stats.full_waits, 1);
    }

    /// The error for a refused reservation of `len` bytes (counting it).
    #[cold]
    #[inline(never)]
    fn error(&self, e: ReserveError, len: usize) -> Error {
        match e {
            ReserveError::TooBig => Error::SampleTooLarge {
                len,
                max: self.max_sample(),
            },
            ReserveError::Full => {
                bump(&self.stats.failed_reserves, 1);
                Error::RingFull {
                    len,
                    needed: record_stride(len),
                    available: self.producer.free().unwrap_or(0),
                }
            }
            ReserveError::Corrupt { consumer, producer } => Error::CorruptProducerPosition {
                consumer,
                producer,
                size: self.size,
            },
        }
    }
}

impl AsFd for UserRingBuf {
    /// The map's descriptor (for a fake ring, the eventfd its drain writes).
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A cloneable, thread-safe handle that closes a [`UserRingBuf`]: from then
/// on every reserve returns [`Error::Closed`], and a blocked
/// [`reserve_blocking`](UserRingBuf::reserve_blocking) returns it at once.
/// Samples already reserved can still be submitted.
///
/// ```no_run
/// # fn main() -> bpf_ringbuf::Result<()> {
/// use bpf_ringbuf::{Error, UserRingBuf};
/// let ring = UserRingBuf::create(1 << 16)?;
/// let handle = ring.handle();
/// std::thread::spawn(move || handle.close()); // e.g. on shutdown
/// loop {
///     match ring.reserve_blocking(64, None) {
///         Ok(sample) => sample.submit(),
///         Err(Error::Closed) => break,
///         Err(e) => return Err(e),
///     }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ProducerHandle {
    shared: Arc<Shared>,
}

impl ProducerHandle {
    /// Closes the producer. Idempotent.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }
}
