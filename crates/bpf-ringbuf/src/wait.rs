//! Waiting: epoll on the ring's descriptor and an eventfd, deadlines, and the
//! [`ReaderHandle`] that flushes or closes a reader from another thread.
//! On Windows, Win32 events instead of epoll and the eventfd (see [`event`]).

#[cfg(target_os = "linux")]
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
#[cfg(target_os = "linux")]
use crate::sys::epoll::{Epoll, EventFd};
// Flush and close's wake-up object: a Win32 event where Linux has an eventfd.
#[cfg(windows)]
use crate::sys::windows::event::Event as EventFd;

#[cfg(any(windows, test))]
mod event;
#[cfg(windows)]
pub(crate) use event::Waiter;

#[cfg(target_os = "linux")]
const TOKEN_RING: u64 = 0;
#[cfg(target_os = "linux")]
const TOKEN_EVENT: u64 = 1;

/// State shared by a reader and its handles.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Set once by `close()`, never cleared.
    closed: AtomicBool,
    /// Set by `flush()`, cleared by the read that reports `Flushed`.
    flush: AtomicBool,
    /// Written after either flag is set, so a blocked `epoll_wait` returns.
    event: EventFd,
}

impl Shared {
    pub(crate) fn new() -> Result<Arc<Shared>> {
        Ok(Arc::new(Shared {
            closed: AtomicBool::new(false),
            flush: AtomicBool::new(false),
            event: EventFd::new()?,
        }))
    }

    /// Cheap check for the per-record path.
    #[inline(always)]
    pub(crate) fn is_closed(&self) -> bool {
        // Relaxed: a flag with no data attached; `close()` also wakes any
        // sleeper through the eventfd, whose read/write order it.
        self.closed.load(Ordering::Relaxed)
    }

    /// The eventfd that `flush()` and `close()` write, for a waiter that
    /// watches it itself (the tokio reader registers a duplicate; a
    /// `RingSet` registers it in its epoll instance).
    #[cfg(target_os = "linux")]
    pub(crate) fn event_fd(&self) -> BorrowedFd<'_> {
        self.event.as_fd()
    }

    /// The event that `flush()` and `close()` set (Windows).
    #[cfg(windows)]
    pub(crate) fn control_event(&self) -> &EventFd {
        &self.event
    }

    /// Resets the eventfd after it fired; the flags it announced are checked next.
    #[cfg(target_os = "linux")]
    pub(crate) fn drain_event(&self) {
        self.event.drain();
    }

    /// Sets the closed flag, then wakes any sleeper (a reader's or a user
    /// ring producer's) through the eventfd.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.event.notify();
    }

    /// Consumes a pending flush.
    pub(crate) fn take_flush(&self) -> bool {
        // Relaxed load first, so the common no-flush case does not write the
        // shared line.
        self.flush.load(Ordering::Relaxed) && self.flush.swap(false, Ordering::AcqRel)
    }
}

/// A cloneable, thread-safe handle that flushes or closes a [`Reader`](crate::Reader).
///
/// ```no_run
/// # fn main() -> bpf_ringbuf::Result<()> {
/// use bpf_ringbuf::{Error, Reader, RingBuf};
/// let ring = RingBuf::create(1 << 20)?;
/// let mut reader = Reader::new(&ring)?;
/// let handle = reader.handle();
/// let t = std::thread::spawn(move || loop {
///     match reader.read() {
///         Ok(rec) => println!("{} bytes", rec.data.len()),
///         Err(Error::Closed) => break,
///         Err(e) => panic!("{e}"),
///     }
/// });
/// handle.close(); // the blocked read returns Err(Closed) promptly
/// t.join().unwrap();
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ReaderHandle {
    pub(crate) shared: Arc<Shared>,
}

impl ReaderHandle {
    /// Wakes a blocked read. It returns the records present, then
    /// [`Error::Flushed`] once. If no read is blocked, the flush stays
    /// pending: the next read that finds the ring empty reports it.
    pub fn flush(&self) {
        // Release: orders the flag before the eventfd write the reader wakes on.
        self.shared.flush.store(true, Ordering::Release);
        self.shared.event.notify();
    }

    /// Closes the reader: every read from now on returns [`Error::Closed`] at
    /// once, even if records remain (they stay in the map for another reader).
    /// Idempotent.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }
}

/// The sleeping half of a reader (Linux): one epoll instance watching the ring's
/// descriptor (edge-triggered: woken by the kernel's wakeups) and the
/// eventfd of flush and close (level-triggered, drained when it fires).
#[cfg(target_os = "linux")]
#[derive(Debug)]
pub(crate) struct Waiter {
    epoll: Epoll,
}

#[cfg(target_os = "linux")]
impl Waiter {
    pub(crate) fn new(ring_fd: BorrowedFd<'_>, shared: &Shared) -> Result<Waiter> {
        Waiter::with_events(ring_fd, (libc::EPOLLIN | libc::EPOLLET) as u32, shared)
    }

    /// A waiter on `ring_fd` for `events` (a user ring buffer's producer
    /// waits for `EPOLLOUT | EPOLLET`: the kernel wakes it after a drain).
    pub(crate) fn with_events(
        ring_fd: BorrowedFd<'_>,
        events: u32,
        shared: &Shared,
    ) -> Result<Waiter> {
        let epoll = Epoll::new()?;
        // Edge-triggered: epoll_wait returns only after a new wakeup from the
        // kernel, never merely because bytes are unconsumed. That is safe
        // because every sleep is preceded by publish + fence + re-check (see
        // `ring`), and it lets a reader sleep while the head record is BUSY
        // (the ring fd would stay "readable" under level triggering).
        epoll.add(ring_fd, events, TOKEN_RING)?;
        epoll.add(shared.event.as_fd(), libc::EPOLLIN as u32, TOKEN_EVENT)?;
        Ok(Waiter { epoll })
    }

    /// Sleeps until the ring or the eventfd is readable, or `deadline` passes.
    /// The caller has already published its position and re-checked (see
    /// [`crate::ring`]). Spurious returns are fine; the caller loops.
    pub(crate) fn sleep(&self, shared: &Shared, deadline: Option<Instant>) -> Result<Woke> {
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 2];
        // EINTR comes back as 0 events: the caller loops and recomputes the
        // remaining time.
        let n = self.epoll.wait(&mut events, timeout)?;
        let mut woke = Woke::default();
        for ev in &events[..n] {
            if ev.u64 == TOKEN_EVENT {
                // Reset the eventfd so level-triggered epoll stops reporting
                // it; the flags it announced are checked by the caller next.
                shared.event.drain();
                woke.event = true;
            } else {
                woke.ring = true;
            }
        }
        Ok(woke)
    }
}

/// What ended a [`Waiter::sleep`]; neither is a timeout (or `EINTR`).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Woke {
    /// The kernel woke the ring's waiters.
    pub ring: bool,
    /// A flush or close.
    pub event: bool,
}

/// Backs off while the record at the head is BUSY (reserved, not committed):
/// spins briefly, then yields, then returns how long to sleep (growing from
/// 20 µs to 1.28 ms) — the caller sleeps on epoll, where the commit wakes it.
pub(crate) fn busy_backoff(step: &mut u32) -> Option<Duration> {
    let s = *step;
    *step = s.saturating_add(1);
    if s < 16 {
        std::hint::spin_loop();
        None
    } else if s < 32 {
        std::thread::yield_now();
        None
    } else {
        Some(Duration::from_micros(20u64 << (s - 32).min(6)))
    }
}

/// Checks the reasons a read that found nothing returns instead of waiting,
/// in the documented order: closed, flushed, deadline passed.
#[inline]
pub(crate) fn check_stop(shared: &Shared, deadline: Option<Instant>) -> Result<()> {
    if shared.closed.load(Ordering::Acquire) {
        return Err(Error::Closed);
    }
    if shared.take_flush() {
        return Err(Error::Flushed);
    }
    if let Some(d) = deadline {
        if Instant::now() >= d {
            return Err(Error::DeadlineExceeded);
        }
    }
    Ok(())
}
