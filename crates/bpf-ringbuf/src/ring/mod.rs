//! The ring protocol over raw memory: header decoding, the cursor step,
//! publishing the consumer position, and the wakeup fence.
//!
//! This layer never sees a file descriptor. It runs over the kernel's
//! mapping in production and over ordinary memory in unit tests, under Miri
//! and (for [`wakeup`]) under loom.
//!
//! # Safety
//!
//! A [`RawRing`] is a bundle of raw pointers. [`RawRing::new`] is `unsafe`: its
//! caller promises the memory layout (below) and that the memory outlives every
//! use. After that, the only remaining `unsafe` is building a `&[u8]` over one
//! record, which is sound only while the record is committed by the producer
//! and not yet released by us; the reader enforces that with lifetimes.
//!
//! # Layout
//!
//! ```text
//! consumer page   [consumer_pos: unsigned long] ...           (we write it)
//! producer page   [producer_pos: unsigned long] ...           (kernel writes it)
//! data            [size bytes][the same size bytes again]     (kernel writes it)
//! ```
//!
//! Positions only grow. A record sits at `data + (pos & (size - 1))`: an
//! 8-byte header `{ u32 len; u32 pg_off }`, then `len` bytes. Bit 31 of `len`
//! is BUSY (reserved, not committed), bit 30 is DISCARD. The next header is at
//! `pos + round_up(len + 8, 8)`. Because the data pages are mapped twice in a
//! row, a record that wraps past the end is still contiguous in memory.
//!
//! # Orderings, and why there is a fence before sleeping
//!
//! The producer (the kernel's `__bpf_ringbuf_reserve` and `bpf_ringbuf_commit`):
//!
//! 1. writes `len | BUSY` into the header, then `smp_store_release(&producer_pos)`;
//! 2. fills the record;
//! 3. `xchg(&hdr->len, len)` to clear BUSY (or set DISCARD): a full barrier;
//! 4. reads `consumer_pos`, and wakes the epoll waiters **only if** it equals the
//!    position of the record just committed, or if the program asked for
//!    `BPF_RB_FORCE_WAKEUP`. With `BPF_RB_NO_WAKEUP` it never wakes anyone.
//!
//! The consumer:
//!
//! * loads `producer_pos` with **Acquire** (pairs with 1), once per batch;
//! * loads each header's `len` with **Acquire** (pairs with 3), so the bytes
//!   filled in step 2 are visible; a plain load gave corrupt samples on arm64;
//! * stores `consumer_pos` with **Release** once it is done with every byte
//!   before it; the kernel may overwrite those bytes from then on.
//!
//! Step 4 makes wakeups adaptive: a producer only pays for a wakeup when the
//! consumer had caught up. So before a consumer sleeps it must (a) publish its
//! position, and (b) check once more that the ring is empty. Between (a) and
//! (b) there must be a **`SeqCst` fence**. Without it the CPU may satisfy the
//! load in (b) before the store in (a) is visible (store buffering), and this
//! interleaving loses the wakeup:
//!
//! ```text
//! consumer                          producer
//! load producer_pos == pos (stale)
//!                                   reserve at pos, commit (xchg)
//!                                   load consumer_pos: old value != pos -> no wakeup
//! store consumer_pos = pos (visible now)
//! sleep ............................ forever, with a record in the ring
//! ```
//!
//! With the fence (which pairs with the full barrier of the kernel's `xchg`
//! in step 3), either the consumer's re-check sees the new `producer_pos`, or
//! the producer's step 4 sees the published `consumer_pos` and wakes it. This
//! is what [`wakeup::publish_and_check_empty`] does, and what the loom model
//! in `tests/loom.rs` checks. Level-triggered epoll hides the bug often, but
//! edge-triggered epoll (tokio, mio) hangs without the fence.

pub mod abi;
pub(crate) mod cursor;
#[cfg(any(test, feature = "testing"))]
pub(crate) mod producer;
pub(crate) mod spectate;
pub(crate) mod sync;
pub(crate) mod wakeup;

use std::ptr::NonNull;

use abi::{header_len, record_stride, BUSY_BIT, DISCARD_BIT, HEADER_SIZE as HDR_SZ};
use sync::{fence, AtomicU32, AtomicUsize, Ordering};

/// What sits at a ring position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Peek {
    /// A committed record of `len` payload bytes; the next header is at `next`.
    Record { len: usize, next: usize },
    /// A discarded record: skip to `next`, delivering nothing.
    Discard { next: usize },
    /// Reserved but not yet committed: stop here.
    Busy,
    /// The header claims more bytes than have been produced.
    Corrupt { len: usize, available: usize },
}

/// Raw pointers into a ring buffer's memory. `Copy`; owns nothing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawRing {
    consumer_pos: NonNull<AtomicUsize>,
    producer_pos: NonNull<AtomicUsize>,
    data: NonNull<u8>,
    mask: usize,
}

impl RawRing {
    /// # Safety
    ///
    /// * `consumer_pos` and `producer_pos` point to aligned, initialised
    ///   `usize` words that stay mapped while this `RawRing` (or a copy) is
    ///   used; only atomics access them. We may write `consumer_pos`.
    /// * `data` points to `2 * size` readable bytes, the `size` data bytes
    ///   mapped twice in a row (or the same contents duplicated), 8-aligned.
    /// * `size` is a power of two, at least 8.
    pub(crate) unsafe fn new(
        consumer_pos: NonNull<usize>,
        producer_pos: NonNull<usize>,
        data: NonNull<u8>,
        size: usize,
    ) -> RawRing {
        debug_assert!(size.is_power_of_two() && size >= HDR_SZ);
        debug_assert_eq!(data.as_ptr() as usize % HDR_SZ, 0);
        RawRing {
            consumer_pos: consumer_pos.cast(),
            producer_pos: producer_pos.cast(),
            data,
            mask: size - 1,
        }
    }

    /// A ring over the kernel's two mappings of a `BPF_MAP_TYPE_RINGBUF` (or
    /// `USER_RINGBUF`) map of `size` data bytes: `consumer`, the consumer page
    /// (file offset 0), and `producer`, the producer page followed by the data
    /// pages mapped twice (file offset one page, `page + 2 * size` bytes).
    ///
    /// # Safety
    ///
    /// The mappings are of such a map, with that size, and outlive every use
    /// of the result (and of its copies).
    pub(crate) unsafe fn from_kernel(
        consumer: &crate::sys::mmap::Mmap,
        producer: &crate::sys::mmap::Mmap,
        page: usize,
        size: usize,
    ) -> RawRing {
        assert!(abi::is_valid_ring_size(size, page));
        assert!(consumer.len() >= std::mem::size_of::<usize>());
        assert_eq!(producer.len(), page + 2 * size);
        // SAFETY: the kernel's layout: consumer_pos at the start of the
        // page-aligned consumer page, producer_pos at the start of the
        // producer page, then `2 * size` data bytes (asserted length),
        // page-aligned; `size` is a power of two. Lifetime: the caller's promise.
        unsafe {
            RawRing::new(
                consumer.ptr().cast(),
                producer.ptr().cast(),
                producer.ptr().add(page),
                size,
            )
        }
    }

    /// A ring over a memfd double mapping (the fake ring).
    ///
    /// # Safety
    ///
    /// `mem` outlives every use of the result (and of its copies).
    #[cfg(feature = "testing")]
    pub(crate) unsafe fn from_memfd(mem: &crate::sys::mmap::MemfdRing) -> RawRing {
        // SAFETY: MemfdRing has the kernel's layout (page-aligned, zero-filled
        // position words, `2 * size` data bytes mapped twice, a valid size).
        // Lifetime: the caller's promise.
        unsafe {
            RawRing::new(
                mem.consumer_page().cast(),
                mem.producer_page().cast(),
                mem.data(),
                mem.size(),
            )
        }
    }

    /// The data size in bytes.
    #[inline]
    pub(crate) fn size(&self) -> usize {
        self.mask + 1
    }

    #[inline]
    fn consumer_atomic(&self) -> &AtomicUsize {
        // SAFETY: `new`'s contract: aligned, mapped, accessed only atomically.
        unsafe { self.consumer_pos.as_ref() }
    }

    #[inline]
    fn producer_atomic(&self) -> &AtomicUsize {
        // SAFETY: `new`'s contract: aligned, mapped, accessed only atomically.
        unsafe { self.producer_pos.as_ref() }
    }

    /// Loads `producer_pos` (an Acquire load, as a relaxed load and a fence).
    #[inline]
    pub(crate) fn load_producer(&self) -> usize {
        // Relaxed, then an Acquire fence: the producer page is mapped
        // read-only, where std allows only relaxed atomic loads (of at most
        // 8 bytes on the 64-bit targets this crate builds for). Pairs with
        // the kernel's smp_store_release(&rb->producer_pos) in
        // __bpf_ringbuf_reserve, so every header up to it is visible (at
        // least as BUSY).
        let prod = self.producer_atomic().load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        prod
    }

    /// The 32-bit word at data offset `pos & mask`, rounded down to 4 bytes:
    /// a header's `len` (or, 4 bytes on, its `pg_off`).
    #[cfg(any(test, feature = "testing"))]
    #[inline]
    fn header_atomic(&self, pos: usize) -> &AtomicU32 {
        let off = pos & self.mask & !3;
        // SAFETY: `off < size`, inside the data area (`new`'s contract), and
        // 4-aligned (`data` is 8-aligned). Header words are accessed only
        // atomically while a record lives there.
        unsafe { &*self.data.as_ptr().add(off).cast::<AtomicU32>() }
    }

    /// The data byte at ring position `pos`, through a relaxed atomic load
    /// (allowed to race with a writer, and on read-only memory).
    #[cfg(feature = "testing")]
    #[inline]
    fn data_byte(&self, pos: usize) -> u8 {
        let off = pos & self.mask;
        // SAFETY: `off < size`, inside the data area; a relaxed byte load is
        // valid on any mapped memory, read-only included.
        let b = unsafe {
            &*self
                .data
                .as_ptr()
                .add(off)
                .cast::<std::sync::atomic::AtomicU8>()
        };
        b.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Loads `consumer_pos` as published (by us or by an earlier reader).
    #[inline]
    pub(crate) fn load_consumer(&self) -> usize {
        // Acquire: pairs with the Release store of whichever consumer published
        // it last (possibly an earlier reader of a pinned ring).
        self.consumer_atomic().load(Ordering::Acquire)
    }

    /// Publishes `pos`: the kernel may reuse every byte before it.
    #[inline]
    pub(crate) fn publish(&self, pos: usize) {
        // Release: pairs with the kernel's smp_load_acquire(&rb->consumer_pos)
        // in __bpf_ringbuf_reserve; our reads of the released records happen
        // before the kernel overwrites them.
        self.consumer_atomic().store(pos, Ordering::Release);
    }

    /// Publishes `pos`, fences, and re-checks `producer_pos`; `true` means the
    /// ring is empty and it is safe to sleep. See the [module docs](self).
    #[inline]
    pub(crate) fn publish_and_check_empty(&self, pos: usize) -> bool {
        wakeup::publish_and_check_empty::<true>(self.consumer_atomic(), self.producer_atomic(), pos)
    }

    /// Publishes `pos` and issues the wakeup fence, before re-reading a BUSY
    /// header at `pos` and sleeping. See [`wakeup::publish_and_fence`].
    #[inline]
    pub(crate) fn publish_and_fence(&self, pos: usize) {
        wakeup::publish_and_fence(self.consumer_atomic(), pos)
    }

    /// Checks a freshly loaded producer position against our cursor: at most
    /// `size` bytes can be outstanding, positions never go backwards, and
    /// they stay 8-aligned. `false` if `prod` is impossible.
    #[inline]
    pub(crate) fn check_producer(&self, pos: usize, prod: usize) -> bool {
        let avail = prod.wrapping_sub(pos);
        avail <= self.size() && avail % HDR_SZ == 0
    }

    /// Decodes the header at `pos`, given a producer position `prod` already
    /// checked with [`check_producer`](Self::check_producer) and `pos != prod`.
    ///
    /// One Acquire load of the header; no stores.
    #[inline(always)]
    pub(crate) fn peek(&self, pos: usize, prod: usize) -> Peek {
        self.peek_at(pos, prod).0
    }

    /// [`peek`](Self::peek), also returning where the record's payload starts.
    ///
    /// The address is computed before the header's Acquire load, so the hot
    /// loops need not reload the ring's base and mask after it (an Acquire
    /// load orders every later memory access, our own fields included).
    #[inline(always)]
    pub(crate) fn peek_at(&self, pos: usize, prod: usize) -> (Peek, RecordPtr) {
        self.peek_within(pos, prod.wrapping_sub(pos))
    }

    /// [`peek_at`](Self::peek_at), given the bytes produced past `pos`
    /// (`available = producer - pos`, checked by
    /// [`check_producer`](Self::check_producer), non-zero) instead of the
    /// producer position: the hot loops keep that count in a register, and
    /// one subtraction per record then both advances it and tells the end.
    #[inline(always)]
    pub(crate) fn peek_within(&self, pos: usize, available: usize) -> (Peek, RecordPtr) {
        let (len, payload) = self.load_header(pos);
        if len & BUSY_BIT != 0 {
            return (Peek::Busy, payload);
        }
        let n = header_len(len);
        let stride = record_stride(n);
        if stride > available {
            return (Peek::Corrupt { len: n, available }, payload);
        }
        let next = pos.wrapping_add(stride);
        if len & DISCARD_BIT != 0 {
            (Peek::Discard { next }, payload)
        } else {
            (Peek::Record { len: n, next }, payload)
        }
    }

    /// The per-record fast case of [`peek_within`](Self::peek_within), same
    /// arguments: `Some((len, next, payload))` if the header at `pos` is a
    /// committed record that is not discarded and fits in `available`;
    /// `None` for anything else (BUSY, discarded, corrupt), which
    /// `peek_within` then decodes. One test covers both flag bits, and with
    /// both clear the header word is the length.
    #[inline(always)]
    pub(crate) fn peek_record(
        &self,
        pos: usize,
        available: usize,
    ) -> Option<(usize, usize, RecordPtr)> {
        let (len, payload) = self.load_header(pos);
        if len & (BUSY_BIT | DISCARD_BIT) != 0 {
            return None;
        }
        let n = header_len(len);
        let stride = record_stride(n);
        if stride > available {
            return None;
        }
        Some((n, pos.wrapping_add(stride), payload))
    }

    /// The header word at `pos` (one Acquire load) and where the payload
    /// would start.
    ///
    /// The address is computed before the Acquire, so the hot loops need not
    /// reload the ring's base and mask after it.
    #[inline(always)]
    fn load_header(&self, pos: usize) -> (u32, RecordPtr) {
        // SAFETY: `pos & mask < size`, and `data` has `2 * size` bytes, so the
        // header (4 bytes) and the payload start (8 bytes in) are in bounds.
        // `pos` is a multiple of 8 (positions start 8-aligned, checked by the
        // consumer, and advance by multiples of 8) and `data` is 8-aligned, so
        // the `AtomicU32` is aligned.
        let base = unsafe { self.data.as_ptr().add(pos & self.mask) };
        // SAFETY: as above.
        let hdr = unsafe { &*(base as *const AtomicU32) };
        // SAFETY: as above: at most `size + 8 <= 2 * size` bytes in.
        let payload = RecordPtr(unsafe { base.add(HDR_SZ) });
        // Relaxed, then an Acquire fence (read-only mapping, as in
        // `load_producer`): pairs with the kernel's xchg(&hdr->len, ...) in
        // bpf_ringbuf_commit, which clears BUSY after the record was filled.
        let len = hdr.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        (len, payload)
    }

    /// The payload of the record at `pos`.
    ///
    /// # Safety
    ///
    /// As for [`RecordPtr::slice`], with the pointer of `peek_at(pos, _)`.
    #[cfg(test)]
    pub(crate) unsafe fn record<'a>(&self, pos: usize, len: usize) -> &'a [u8] {
        let (_, ptr) = self.peek_at(pos, pos.wrapping_add(self.size()));
        // SAFETY: the caller's promise.
        unsafe { ptr.slice(len) }
    }
}

/// Where a record's payload starts, as found by [`RawRing::peek_at`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordPtr(*const u8);

impl RecordPtr {
    /// The payload as a slice.
    ///
    /// # Safety
    ///
    /// `peek_at` or `peek_within` returned `Peek::Record { len, .. }`, or
    /// `peek_record` returned `Some((len, ..))`, with this pointer and this `len`, and the caller ties `'a` to a borrow that ends before the
    /// consumer position is published past the record (after which the
    /// kernel may overwrite the bytes) and before the memory is unmapped.
    #[inline(always)]
    pub(crate) unsafe fn slice<'a>(self, len: usize) -> &'a [u8] {
        // SAFETY: `peek_*` checked `round_up(len + 8, 8) <= producer - pos <= size`
        // and `pos & mask < size`, so `[pos & mask + 8, .. + len)` lies inside the
        // `2 * size` bytes of the double mapping. The bytes are committed and not
        // released, so no one writes them while `'a` lasts (caller's promise).
        unsafe { std::slice::from_raw_parts(self.0, len) }
    }
}

#[cfg(test)]
mod spsc_tests;
#[cfg(test)]
pub(crate) mod tests;
