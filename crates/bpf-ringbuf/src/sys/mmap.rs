//! `mmap`/`munmap` of ring buffer pages.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use crate::error::Error;

/// One shared mapping, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a mapping is plain memory; sharing the address between threads is
// fine, and all accesses to kernel-shared words go through atomics in `ring`.
unsafe impl Send for Mmap {}
// SAFETY: as above; `Mmap` itself has no interior state besides the address.
unsafe impl Sync for Mmap {}

impl Mmap {
    /// `mmap(NULL, len, prot, MAP_SHARED, fd, offset)`.
    pub(crate) fn map(
        call: &'static str,
        fd: BorrowedFd<'_>,
        len: usize,
        offset: usize,
        writable: bool,
    ) -> Result<Mmap, Error> {
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let off = libc::off_t::try_from(offset).map_err(|_| Error::Syscall {
            call,
            source: std::io::Error::from_raw_os_error(libc::EOVERFLOW),
        })?;
        // SAFETY: we ask for a fresh mapping (addr = NULL), so no existing memory
        // is replaced; the kernel validates fd, length, offset and protection.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                off,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::from_syscall(call, std::io::Error::last_os_error()));
        }
        Ok(Mmap {
            ptr: NonNull::new(ptr.cast()).expect("mmap returned NULL without MAP_FIXED"),
            len,
        })
    }

    /// Reserves `len` bytes of address space (`PROT_NONE`, anonymous), to be
    /// filled by [`Mmap::map_fixed`]. Used by the fake ring's double mapping.
    #[cfg(feature = "testing")]
    pub(crate) fn reserve(len: usize) -> Result<Mmap, Error> {
        // SAFETY: a fresh anonymous PROT_NONE mapping replaces nothing.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::from_syscall(
                "mmap(PROT_NONE)",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Mmap {
            ptr: NonNull::new(ptr.cast()).expect("mmap returned NULL without MAP_FIXED"),
            len,
        })
    }

    /// Maps `len` bytes of `fd` at `offset` read-write over `self[at..at+len]`
    /// (`MAP_FIXED`). The range must lie inside this reservation.
    #[cfg(feature = "testing")]
    pub(crate) fn map_fixed(
        &self,
        at: usize,
        fd: BorrowedFd<'_>,
        len: usize,
        offset: usize,
    ) -> Result<(), Error> {
        assert!(at.checked_add(len).is_some_and(|end| end <= self.len));
        let off = libc::off_t::try_from(offset).expect("offset fits off_t");
        // SAFETY: the target range is inside our own reservation (asserted
        // above), so MAP_FIXED replaces only pages this `Mmap` owns.
        let ptr = unsafe {
            libc::mmap(
                self.ptr.as_ptr().add(at).cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd.as_raw_fd(),
                off,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(Error::from_syscall(
                "mmap(MAP_FIXED)",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: we own this mapping; no reference into it outlives `self`
        // because every borrow of ring memory is tied to the owning reader.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
