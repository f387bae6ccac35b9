//! `mmap`/`munmap` of ring buffer pages, and the memfd double mapping that
//! gives the fake ring the kernel's layout.

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

    /// The two mappings of a ring buffer map of `size` data bytes: the
    /// consumer page (file offset 0; writable if `writable_consumer`) and
    /// the producer page followed by the data pages mapped twice (file
    /// offset one page, read-only).
    pub(crate) fn map_ring(
        fd: BorrowedFd<'_>,
        page: usize,
        size: usize,
        writable_consumer: bool,
    ) -> Result<(Mmap, Mmap), Error> {
        let consumer = Mmap::map("mmap(consumer page)", fd, page, 0, writable_consumer)?;
        let producer = Mmap::map(
            "mmap(producer page and data)",
            fd,
            page + 2 * size,
            page,
            false,
        )?;
        Ok((consumer, producer))
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

    /// The start of the mapping.
    pub(crate) fn ptr(&self) -> NonNull<u8> {
        self.ptr
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

/// A ring buffer's memory in the kernel's layout, from a memfd (for the fake
/// ring): one `PROT_NONE` reservation of `2 * page + 2 * size` bytes filled
/// with three `MAP_FIXED` shared mappings of one memfd, so the data pages
/// appear twice back to back, as in the kernel's mapping of a ring buffer.
///
/// ```text
/// reservation  [consumer page][producer page][data: size][data again: size]
/// memfd offset  0              page           2*page      2*page (same pages)
/// ```
///
/// A record that wraps past the end is contiguous, and a write through one
/// copy is seen through the other (they are the same physical pages).
/// Everything is mapped read-write and zero-filled.
#[cfg(feature = "testing")]
#[derive(Debug)]
pub(crate) struct MemfdRing {
    /// The whole reservation; unmapped (all three mappings at once) on drop.
    /// The memfd can close before: mappings keep its pages alive.
    map: Mmap,
    _memfd: std::os::fd::OwnedFd,
    page: usize,
    size: usize,
}

#[cfg(feature = "testing")]
impl MemfdRing {
    /// Maps a zero-filled ring of `size` data bytes. `size` must be a valid
    /// ring size for this page size (checked by the caller; asserted).
    pub(crate) fn new(size: usize) -> Result<MemfdRing, Error> {
        use std::os::fd::AsFd;
        let page = super::page_size();
        assert!(crate::ring::abi::is_valid_ring_size(size, page));
        let fd = super::memfd::memfd(c"bpf-ringbuf-fake", 2 * page + size)?;
        let map = Mmap::reserve(2 * page + 2 * size)?;
        map.map_fixed(0, fd.as_fd(), page, 0)?;
        map.map_fixed(page, fd.as_fd(), page + size, page)?;
        map.map_fixed(2 * page + size, fd.as_fd(), size, 2 * page)?;
        Ok(MemfdRing {
            map,
            _memfd: fd,
            page,
            size,
        })
    }

    /// The data size in bytes.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// The start of the consumer page (`consumer_pos`), page-aligned.
    pub(crate) fn consumer_page(&self) -> NonNull<u8> {
        self.map.ptr
    }

    /// The start of the producer page (`producer_pos`), page-aligned.
    pub(crate) fn producer_page(&self) -> NonNull<u8> {
        // SAFETY: `page < map.len`, so the offset stays inside the reservation.
        unsafe { self.map.ptr.add(self.page) }
    }

    /// The start of the `2 * size` data bytes, page-aligned.
    pub(crate) fn data(&self) -> NonNull<u8> {
        // SAFETY: `2 * page < map.len`, so the offset stays inside the reservation.
        unsafe { self.map.ptr.add(2 * self.page) }
    }
}
