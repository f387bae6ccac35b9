//! [`FakeRing`]: a ring buffer in the kernel's exact layout, in ordinary
//! shared memory, with a producer that follows the kernel's own sequence. No
//! privileges needed: unit-test your consumer with the same [`Reader`].

use std::fmt;
use std::os::fd::AsFd;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Wakeup;
use crate::claim::{Claim, Key};
use crate::consumer::Consumer;
use crate::error::{Error, Result};
use crate::map::{check_consumer_flags, check_size, check_spectator_flags};
use crate::reader::Reader;
use crate::ring::producer::{ConsumerAlive, MemfdProducer, PositionWatch, Reserved};
use crate::ring::spectate::StartAt;
use crate::spectator::{Spectator, Start};
use crate::sys::epoll::{Epoll, EventFd};

/// A fake `BPF_MAP_TYPE_RINGBUF`: the kernel's memory layout and producer
/// protocol, without the kernel.
///
/// * **Layout.** A memfd holds a consumer page, a producer page and the data
///   pages; the data pages are mapped twice back to back, exactly like the
///   kernel's mapping, so records that wrap are contiguous.
/// * **Producer.** [`reserve`](Self::reserve) follows `__bpf_ringbuf_reserve`:
///   it refuses when `new_prod - consumer_pos > size - 1` (the ring is full),
///   writes `len | BUSY` into the header, then release-stores `producer_pos`.
///   The returned [`Reservation`] is filled, then
///   [`submit`](Reservation::submit)ted or [`discard`](Reservation::discard)ed
///   with an atomic swap of the header, like `bpf_ringbuf_commit`. Several
///   reservations can be outstanding and committed in any order, from any
///   thread.
/// * **Wakeups.** On commit the producer wakes the reader only if the
///   *published* consumer position equals the record's position (it had
///   caught up), or with [`Wakeup::ForceWakeup`]; never with
///   [`Wakeup::NoWakeup`]. [`Wakeup::Sampled`] picks one of the last two
///   just before the commit, from the published positions.
///   [`wakeups`](Self::wakeups) counts them.
/// * **Readiness.** The descriptor a [`Reader`] of this ring sleeps on is an
///   eventfd, written by each wakeup. Like the kernel's ring descriptor under
///   level-triggered epoll, it then stays readable until the consumer has
///   caught up (published consumer position == producer position): a small
///   helper thread, started with the first reader, watches the positions
///   while a wakeup is pending and resets the eventfd once they are equal
///   (then re-checks, so a wakeup that raced with the reset is kept). So a
///   reader neither hangs (wakeups follow the kernel's rule) nor spins (a
///   stale wakeup is cleared within tens of microseconds of the consumer
///   catching up; the helper polls only while a wakeup is pending).
///
/// * **One consumer.** Like a kernel map, the ring has at most one live
///   reader (or [`Consumer`]) at a time: a second [`reader`](Self::reader) is
///   [`Error::ConsumerExists`] until the first is dropped.
///
/// Corruption helpers ([`set_header`](Self::set_header),
/// [`write_data`](Self::write_data), [`set_producer_position`](Self::set_producer_position),
/// [`set_consumer_position`](Self::set_consumer_position)) write arbitrary
/// values, for tests that a reader rejects them (with [`Error::Corrupt`] and
/// friends). They take `&mut self` (no [`Reservation`] can be outstanding)
/// and refuse with [`Error::ConsumerExists`] while a reader is alive, since
/// they could rewrite bytes it still lends: corrupt first, then open the
/// reader.
///
/// ```
/// # fn main() -> bpf_ringbuf::Result<()> {
/// use bpf_ringbuf::testing::{FakeRing, Wakeup};
///
/// let ring = FakeRing::new(bpf_ringbuf::page_size())?;
/// let mut reader = ring.reader()?;
///
/// // Two producers reserve in order and commit out of order.
/// let mut a = ring.reserve(3).expect("room");
/// let mut b = ring.reserve(5).expect("room");
/// b.write(0, b"world");
/// b.submit(Wakeup::Default);
/// a.write(0, b"abc");
/// a.discard(Wakeup::Default);
///
/// reader.set_deadline(Some(std::time::Instant::now())); // don't block
/// assert_eq!(reader.read()?.data, b"world");
/// assert!(matches!(reader.read(), Err(bpf_ringbuf::Error::DeadlineExceeded)));
/// # Ok(()) }
/// ```
pub struct FakeRing {
    producer: MemfdProducer,
    /// The claim key of this ring: one live consumer at a time.
    key: u64,
    /// The map flags a reader is checked against ([`FakeRing::with_flags`]).
    flags: u32,
    wake: Arc<WakeState>,
}

/// The wakeup side, shared with the helper thread.
struct WakeState {
    /// Readable while a wakeup is pending: what readers sleep on.
    ready: EventFd,
    /// Written when the `FakeRing` drops, so the helper can stop.
    stop: EventFd,
    wakeups: AtomicU64,
    /// Whether the helper thread was started.
    helper: Mutex<bool>,
}

impl fmt::Debug for FakeRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeRing")
            .field("size", &self.size())
            .field("producer_pos", &self.producer_position())
            .field("consumer_pos", &self.consumer_position())
            .field("wakeups", &self.wakeups())
            .finish()
    }
}

impl FakeRing {
    /// A fake ring of `size` data bytes: the same size rule as
    /// [`RingBuf::create`](crate::RingBuf::create) (else [`Error::BadSize`]
    /// with the same suggestion). Positions start at 0.
    pub fn new(size: usize) -> Result<FakeRing> {
        FakeRing::with_flags(size, 0)
    }

    /// A fake ring whose map reports `map_flags` (as `bpf_map_info` would):
    /// its [`reader`](Self::reader) accepts or refuses them as
    /// [`Reader::new`] does a kernel map's, e.g. `BPF_F_RB_OVERWRITE`
    /// (`1 << 19`) with [`Error::UnsupportedMapFlags`].
    ///
    /// With `BPF_F_RB_OVERWRITE` the producer follows Linux 6.19's overwrite
    /// mode: a reservation ignores the consumer position and fails only
    /// when it would overrun a record not yet committed (`new_prod -
    /// pending_pos > size - 1`); `overwrite_pos` (the producer page's second
    /// word, [`overwrite_position`](Self::overwrite_position)) moves past
    /// whole records until the new one fits, and is stored before the
    /// Release store of `producer_pos`. Read such a ring with a
    /// [`spectator`](Self::spectator) or a
    /// [`FlightRecorder`](crate::FlightRecorder).
    pub fn with_flags(size: usize, map_flags: u32) -> Result<FakeRing> {
        static NEXT_KEY: AtomicU64 = AtomicU64::new(0);
        check_size(size)?;
        Ok(FakeRing {
            producer: MemfdProducer::new(
                size,
                map_flags & crate::sys::bpf::BPF_F_RB_OVERWRITE != 0,
            )?,
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            flags: map_flags,
            wake: Arc::new(WakeState {
                ready: EventFd::new()?,
                stop: EventFd::new()?,
                wakeups: AtomicU64::new(0),
                helper: Mutex::new(false),
            }),
        })
    }

    /// The data size in bytes.
    pub fn size(&self) -> usize {
        self.producer.ring().size()
    }

    /// A [`Reader`] of this ring: the same type, and the same code, as on a
    /// kernel ring. It starts at the published consumer position, like a
    /// reader of a reopened map. [`Error::ConsumerExists`] while another
    /// reader of this ring is alive.
    pub fn reader(&self) -> Result<Reader> {
        Reader::from_consumer(self.consumer()?)
    }

    /// A non-blocking [`Consumer`] of this ring (what [`reader`](Self::reader)
    /// wraps); the same rules.
    pub fn consumer(&self) -> Result<Consumer> {
        check_consumer_flags(self.flags)?;
        let claim = Claim::take(Key::Fake(self.key))?;
        self.start_helper()?;
        let cur = self.producer.cursor()?;
        let fd = crate::sys::dup(self.wake.ready.as_fd())?;
        // Like EPOLL_CTL_ADD on a kernel ring, which polls it at once: data
        // already there makes the descriptor readable.
        if self.producer_position() != self.consumer_position() {
            self.wake.ready.notify();
        }
        Ok(Consumer::from_parts(cur, fd, claim))
    }

    /// A [`Spectator`] of this ring, starting at `start`: the same type, and
    /// the same code, as on a kernel ring. It never writes the consumer
    /// position and does not count as the ring's consumer (a reader may live
    /// next to it). [`Error::UnsupportedMapFlags`] for flags other than
    /// overwrite mode that change the protocol.
    pub fn spectator(&self, start: Start) -> Result<Spectator> {
        let overwrite = check_spectator_flags(self.flags)?;
        let start = match start {
            Start::Consumer => StartAt::Consumer,
            Start::Oldest => StartAt::Oldest,
            Start::Now => StartAt::Now,
        };
        let cur = self.producer.spectate_cursor(start)?;
        let fd = crate::sys::dup(self.wake.ready.as_fd())?;
        Spectator::from_parts(cur, fd, overwrite)
    }

    /// `overwrite_pos` in overwrite mode (the oldest record still intact),
    /// `None` for a normal ring.
    pub fn overwrite_position(&self) -> Option<usize> {
        self.producer.overwrite_position()
    }

    /// Reserves a record of `len` payload bytes, as `bpf_ringbuf_reserve`
    /// does. `None` when the kernel would return NULL: `len` of 2^30 or more,
    /// a record larger than the ring, or not enough free space
    /// (`new_prod - consumer_pos > size - 1`, where `consumer_pos` is the
    /// *published* position; likewise past the oldest uncommitted record;
    /// in overwrite mode only the latter).
    ///
    /// The payload bytes start as whatever earlier records left there, as in
    /// the kernel. Commit it with [`Reservation::submit`] or
    /// [`Reservation::discard`]; dropping it discards it with
    /// [`Wakeup::NoWakeup`].
    pub fn reserve(&self, len: usize) -> Option<Reservation<'_>> {
        let r = self.producer.reserve(len).ok()?;
        Some(Reservation {
            ring: self,
            r: Some(r),
        })
    }

    /// Reserves, copies `data`, and submits with `wakeup`, like
    /// `bpf_ringbuf_output`. Returns the record's position, or `None` if the
    /// reservation failed (a drop: nothing is written).
    pub fn output(&self, data: &[u8], wakeup: Wakeup) -> Option<usize> {
        let mut r = self.reserve(data.len())?;
        r.write(0, data);
        let pos = r.position();
        r.submit(wakeup);
        Some(pos)
    }

    /// The producer position (`producer_pos`), as the reader sees it.
    pub fn producer_position(&self) -> usize {
        self.producer.ring().load_producer()
    }

    /// The consumer position published by the reader (`consumer_pos`).
    pub fn consumer_position(&self) -> usize {
        self.producer.ring().load_consumer()
    }

    /// How many wakeups the producer has sent so far.
    pub fn wakeups(&self) -> u64 {
        self.wake.wakeups.load(Ordering::Relaxed)
    }

    /// The `len` word of the header at `pos` (flag bits included).
    pub fn header(&self, pos: usize) -> u32 {
        let mut b = [0u8; 4];
        self.producer.read_data(pos & !7, &mut b);
        u32::from_ne_bytes(b)
    }

    /// Copies data bytes at `pos` modulo the size into `out` (at most the
    /// ring size), to inspect what a producer wrote.
    pub fn read_data(&self, pos: usize, out: &mut [u8]) {
        self.producer.read_data(pos, out);
    }

    /// **Corruption:** overwrites the `len` word of the header at `pos`
    /// (reduced modulo the size, rounded down to 8) with any value, flag bits
    /// included. [`Error::ConsumerExists`] while a reader is alive.
    pub fn set_header(&mut self, pos: usize, len_word: u32) -> Result<()> {
        self.producer
            .overwrite_header(pos, len_word)
            .map_err(consumer_alive)
    }

    /// **Corruption:** copies `bytes` (at most the ring size) into the data
    /// area at `pos` modulo the size, wrapping seamlessly, whatever is there.
    /// [`Error::ConsumerExists`] while a reader is alive.
    pub fn write_data(&mut self, pos: usize, bytes: &[u8]) -> Result<()> {
        self.producer
            .overwrite_data(pos, bytes)
            .map_err(consumer_alive)
    }

    /// **Corruption** (or setup): stores any value as `producer_pos`. The
    /// fake's own producer continues from it. [`Error::ConsumerExists`] while
    /// a reader is alive.
    pub fn set_producer_position(&mut self, pos: usize) -> Result<()> {
        self.producer
            .set_producer_position(pos)
            .map_err(consumer_alive)
    }

    /// **Corruption** (or setup, such as a ring that an earlier reader had
    /// consumed up to `pos`): stores any value as `consumer_pos`. Set both
    /// positions to the same aligned value to start a ring anywhere, for
    /// example just before the position counter wraps.
    /// [`Error::ConsumerExists`] while a reader is alive.
    pub fn set_consumer_position(&mut self, pos: usize) -> Result<()> {
        self.producer
            .set_consumer_position(pos)
            .map_err(consumer_alive)
    }

    /// Commits `r` and sends the wakeup the kernel would.
    fn commit(&self, r: Reserved<'_>, discard: bool, wakeup: Wakeup) -> bool {
        // Before the commit, as `get_flags()` in the kernel's ringbuf_bench.c
        // (Wakeup::Sampled): `bpf_ringbuf_query(BPF_RB_AVAIL_DATA)` is
        // producer_pos - consumer_pos, both loaded with Acquire.
        let available = self
            .producer_position()
            .wrapping_sub(self.consumer_position());
        let flags = wakeup.flags(available as u64);
        let caught_up = r.commit(discard);
        let wake = Wakeup::kernel_wakes(flags, caught_up);
        if wake {
            self.wake.wakeups.fetch_add(1, Ordering::Relaxed);
            self.wake.ready.notify();
        }
        wake
    }

    /// Starts the helper that clears the readiness once the consumer caught up.
    fn start_helper(&self) -> Result<()> {
        let mut started = self.wake.helper.lock().unwrap_or_else(|e| e.into_inner());
        if *started {
            return Ok(());
        }
        let epoll = Epoll::new()?;
        epoll.add(self.wake.ready.as_fd(), libc::EPOLLIN as u32, TOKEN_READY)?;
        epoll.add(self.wake.stop.as_fd(), libc::EPOLLIN as u32, TOKEN_STOP)?;
        let watch = self.producer.watch();
        let wake = Arc::clone(&self.wake);
        std::thread::Builder::new()
            .name("fake-ring-poll".into())
            .spawn(move || helper(epoll, watch, wake))
            .map_err(|e| Error::Syscall {
                call: "clone(fake ring helper thread)",
                source: e,
            })?;
        *started = true;
        Ok(())
    }
}
fn consumer_alive(_: ConsumerAlive) -> Error {
    Error::ConsumerExists { map_id: None }
}

impl Drop for FakeRing {
    fn drop(&mut self) {
        self.wake.stop.notify();
    }
}

const TOKEN_READY: u64 = 0;
const TOKEN_STOP: u64 = 1;

/// The helper thread: sleeps until a wakeup is pending, then keeps the
/// descriptor readable until the consumer has caught up. Exits once the
/// `FakeRing` is dropped and no wakeup is pending, or once every owner of the
/// memory (the ring and its readers) is gone.
fn helper(epoll: Epoll, watch: PositionWatch, wake: Arc<WakeState>) {
    let mut stopping = false;
    loop {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 2];
        let Ok(n) = epoll.wait(&mut events, None) else {
            return;
        };
        let mut pending = false;
        for ev in &events[..n] {
            match ev.u64 {
                TOKEN_STOP => {
                    wake.stop.drain();
                    stopping = true;
                }
                _ => pending = true,
            }
        }
        if pending && !settle(&watch, &wake) {
            return;
        }
        if stopping && !pending {
            return;
        }
    }
}

/// Waits until the published consumer position equals the producer position,
/// then resets the eventfd. `false` when the memory is gone.
fn settle(watch: &PositionWatch, wake: &WakeState) -> bool {
    const FAST: Duration = Duration::from_micros(20);
    const SLOW: Duration = Duration::from_millis(1);
    let mut pause = FAST;
    let mut last = None;
    loop {
        // Acquire loads of both positions (see PositionWatch): they pair with
        // the consumer's Release publication and the producer's Release store.
        let Some((cons, prod)) = watch.positions() else {
            return false;
        };
        if cons == prod {
            wake.ready.drain();
            // SeqCst: orders the reset before the re-check, against a commit
            // (swap, then load consumer_pos, then eventfd write) running now.
            // A wakeup written before the reset shows as producer_pos ahead.
            fence(Ordering::SeqCst);
            let Some((cons, prod)) = watch.positions() else {
                return false;
            };
            if cons == prod {
                return true;
            }
            wake.ready.notify();
            continue;
        }
        // A consumer that moves is about to catch up: look again soon. One
        // that stands still (not reading) is checked less and less often.
        if last == Some(cons) {
            pause = (pause * 2).min(SLOW);
        } else {
            pause = FAST;
            last = Some(cons);
        }
        std::thread::sleep(pause);
    }
}

/// A record reserved by [`FakeRing::reserve`], BUSY until committed.
///
/// Dropping it discards it with [`Wakeup::NoWakeup`] (a BPF program must
/// release every reservation); [`leak`](Self::leak) leaves it BUSY forever,
/// like a stuck producer.
#[derive(Debug)]
pub struct Reservation<'r> {
    ring: &'r FakeRing,
    /// `None` once committed or leaked.
    r: Option<Reserved<'r>>,
}

impl Reservation<'_> {
    fn reserved(&self) -> &Reserved<'_> {
        self.r
            .as_ref()
            .expect("a Reservation holds its record until consumed")
    }

    /// The ring position of the record's header.
    pub fn position(&self) -> usize {
        self.reserved().position()
    }

    /// The payload length.
    pub fn len(&self) -> usize {
        self.reserved().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes `bytes` at `offset` in the payload. Panics past the record's
    /// end (a bug in the test that calls it).
    pub fn write(&mut self, offset: usize, bytes: &[u8]) {
        let r = self
            .r
            .as_mut()
            .expect("a Reservation holds its record until consumed");
        let len = r.len();
        assert!(
            r.write(offset, bytes),
            "write of {} bytes at {offset} past a record of {len}",
            bytes.len(),
        );
    }

    /// Commits the record (clears BUSY with an atomic swap), waking the reader
    /// per `wakeup` and the kernel's rule. Returns whether it sent a wakeup.
    pub fn submit(mut self, wakeup: Wakeup) -> bool {
        let r = self
            .r
            .take()
            .expect("a Reservation holds its record until consumed");
        self.ring.commit(r, false, wakeup)
    }

    /// Commits the record as discarded (BUSY cleared, DISCARD set): readers
    /// skip it. Wakes like [`submit`](Self::submit).
    pub fn discard(mut self, wakeup: Wakeup) -> bool {
        let r = self
            .r
            .take()
            .expect("a Reservation holds its record until consumed");
        self.ring.commit(r, true, wakeup)
    }

    /// Leaves the record BUSY forever and returns its position: every reader
    /// stops there.
    pub fn leak(mut self) -> usize {
        let r = self
            .r
            .take()
            .expect("a Reservation holds its record until consumed");
        r.leak()
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(r) = self.r.take() {
            self.ring.commit(r, true, Wakeup::NoWakeup);
        }
    }
}
