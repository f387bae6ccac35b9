//! [`AsyncUserRingBuf`]: `reserve().await` on a user ring buffer.

use std::future::poll_fn;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::task::Poll;

use ::tokio::io::unix::AsyncFd;
use ::tokio::io::Interest;

use crate::error::{Error, Result};
use crate::user_ringbuf::{Sample, UserRingBuf};
use crate::wait::Shared;

/// A [`UserRingBuf`] whose reservations wait for room from a tokio task:
/// [`reserve(len).await`](Self::reserve) returns a sample once the kernel's
/// drain has made room (the map's `EPOLLOUT`, edge-triggered through
/// tokio's reactor), or [`Error::Closed`] after
/// [`ProducerHandle::close`](crate::ProducerHandle::close).
///
/// The future is `Send` (it borrows the producer mutably, and a
/// `UserRingBuf` is `Send`), so it can run on a multi-threaded runtime; it
/// is cancellation-safe: dropped while waiting, it has reserved nothing.
/// One sample at a time comes from `reserve().await`; for several
/// outstanding samples, reserve without waiting through
/// [`get_ref`](Self::get_ref).
///
/// ```no_run
/// # async fn f() -> bpf_ringbuf::Result<()> {
/// use bpf_ringbuf::{AsyncUserRingBuf, UserRingBuf};
/// let mut ring = AsyncUserRingBuf::new(UserRingBuf::create(1 << 20)?)?;
/// for i in 0u64..1000 {
///     let mut sample = ring.reserve(8).await?; // waits while the ring is full
///     sample.copy_from_slice(&i.to_le_bytes());
///     sample.submit();
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct AsyncUserRingBuf {
    ring: UserRingBuf,
    /// A duplicate of the ring's descriptor, registered with the runtime.
    room: AsyncFd<OwnedFd>,
    /// A duplicate of the close eventfd, registered with the runtime.
    event: AsyncFd<OwnedFd>,
    /// The producer's close flag and eventfd (the waiting future uses this,
    /// not the producer: a `&UserRingBuf` held across an await would make
    /// it `!Send`).
    shared: Arc<Shared>,
    /// Whether `room` reports room as writable (a map: `EPOLLOUT`) or
    /// readable (a fake ring's eventfd).
    writable: bool,
}

impl AsyncUserRingBuf {
    /// Registers the producer with the current tokio runtime (IO enabled).
    /// Outside any runtime: [`Error::NoAsyncRuntime`].
    pub fn new(ring: UserRingBuf) -> Result<AsyncUserRingBuf> {
        if ::tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::NoAsyncRuntime);
        }
        let writable = ring.wakes_writable();
        let interest = if writable {
            Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let room = crate::sys::async_fd::register(crate::sys::dup(ring.as_fd())?, interest)
            .map_err(|e| Error::from_syscall("epoll_ctl(register user ring with tokio)", e))?;
        let shared = ring.shared();
        let event =
            crate::sys::async_fd::register(crate::sys::dup(shared.event_fd())?, Interest::READABLE)
                .map_err(|e| Error::from_syscall("epoll_ctl(register eventfd with tokio)", e))?;
        Ok(AsyncUserRingBuf {
            ring,
            room,
            event,
            shared,
            writable,
        })
    }

    /// The producer, for what does not wait: [`UserRingBuf::reserve`]
    /// (several outstanding samples), stats, the handle.
    pub fn get_ref(&self) -> &UserRingBuf {
        &self.ring
    }

    /// Deregisters from the runtime and returns the producer.
    pub fn into_inner(self) -> UserRingBuf {
        self.ring
    }

    /// Reserves a sample of `len` bytes, waiting while the ring is full.
    ///
    /// Errors: as [`UserRingBuf::reserve`] except [`Error::RingFull`], which
    /// it waits out: [`Error::SampleTooLarge`] at once, [`Error::Closed`]
    /// (also while waiting). A program that drains with
    /// `BPF_RB_NO_WAKEUP` wakes nobody: wrap the call in
    /// `tokio::time::timeout` then.
    pub async fn reserve(&mut self, len: usize) -> Result<Sample<'_>> {
        let mut waited = false;
        loop {
            // The attempt, then the wait. Readiness is cleared before each
            // attempt (below): the kernel publishes the consumer position
            // before it wakes waiters, so a drain after the clear is either
            // seen by the attempt or a newer event that wakes the wait.
            match self.ring.reserve(len) {
                Err(Error::RingFull { .. }) => {}
                other => return other,
            }
            if !waited {
                self.ring.count_full_wait();
                waited = true;
            }
            let (room, event, shared, writable) =
                (&self.room, &self.event, &self.shared, self.writable);
            poll_fn(|cx| {
                if let Poll::Ready(r) = event.poll_read_ready(cx) {
                    let mut guard = r.map_err(io_error)?;
                    shared.drain_event();
                    guard.clear_ready();
                    if shared.is_closed() {
                        return Poll::Ready(Err(Error::Closed));
                    }
                }
                let ready = if writable {
                    room.poll_write_ready(cx)
                } else {
                    room.poll_read_ready(cx)
                };
                match ready {
                    Poll::Ready(Ok(mut guard)) => {
                        guard.clear_ready();
                        Poll::Ready(Ok(()))
                    }
                    Poll::Ready(Err(e)) => Poll::Ready(Err(io_error(e))),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await?;
        }
    }
}

fn io_error(e: std::io::Error) -> Error {
    Error::from_syscall("epoll_wait(tokio readiness)", e)
}
