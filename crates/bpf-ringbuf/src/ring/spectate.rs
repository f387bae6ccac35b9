//! Reads that never consume: **copy, then validate**.
//!
//! A spectator walks the records of a ring without ever writing
//! `consumer_pos`, so nothing stops the producer from reusing the space of a
//! record while the spectator reads it: a real consumer may have released
//! it, or the ring is in overwrite mode. A slice over such memory would be
//! unsound (the bytes change under a `&[u8]`), so this module never makes
//! one. It copies a record out with relaxed atomic loads, which may race
//! with the producer's stores, then loads `producer_pos` again and keeps the
//! copy only if the producer cannot have come round to the record's space.
//!
//! # Why the check is enough
//!
//! A record at ring position `a` lives at data offset `a & mask`. The
//! producer writes that offset again only for a position `q >= a + size`
//! (positions only grow, and it writes forwards: the first byte of the
//! record it reaches is `a` itself, the header). It writes at a position
//! only after reserving it: the header of a new record at `r` just before
//! its Release store of `producer_pos = r + stride`, the payload after it.
//! So a store we may have seen comes from a reservation whose new
//! `producer_pos` we have seen, or it is the header at the producer position
//! we load afterwards, `p2`: every such store is below `p2 + 8`. Our loads
//! of the record happen before our load of `p2` (an Acquire fence between
//! them orders the loads). If `p2 + 8 <= a + size`, that is
//! `p2 - a < size` for 8-aligned positions, no store at `a + size` or beyond
//! can have been seen, and the copy is what the producer committed at `a`
//! (its header's Acquire load, which saw the commit, made the payload
//! visible). Otherwise the record is *lapped*: counted, never returned.
//!
//! The header is validated the same way before its length is trusted: one
//! more load of `producer_pos` right after it. A lapped header means the
//! record boundaries are lost: the spectator starts again from a position
//! known to be a record boundary with intact data (`overwrite_pos` in
//! overwrite mode, `consumer_pos` otherwise) and reports the bytes skipped.
//!
//! The argument needs the producer's payload stores to become visible no
//! earlier than its Release store of `producer_pos` before them. The kernel
//! gives that ordering on x86-64 (TSO: stores become visible in program
//! order), where this crate is tested. On weakly ordered CPUs (arm64) a
//! Release store orders only the stores *before* it, so a store of a record
//! reserved at that very moment a full lap ahead could, in theory, be seen
//! before its `producer_pos`; there a record torn that way could pass.
//!
//! # Overwrite mode
//!
//! With `BPF_F_RB_OVERWRITE` (Linux 6.19+) the kernel keeps `overwrite_pos`,
//! the oldest record still intact, in the producer page's second word. It
//! stores it (`WRITE_ONCE`) before the Release store of `producer_pos`, so
//! it is loaded after an Acquire load of `producer_pos` (`rb->overwrite_pos`
//! read after `smp_load_acquire(&rb->producer_pos)`, as the kernel's comment
//! in `__bpf_ringbuf_reserve` says); it may then be newer than that
//! producer position, which is loaded again. On older kernels the word is
//! something else (`pending_pos`): it is read only for maps with the flag.

use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use super::abi::{header_len, record_stride, BUSY_BIT, DISCARD_BIT, HEADER_SIZE as HDR_SZ};
use super::cursor::Corruption;
use super::sync::{fence, AtomicUsize, Ordering};
use super::RawRing;
use crate::sys::mmap::Mmap;

/// Where a spectator starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StartAt {
    /// The published consumer position.
    Consumer,
    /// The oldest record still intact: `overwrite_pos` in overwrite mode,
    /// else the consumer position.
    Oldest,
    /// The producer position: only records reserved from now on.
    Now,
    /// A position given by the caller (a record boundary it saw before).
    At(usize),
}

/// What one [`SpectateCursor::step`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Look {
    /// A committed record of `len` bytes at `pos`, copied into the buffer
    /// and validated.
    Record { pos: usize, len: usize },
    /// A discarded record, skipped.
    Discard,
    /// The record at the cursor is reserved, not committed: stop here.
    Busy,
    /// The cursor reached the producer position.
    Empty,
    /// The producer overtook the cursor: `bytes` of ring were skipped, at
    /// `pos`. `records` is the count of records in them when known (one
    /// record whose header was valid but whose copy was not), `None` when
    /// the header itself was lapped and the cursor started again from a
    /// boundary further on.
    Gap {
        pos: usize,
        bytes: usize,
        records: Option<u64>,
    },
}

/// Where a step is, for the test hook of [`SpectateCursor::step_hooked`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Point {
    /// The header was loaded, not yet validated.
    AfterHeader,
    /// The payload was copied, not yet validated.
    AfterCopy,
}

/// What a [`Spectator`](crate::Spectator) has seen since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpectatorStats {
    /// Records copied and returned intact.
    pub records: u64,
    /// Their payload bytes.
    pub bytes: u64,
    /// Discarded records skipped.
    pub discarded: u64,
    /// Records whose header was read but whose copy the producer overwrote.
    pub lapped_records: u64,
    /// Ring bytes lost to the producer in all (headers and padding
    /// included): the records above, and the spans skipped after a lapped
    /// header.
    pub lapped_bytes: u64,
    /// Times the producer overwrote the header at the spectator's position,
    /// so it started again from the oldest boundary (a [`Gap`](crate::Gap) with
    /// `records: None`).
    pub resyncs: u64,
}

/// A read-only cursor over a ring: never writes `consumer_pos`, never lends
/// a slice. See the [module docs](self).
#[derive(Debug)]
pub(crate) struct SpectateCursor {
    ring: RawRing,
    /// The `overwrite_pos` word, in overwrite mode only.
    overwrite: Option<NonNull<AtomicUsize>>,
    pos: usize,
    /// The last producer position loaded (a cache: `pos` is behind or at it).
    prod: usize,
    counters: SpectatorStats,
    /// Owns the memory `ring` points into.
    _mem: Box<dyn Send + std::fmt::Debug>,
}

// SAFETY: the pointers target memory owned by `_mem` (mappings or a shared
// fake ring), not tied to a thread; `&mut self` serialises every use.
unsafe impl Send for SpectateCursor {}
// SAFETY: `&self` methods only load atomically (positions).
unsafe impl Sync for SpectateCursor {}

/// Attempts to find a consistent boundary before giving up: positions that
/// keep moving faster than two loads apart, or a consumer position that is
/// not one, are reported as corrupt after this many tries.
const RESYNC_TRIES: u32 = 64;

impl SpectateCursor {
    /// A cursor at `start`.
    ///
    /// # Safety
    ///
    /// `ring` was built with [`RawRing::new`]'s promises, except that this
    /// cursor never writes `consumer_pos` (it may be mapped read-only);
    /// `mem` owns (keeps mapped) that memory; `overwrite`, given only for a
    /// ring in overwrite mode, points to its `overwrite_pos` word (aligned,
    /// inside memory `mem` owns, accessed only atomically).
    pub(crate) unsafe fn new(
        ring: RawRing,
        overwrite: Option<NonNull<usize>>,
        mem: Box<dyn Send + std::fmt::Debug>,
        start: StartAt,
    ) -> Result<SpectateCursor, Corruption> {
        let mut cur = SpectateCursor {
            ring,
            overwrite: overwrite.map(NonNull::cast),
            pos: 0,
            prod: 0,
            counters: SpectatorStats::default(),
            _mem: mem,
        };
        cur.seek(start)?;
        Ok(cur)
    }

    /// A cursor over the kernel's mappings of a ring buffer of `size` data
    /// bytes (see [`RawRing::from_kernel`]), both read-only, in overwrite
    /// mode if the map has `BPF_F_RB_OVERWRITE`. Takes ownership of both.
    pub(crate) fn from_kernel_mappings(
        consumer: Mmap,
        producer: Mmap,
        page: usize,
        size: usize,
        overwrite: bool,
        start: StartAt,
    ) -> Result<SpectateCursor, Corruption> {
        // SAFETY: the mappings are the caller's ring buffer map's (mapped
        // by `Spectator::new` with this layout) and move into the cursor
        // below, which owns them. The cursor never writes consumer_pos, so a
        // read-only consumer page is fine. The overwrite word, the producer
        // page's second word, lies inside the mapped producer page (a whole
        // page, asserted by `from_kernel`), aligned; it is given only for a
        // map with the flag (on older kernels that word is something else).
        unsafe {
            let ring = RawRing::from_kernel(&consumer, &producer, page, size);
            let over = overwrite.then(|| producer.ptr().cast::<usize>().add(1));
            SpectateCursor::new(ring, over, Box::new((consumer, producer)), start)
        }
    }

    /// Moves the cursor to `start`.
    pub(crate) fn seek(&mut self, start: StartAt) -> Result<(), Corruption> {
        let pos = match start {
            StartAt::Consumer => {
                let c = self.ring.load_consumer();
                if c % HDR_SZ != 0 {
                    return Err(Corruption::MisalignedConsumer { pos: c });
                }
                c
            }
            StartAt::Oldest => self.boundary()?.0,
            StartAt::Now => self.ring.load_producer(),
            StartAt::At(p) => {
                if p % HDR_SZ != 0 {
                    return Err(Corruption::MisalignedConsumer { pos: p });
                }
                p
            }
        };
        self.pos = pos;
        self.prod = pos;
        Ok(())
    }

    /// The cursor.
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn counters(&self) -> &SpectatorStats {
        &self.counters
    }

    pub(crate) fn raw(&self) -> &RawRing {
        &self.ring
    }

    /// `overwrite_pos`, in overwrite mode (Relaxed and an Acquire fence: the
    /// producer page is read-only; see the module docs for its order).
    pub(crate) fn load_overwrite(&self) -> Option<usize> {
        self.overwrite.map(|w| {
            // SAFETY: `new`'s contract: aligned, mapped, atomic only.
            let v = unsafe { w.as_ref() }.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            v
        })
    }

    /// The oldest position known to be a record boundary with intact data
    /// after it, and a producer position loaded with it:
    /// `(overwrite_pos, producer_pos)` in overwrite mode, else
    /// `(consumer_pos, producer_pos)`, consistent (the first at most
    /// `size - 8` behind the second, 8-aligned).
    fn boundary(&self) -> Result<(usize, usize), Corruption> {
        let size = self.ring.size();
        let mut last = (0, 0);
        for _ in 0..RESYNC_TRIES {
            let (b, p) = if self.overwrite.is_some() {
                // Acquire first: pairs with the Release store of producer_pos
                // in __bpf_ringbuf_reserve, which publishes the overwrite_pos
                // stored before it; overwrite_pos is then at least that new.
                let p = self.ring.load_producer();
                let o = self.load_overwrite().unwrap_or(p);
                (o, p)
            } else {
                // The consumer position first: the producer position loaded
                // after it is at least as new, and a consumer is never more
                // than `size - 8` behind the producer.
                let c = self.ring.load_consumer();
                (c, self.ring.load_producer())
            };
            if p.wrapping_sub(b) < size && b % HDR_SZ == 0 && p % HDR_SZ == 0 {
                return Ok((b, p));
            }
            last = (b, p);
            std::hint::spin_loop();
        }
        Err(Corruption::Producer {
            pos: last.0,
            producer: last.1,
            size,
        })
    }

    /// One step: the next record copied into `buf` and validated, a discard
    /// skipped, a gap, or a stop (BUSY, empty).
    #[inline]
    pub(crate) fn step(&mut self, buf: &mut Vec<u8>) -> Result<Look, Corruption> {
        self.step_hooked(buf, |_| {})
    }

    /// [`step`](Self::step), calling `hook` at the two points where a
    /// producer running meanwhile would lap the cursor (tests drive the
    /// producer from it).
    #[inline(always)]
    pub(crate) fn step_hooked(
        &mut self,
        buf: &mut Vec<u8>,
        mut hook: impl FnMut(Point),
    ) -> Result<Look, Corruption> {
        let size = self.ring.size();
        let pos = self.pos;
        let mut avail = self.prod.wrapping_sub(pos);
        if avail == 0 {
            self.prod = self.ring.load_producer();
            avail = self.prod.wrapping_sub(pos);
            if avail == 0 {
                return Ok(Look::Empty);
            }
        }
        if avail % HDR_SZ != 0 || avail > isize::MAX as usize {
            return Err(Corruption::Producer {
                pos,
                producer: self.prod,
                size,
            });
        }
        if avail >= size {
            return self.resync();
        }
        // One Acquire load of the header (pairs with the commit's xchg).
        let (word, payload) = self.ring.load_header(pos);
        hook(Point::AfterHeader);
        // Validate the header before trusting its length: the producer
        // position loaded after it (Acquire: the header load is ordered
        // before it by load_header's Acquire fence).
        let ph = self.ring.load_producer();
        if ph.wrapping_sub(pos) >= size {
            return self.resync();
        }
        self.prod = ph;
        if word & BUSY_BIT != 0 {
            return Ok(Look::Busy);
        }
        let len = header_len(word);
        let stride = record_stride(len);
        if stride > avail {
            // A valid header (not lapped) claiming more than was produced.
            return Err(Corruption::Header {
                pos,
                len,
                available: avail,
            });
        }
        if word & DISCARD_BIT != 0 {
            self.pos = pos.wrapping_add(stride);
            self.counters.discarded += 1;
            return Ok(Look::Discard);
        }
        // SAFETY: `stride <= avail <= size`, so the payload and its padding
        // to 8 lie in the `2 * size` data bytes from `pos & mask`; the
        // payload starts 8-aligned.
        unsafe { copy_racy(payload.0, len, buf) };
        hook(Point::AfterCopy);
        // Orders the copy's loads before the validating load (see the module
        // docs): a store we saw implies a producer position we see.
        fence(Ordering::Acquire);
        let p2 = self.ring.load_producer();
        self.prod = p2;
        self.pos = pos.wrapping_add(stride);
        if p2.wrapping_sub(pos) >= size {
            // The header was valid, the payload maybe not: one record lost.
            self.counters.lapped_records += 1;
            self.counters.lapped_bytes += stride as u64;
            return Ok(Look::Gap {
                pos,
                bytes: stride,
                records: Some(1),
            });
        }
        self.counters.records += 1;
        self.counters.bytes += len as u64;
        Ok(Look::Record { pos, len })
    }

    /// The cursor was lapped at a header: start again from the oldest
    /// boundary, counting the bytes skipped.
    #[cold]
    fn resync(&mut self) -> Result<Look, Corruption> {
        let (b, p) = self.boundary()?;
        let pos = self.pos;
        let bytes = b.wrapping_sub(pos);
        if bytes == 0 || bytes > isize::MAX as usize {
            // Not ahead of us: the positions moved backwards.
            return Err(Corruption::Producer {
                pos,
                producer: p,
                size: self.ring.size(),
            });
        }
        self.pos = b;
        self.prod = p;
        self.counters.lapped_bytes += bytes as u64;
        self.counters.resyncs += 1;
        Ok(Look::Gap {
            pos,
            bytes,
            records: None,
        })
    }
}

/// Copies `len` bytes from `src` into `buf` (replacing its contents) with
/// relaxed atomic 8-byte loads: allowed to race with the producer's stores
/// (on read-only memory too). Reads whole words, so up to 7 bytes past `len`.
///
/// # Safety
///
/// `src` is 8-aligned and `round_up(len, 8)` bytes from it are mapped.
#[inline]
unsafe fn copy_racy(src: *const u8, len: usize, buf: &mut Vec<u8>) {
    let words = len.div_ceil(8);
    buf.clear();
    buf.reserve(words * 8);
    let dst = buf.as_mut_ptr();
    let load = |i: usize| {
        // SAFETY: `i < words`: in bounds and aligned (caller's promise);
        // `AtomicU64` has the size and alignment of a `u64` on the 64-bit
        // targets we build for.
        unsafe { &*src.add(8 * i).cast::<AtomicU64>() }.load(std::sync::atomic::Ordering::Relaxed)
    };
    // Four words per step: independent loads the CPU overlaps (atomic
    // loads are not merged into vector loads by the compiler).
    let mut i = 0;
    while i + 4 <= words {
        let w = [load(i), load(i + 1), load(i + 2), load(i + 3)];
        // SAFETY: `buf` has capacity for `words * 8` bytes; `i + 4 <= words`.
        unsafe { dst.add(8 * i).cast::<[u64; 4]>().write_unaligned(w) };
        i += 4;
    }
    while i < words {
        // SAFETY: as above, `i < words`.
        unsafe { dst.add(8 * i).cast::<u64>().write_unaligned(load(i)) };
        i += 1;
    }
    // SAFETY: the first `len <= words * 8` bytes were written above.
    unsafe { buf.set_len(len) };
}

#[cfg(test)]
#[path = "spectate_tests.rs"]
mod tests;
