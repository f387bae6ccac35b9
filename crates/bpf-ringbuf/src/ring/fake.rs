//! The memory of [`FakeRing`](crate::testing::FakeRing): the kernel's exact
//! layout, built from a memfd, and the producer's raw accesses to it.
//!
//! ```text
//! reservation  [consumer page][producer page][data: size][data again: size]
//! memfd offset  0              page           2*page      2*page (same pages)
//! ```
//!
//! One `PROT_NONE` reservation of `2 * page + 2 * size` bytes is filled with
//! three `MAP_FIXED` shared mappings of one memfd, so the data pages appear
//! twice back to back, as in the kernel's mapping of a ring buffer: a record
//! that wraps past the end is contiguous, and a write through one copy is seen
//! through the other (they are the same physical pages).
//!
//! # Safety
//!
//! Everything here hands out either atomics (the positions and the record
//! headers, accessed only atomically by both sides) or writes payload bytes of
//! a record that is reserved and not yet committed, which the consumer never
//! reads ([`RawRing::peek`] stops at a BUSY header). The raw-write helpers for
//! corruption tests ([`FakeMemory::write_data`]) can race with a concurrent
//! reader; they are meant for single-threaded tests, and their bounds are
//! checked so they never write outside the mapping.

use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;

use super::sync::{AtomicU32, AtomicUsize};
use super::{RawRing, HDR_SZ};
use crate::error::Error;
use crate::sys::{memfd::memfd, mmap::Mmap, page_size};

/// The fake ring's memory: the reservation with its three mappings.
#[derive(Debug)]
pub(crate) struct FakeMemory {
    /// The `2 * page + 2 * size` bytes, unmapped (all three mappings at once)
    /// on drop. The memfd can close before: mappings keep its pages alive.
    map: Mmap,
    _memfd: OwnedFd,
    page: usize,
    size: usize,
}

impl FakeMemory {
    /// Maps a zero-filled ring of `size` data bytes. `size` must be a power
    /// of two and a multiple of the page size (checked by the caller; asserted).
    pub(crate) fn new(size: usize) -> Result<FakeMemory, Error> {
        let page = page_size();
        assert!(size.is_power_of_two() && size % page == 0 && size >= page);
        let fd = memfd(c"bpf-ringbuf-fake", 2 * page + size)?;
        let map = Mmap::reserve(2 * page + 2 * size)?;
        map.map_fixed(0, fd.as_fd(), page, 0)?;
        map.map_fixed(page, fd.as_fd(), page + size, page)?;
        map.map_fixed(2 * page + size, fd.as_fd(), size, 2 * page)?;
        Ok(FakeMemory {
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

    fn data(&self) -> *mut u8 {
        // SAFETY: `2 * page < map.len()`, so the offset is inside the reservation.
        unsafe { self.map.as_ptr().add(2 * self.page) }
    }

    /// A [`RawRing`] over this memory. The caller keeps `self` alive (for
    /// example in the consumer's `mem` box) for as long as it is used.
    pub(crate) fn raw(&self) -> RawRing {
        let cons = NonNull::new(self.map.as_ptr().cast::<usize>()).expect("mapping is non-null");
        // SAFETY: `page < map.len()`.
        let prod = NonNull::new(unsafe { self.map.as_ptr().add(self.page) }.cast::<usize>())
            .expect("mapping is non-null");
        let data = NonNull::new(self.data()).expect("mapping is non-null");
        // SAFETY: the kernel's layout, established in `new`: page-aligned
        // consumer and producer words (each at the start of its own page,
        // zero-initialised by the memfd, accessed only atomically), then
        // `2 * size` bytes of data mapped twice, page-aligned; `size` is a
        // power of two. The memory lives as long as `self`.
        unsafe { RawRing::new(cons, prod, data, self.size) }
    }

    /// The consumer position word.
    pub(crate) fn consumer_pos(&self) -> &AtomicUsize {
        // SAFETY: page-aligned word at the start of the consumer page, mapped
        // read-write for the life of `self`, accessed only atomically.
        unsafe { &*self.map.as_ptr().cast::<AtomicUsize>() }
    }

    /// The producer position word.
    pub(crate) fn producer_pos(&self) -> &AtomicUsize {
        // SAFETY: as `consumer_pos`, at the start of the producer page.
        unsafe { &*self.map.as_ptr().add(self.page).cast::<AtomicUsize>() }
    }

    /// The `len` word of the header at ring position `pos` (any value; it is
    /// reduced modulo the size and rounded down to 8 bytes).
    pub(crate) fn header(&self, pos: usize) -> &AtomicU32 {
        let off = pos & (self.size - 1) & !(HDR_SZ - 1);
        // SAFETY: `off < size` and 8-aligned, inside the data area of a live
        // mapping; header words are accessed only atomically.
        unsafe { &*self.data().add(off).cast::<AtomicU32>() }
    }

    /// The `pg_off` word of the header at `pos`.
    pub(crate) fn header_pg_off(&self, pos: usize) -> &AtomicU32 {
        let off = (pos & (self.size - 1) & !(HDR_SZ - 1)) + 4;
        // SAFETY: as `header`, four bytes further (still inside the data area).
        unsafe { &*self.data().add(off).cast::<AtomicU32>() }
    }

    /// Copies `bytes` into the data area at ring offset `pos & (size - 1)`,
    /// continuing into the second copy (so wrapping is seamless). At most
    /// `size` bytes.
    ///
    /// Sound against a concurrent consumer only when the bytes belong to a
    /// record it cannot read: reserved (BUSY) and not committed, as every
    /// producer write is. Corruption tests that overwrite committed data do
    /// it with no reader running.
    pub(crate) fn write_data(&self, pos: usize, bytes: &[u8]) {
        assert!(bytes.len() <= self.size, "write longer than the ring");
        let off = pos & (self.size - 1);
        // SAFETY: `off < size` and `bytes.len() <= size`, so the range lies in
        // the `2 * size` bytes of the double mapping; `bytes` is ordinary
        // memory, so the ranges do not overlap. See above for races.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.data().add(off), bytes.len());
        }
    }

    /// Reads `out.len()` data bytes at ring offset `pos & (size - 1)`.
    /// For tests, with no producer writing these bytes concurrently.
    pub(crate) fn read_data(&self, pos: usize, out: &mut [u8]) {
        assert!(out.len() <= self.size, "read longer than the ring");
        let off = pos & (self.size - 1);
        // SAFETY: in bounds as in `write_data`; plain bytes, no references kept.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data().add(off), out.as_mut_ptr(), out.len());
        }
    }
}

impl FakeMemory {
    /// A consumer over this memory, starting at the published consumer
    /// position (`Err(pos)` if it is not 8-aligned). The consumer keeps an
    /// `Arc` of the memory, so it stays mapped as long as the consumer lives.
    pub(crate) fn consumer(
        self: &std::sync::Arc<FakeMemory>,
    ) -> Result<super::consumer::Consumer, usize> {
        let ring = self.raw();
        let mem: Box<dyn Send + std::fmt::Debug> = Box::new(std::sync::Arc::clone(self));
        // SAFETY: `mem` owns an `Arc` of the memory `ring` points into, so the
        // mappings outlive the consumer.
        unsafe { super::consumer::Consumer::new(ring, mem) }
    }
}
