//! [`FakeRing`]: a ring buffer in the kernel's exact layout, in ordinary
//! shared memory, with a producer that follows the kernel's own sequence. No
//! privileges needed: unit-test your consumer with the same [`Reader`].

use std::fmt;
use std::os::fd::AsFd;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::Wakeup;
use crate::error::{Error, Result};
use crate::reader::Reader;
use crate::ring::fake::FakeMemory;
use crate::ring::wakeup::{commit_needs_wakeup, BUSY_BIT, DISCARD_BIT};
use crate::ring::HDR_SZ;
use crate::sys::epoll::{Epoll, EventFd};

/// Bits 31 and 30 of a header: a record length must stay below them.
const MAX_RECORD: usize = (1 << 30) - 1;

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
///   [`Wakeup::NoWakeup`]. [`wakeups`](Self::wakeups) counts them.
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
/// Corruption helpers ([`set_header`](Self::set_header),
/// [`write_data`](Self::write_data), [`set_producer_position`](Self::set_producer_position),
/// [`set_consumer_position`](Self::set_consumer_position)) write arbitrary
/// values, for tests that a reader rejects them with [`Error::Corrupt`].
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
    mem: Arc<FakeMemory>,
    /// The kernel's `rb->spinlock`; it guards `pending_pos` (the kernel's
    /// `rb->pending_pos`: every record before it is committed).
    reserve_lock: Mutex<usize>,
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
    /// A fake ring of `size` data bytes: a power of two and a multiple of the
    /// page size (the data pages are mapped twice), else [`Error::BadSize`].
    /// Positions start at 0.
    pub fn new(size: usize) -> Result<FakeRing> {
        let page = crate::page_size();
        if !(size >= page && size.is_power_of_two() && size % page == 0 && size <= 1 << 31) {
            return Err(Error::BadSize {
                size,
                page_size: page,
                suggested: crate::RingBuf::round_up_size(size),
            });
        }
        Ok(FakeRing {
            mem: Arc::new(FakeMemory::new(size)?),
            reserve_lock: Mutex::new(0),
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
        self.mem.size()
    }

    /// A [`Reader`] of this ring: the same type, and the same code, as on a
    /// kernel ring. It starts at the published consumer position, like a
    /// reader of a reopened map. Several readers may be created in turn (one
    /// at a time should read, as with a real map).
    pub fn reader(&self) -> Result<Reader> {
        self.start_helper()?;
        let cur = self.mem.consumer().map_err(|pos| Error::Corrupt {
            pos,
            len: 0,
            available: 0,
        })?;
        let fd = crate::sys::dup(self.wake.ready.as_fd())?;
        // Like EPOLL_CTL_ADD on a kernel ring, which polls it at once: data
        // already there makes the descriptor readable.
        if self.producer_position() != self.consumer_position() {
            self.wake.ready.notify();
        }
        Reader::from_consumer(cur, fd)
    }

    /// Reserves a record of `len` payload bytes, as `bpf_ringbuf_reserve`
    /// does. `None` when the kernel would return NULL: `len` of 2^30 or more,
    /// a record larger than the ring, or not enough free space
    /// (`new_prod - consumer_pos > size - 1`, where `consumer_pos` is the
    /// *published* position; likewise past the oldest uncommitted record).
    ///
    /// The payload bytes start as whatever earlier records left there, as in
    /// the kernel. Commit it with [`Reservation::submit`] or
    /// [`Reservation::discard`]; dropping it discards it with
    /// [`Wakeup::NoWakeup`].
    pub fn reserve(&self, len: usize) -> Option<Reservation<'_>> {
        if len > MAX_RECORD {
            return None;
        }
        let stride = (len + HDR_SZ + 7) & !7;
        if stride > self.size() {
            return None;
        }
        let mask = self.size() - 1;
        // Acquire: pairs with the consumer's Release store of consumer_pos
        // (RawRing::publish); it is done with every byte before it.
        let cons = self.mem.consumer_pos().load(Ordering::Acquire);
        let mut pending = self.reserve_lock.lock().unwrap_or_else(|e| e.into_inner());
        // Relaxed: only this lock's holder writes producer_pos.
        let prod = self.mem.producer_pos().load(Ordering::Relaxed);
        // Advance past committed records, as the kernel does with pending_pos.
        while *pending != prod {
            // Acquire: pairs with the commit swap of that header.
            let hdr = self.mem.header(*pending).load(Ordering::Acquire);
            if hdr & BUSY_BIT != 0 {
                break;
            }
            let n = (hdr & !(BUSY_BIT | DISCARD_BIT)) as usize;
            *pending = pending.wrapping_add((n + HDR_SZ + 7) & !7);
        }
        let new_prod = prod.wrapping_add(stride);
        if new_prod.wrapping_sub(cons) > mask || new_prod.wrapping_sub(*pending) > mask {
            return None;
        }
        // Relaxed: published by the Release store of producer_pos below.
        self.mem
            .header(prod)
            .store(len as u32 | BUSY_BIT, Ordering::Relaxed);
        // The kernel's page offset of the header, for the kernel only.
        self.mem.header_pg_off(prod).store(
            ((prod & mask) / crate::page_size() + 2) as u32,
            Ordering::Relaxed,
        );
        // Release: as smp_store_release(&rb->producer_pos) in
        // __bpf_ringbuf_reserve; pairs with the consumer's Acquire load in
        // RawRing::load_producer, so the BUSY header is visible with it.
        self.mem.producer_pos().store(new_prod, Ordering::Release);
        drop(pending);
        Some(Reservation {
            ring: self,
            pos: prod,
            len,
            done: false,
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
        // Acquire: pairs with the Release store in `reserve`.
        self.mem.producer_pos().load(Ordering::Acquire)
    }

    /// The consumer position published by the reader (`consumer_pos`).
    pub fn consumer_position(&self) -> usize {
        // Acquire: pairs with the consumer's Release store (RawRing::publish).
        self.mem.consumer_pos().load(Ordering::Acquire)
    }

    /// How many wakeups the producer has sent so far.
    pub fn wakeups(&self) -> u64 {
        self.wake.wakeups.load(Ordering::Relaxed)
    }

    /// The `len` word of the header at `pos` (flag bits included).
    pub fn header(&self, pos: usize) -> u32 {
        // Acquire: pairs with the producer's swap or a `set_header`.
        self.mem.header(pos).load(Ordering::Acquire)
    }

    /// **Corruption:** overwrites the `len` word of the header at `pos`
    /// (reduced modulo the size, rounded down to 8) with any value, flag bits
    /// included.
    pub fn set_header(&self, pos: usize, len_word: u32) {
        // SeqCst swap, like a commit: the payload written before is visible.
        self.mem.header(pos).swap(len_word, Ordering::SeqCst);
    }

    /// **Corruption:** copies `bytes` (at most the ring size) into the data
    /// area at `pos` modulo the size, wrapping seamlessly, whatever is there.
    /// Do not call it while a reader may be reading those bytes.
    pub fn write_data(&self, pos: usize, bytes: &[u8]) {
        self.mem
            .write_data(pos, &bytes[..bytes.len().min(self.size())]);
    }

    /// Copies data bytes at `pos` modulo the size into `out` (at most the
    /// ring size), to inspect what a producer wrote.
    pub fn read_data(&self, pos: usize, out: &mut [u8]) {
        let n = out.len().min(self.size());
        self.mem.read_data(pos, &mut out[..n]);
    }

    /// **Corruption** (or setup): stores any value as `producer_pos`. The
    /// fake's own producer continues from it.
    pub fn set_producer_position(&self, pos: usize) {
        let mut pending = self.reserve_lock.lock().unwrap_or_else(|e| e.into_inner());
        *pending = pos;
        // Release: as in `reserve`.
        self.mem.producer_pos().store(pos, Ordering::Release);
    }

    /// **Corruption** (or setup, such as a ring that an earlier reader had
    /// consumed up to `pos`): stores any value as `consumer_pos`. Set both
    /// positions to the same aligned value to start a ring anywhere, for
    /// example just before the position counter wraps.
    pub fn set_consumer_position(&self, pos: usize) {
        // Release: pairs with the Acquire loads of a new reader and of `reserve`.
        self.mem.consumer_pos().store(pos, Ordering::Release);
    }

    fn commit(&self, pos: usize, len: usize, discard: bool, wakeup: Wakeup) -> bool {
        let mut word = len as u32;
        if discard {
            word |= DISCARD_BIT;
        }
        // The kernel's xchg (a full barrier) clearing BUSY, then its
        // smp_load_acquire of consumer_pos; see ring::wakeup.
        let caught_up =
            commit_needs_wakeup(self.mem.header(pos), word, self.mem.consumer_pos(), pos);
        let wake = match wakeup {
            Wakeup::ForceWakeup => true,
            Wakeup::NoWakeup => false,
            Wakeup::Default => caught_up,
        };
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
        let mem = Arc::downgrade(&self.mem);
        let wake = Arc::clone(&self.wake);
        std::thread::Builder::new()
            .name("fake-ring-poll".into())
            .spawn(move || helper(epoll, mem, wake))
            .map_err(|e| Error::Syscall {
                call: "clone(fake ring helper thread)",
                source: e,
            })?;
        *started = true;
        Ok(())
    }
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
fn helper(epoll: Epoll, mem: Weak<FakeMemory>, wake: Arc<WakeState>) {
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
        if pending && !settle(&mem, &wake) {
            return;
        }
        if stopping && !pending {
            return;
        }
    }
}

/// Waits until the published consumer position equals the producer position,
/// then resets the eventfd. `false` when the memory is gone.
fn settle(mem: &Weak<FakeMemory>, wake: &WakeState) -> bool {
    const FAST: Duration = Duration::from_micros(20);
    const SLOW: Duration = Duration::from_millis(1);
    let mut pause = FAST;
    let mut last = None;
    loop {
        let Some(m) = mem.upgrade() else {
            return false;
        };
        // Acquire, both: pair with the consumer's Release publication and the
        // producer's Release store of producer_pos.
        let cons = m.consumer_pos().load(Ordering::Acquire);
        if cons == m.producer_pos().load(Ordering::Acquire) {
            wake.ready.drain();
            // SeqCst: orders the reset before the re-check, against a commit
            // (swap, then load consumer_pos, then eventfd write) running now.
            // A wakeup written before the reset shows as producer_pos ahead.
            fence(Ordering::SeqCst);
            let cons = m.consumer_pos().load(Ordering::Acquire);
            if cons == m.producer_pos().load(Ordering::Acquire) {
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
        drop(m);
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
    pos: usize,
    len: usize,
    done: bool,
}

impl Reservation<'_> {
    /// The ring position of the record's header.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The payload length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes `bytes` at `offset` in the payload. Panics past the record's end.
    pub fn write(&mut self, offset: usize, bytes: &[u8]) {
        assert!(
            offset
                .checked_add(bytes.len())
                .is_some_and(|end| end <= self.len),
            "write of {} bytes at {offset} past a record of {}",
            bytes.len(),
            self.len
        );
        // The record is BUSY: no reader looks at these bytes until the commit
        // swap, which publishes them.
        self.ring
            .mem
            .write_data(self.pos.wrapping_add(HDR_SZ + offset), bytes);
    }

    /// Commits the record (clears BUSY with an atomic swap), waking the reader
    /// per `wakeup` and the kernel's rule. Returns whether it sent a wakeup.
    pub fn submit(mut self, wakeup: Wakeup) -> bool {
        self.done = true;
        self.ring.commit(self.pos, self.len, false, wakeup)
    }

    /// Commits the record as discarded (BUSY cleared, DISCARD set): readers
    /// skip it. Wakes like [`submit`](Self::submit).
    pub fn discard(mut self, wakeup: Wakeup) -> bool {
        self.done = true;
        self.ring.commit(self.pos, self.len, true, wakeup)
    }

    /// Leaves the record BUSY forever and returns its position: every reader
    /// stops there.
    pub fn leak(mut self) -> usize {
        self.done = true;
        self.pos
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.ring.commit(self.pos, self.len, true, Wakeup::NoWakeup);
        }
    }
}
