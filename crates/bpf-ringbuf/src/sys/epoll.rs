//! `epoll` and `eventfd`, the two primitives the waiting layer sleeps on.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use super::cvt;
use crate::error::Error;

/// An epoll instance.
#[derive(Debug)]
pub(crate) struct Epoll {
    fd: OwnedFd,
}

impl Epoll {
    /// `epoll_create1(EPOLL_CLOEXEC)`: creates an epoll instance.
    pub(crate) fn new() -> Result<Epoll, Error> {
        // SAFETY: no pointers are passed.
        let ret = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        let fd = cvt("epoll_create1", ret as libc::c_long)? as RawFd;
        // SAFETY: a fresh descriptor returned by the kernel.
        Ok(Epoll {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// `epoll_ctl(EPOLL_CTL_ADD, fd, {events, token})`: level-triggered unless
    /// `events` says otherwise.
    pub(crate) fn add(&self, fd: BorrowedFd<'_>, events: u32, token: u64) -> Result<(), Error> {
        let mut ev = libc::epoll_event { events, u64: token };
        // SAFETY: `ev` lives across the call; the kernel copies it.
        let ret = unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                fd.as_raw_fd(),
                &mut ev,
            )
        };
        cvt("epoll_ctl(EPOLL_CTL_ADD)", ret as libc::c_long).map(drop)
    }

    /// `epoll_pwait2(epfd, events, max, timeout, NULL)`: waits for
    /// readiness, with a nanosecond timeout (Linux 5.11+). On older kernels
    /// (`ENOSYS`) it falls back to `epoll_wait`, whose timeout is rounded
    /// **up** to whole milliseconds, so the call never returns before it.
    ///
    /// `None` waits forever. `EINTR` is reported as zero events; the caller
    /// retries with the time that remains.
    pub(crate) fn wait(
        &self,
        events: &mut [libc::epoll_event],
        timeout: Option<Duration>,
    ) -> Result<usize, Error> {
        use std::sync::atomic::{AtomicBool, Ordering};
        /// Set once `epoll_pwait2` returned ENOSYS.
        static NO_PWAIT2: AtomicBool = AtomicBool::new(false);
        let max = events.len().min(libc::c_int::MAX as usize) as libc::c_int;
        let mut call = "epoll_pwait2";
        // Relaxed: a cache of a fact about the kernel; a stale read only costs
        // one more ENOSYS.
        let mut ret = if NO_PWAIT2.load(Ordering::Relaxed) {
            -1
        } else {
            let ts = timeout.map(timespec);
            let ts_ptr = ts
                .as_ref()
                .map_or(std::ptr::null(), |t| t as *const libc::timespec);
            // SAFETY: `events` is a valid, writable buffer of `max` entries;
            // `ts_ptr` is a valid timespec or NULL (forever); no sigmask.
            unsafe {
                libc::syscall(
                    libc::SYS_epoll_pwait2,
                    self.fd.as_raw_fd(),
                    events.as_mut_ptr(),
                    max,
                    ts_ptr,
                    std::ptr::null::<libc::sigset_t>(),
                    0usize,
                ) as libc::c_int
            }
        };
        let enosys = ret < 0
            && (NO_PWAIT2.load(Ordering::Relaxed)
                || std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS));
        if enosys {
            NO_PWAIT2.store(true, Ordering::Relaxed);
            call = "epoll_wait";
            let ms: libc::c_int = match timeout {
                None => -1,
                Some(d) => d
                    .as_nanos()
                    .div_ceil(1_000_000)
                    .min(libc::c_int::MAX as u128) as libc::c_int,
            };
            // SAFETY: `events` is a valid, writable buffer of `max` entries.
            ret = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), max, ms) };
        }
        if ret < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                return Ok(0);
            }
            return Err(Error::from_syscall(call, err));
        }
        Ok(ret as usize)
    }
}

/// A `timespec` for a timeout, saturating at `time_t::MAX` seconds.
fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

impl AsFd for Epoll {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A non-blocking eventfd, used to wake a blocked reader (flush, close).
#[derive(Debug)]
pub(crate) struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// `eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)`.
    pub(crate) fn new() -> Result<EventFd, Error> {
        // SAFETY: no pointers are passed.
        let ret = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        let fd = cvt("eventfd", ret as libc::c_long)? as RawFd;
        // SAFETY: a fresh descriptor returned by the kernel.
        Ok(EventFd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// `write(fd, 1)`: makes the eventfd readable. Never blocks; a saturated
    /// counter (EAGAIN) is already readable, so the error is ignored.
    pub(crate) fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64.
        unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }

    /// `read(fd)`: resets the counter, so the eventfd is no longer readable.
    pub(crate) fn drain(&self) {
        let mut buf: u64 = 0;
        // SAFETY: reads at most 8 bytes into a live u64. EAGAIN (already zero)
        // is the expected, harmless outcome when nobody notified.
        unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                (&mut buf as *mut u64).cast(),
                std::mem::size_of::<u64>(),
            );
        }
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Epoll {
    /// `epoll_ctl(EPOLL_CTL_DEL, fd)`: stops watching `fd`. Needed before the
    /// descriptor closes whenever another descriptor of the same open file
    /// may live on (a registration lasts as long as the file, not the number).
    pub(crate) fn delete(&self, fd: BorrowedFd<'_>) -> Result<(), Error> {
        // A non-null event pointer, for kernels before 2.6.9; it is ignored.
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: `ev` lives across the call; the kernel does not read it.
        let ret = unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd.as_raw_fd(),
                &mut ev,
            )
        };
        cvt("epoll_ctl(EPOLL_CTL_DEL)", ret as libc::c_long).map(drop)
    }
}
