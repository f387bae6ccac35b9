//! The producer's half of the protocol, over raw memory: the kernel's
//! `__bpf_ringbuf_reserve` and `bpf_ringbuf_commit`, step for step, and
//! libbpf's `user_ring_buffer__reserve`/`__submit` for a
//! `BPF_MAP_TYPE_USER_RINGBUF`.
//!
//! One copy of the sequence serves the fake ring (`testing::FakeRing`), the
//! ring layer's unit tests (over plain memory, under Miri) and the userspace
//! producer of a user ring buffer ([`UserProducer`], behind
//! `crate::UserRingBuf`). The loom model (`tests/loom.rs`) keeps its own tiny
//! copy, so that it stays independent of the code it checks.
//!
//! 1. **Reserve** (one reserver at a time: the kernel's `rb->spinlock`, a
//!    [`Mutex`] in [`RawProducer`], the type system in [`UserProducer`],
//!    which is not `Sync`): check the free space (the rules differ, see each
//!    type); write `len | BUSY` into the header, then
//!    `smp_store_release(&producer_pos)` ([`ProducerMem::publish_reservation`],
//!    shared by both).
//! 2. **Fill** the payload: no consumer reads it while BUSY is set.
//! 3. **Commit**: for a kernel ring, `xchg(&hdr->len, len [| DISCARD])`, a
//!    full barrier, then read `consumer_pos`: the consumer is woken only if
//!    it equals the record's position (see [`wakeup::commit_needs_wakeup`]).
//!    For a user ring, a Release store of the header (the kernel drains when
//!    its program runs; nobody is woken).
//!
//! **Overwrite mode** (`BPF_F_RB_OVERWRITE`, Linux 6.19's
//! `__bpf_ringbuf_reserve`): the reservation ignores `consumer_pos` and is
//! refused only when it would overrun the oldest uncommitted record
//! (`new_prod - pending_pos > size - 1`). When the new record does not fit
//! behind `overwrite_pos` (the oldest record still intact, on the producer
//! page right after `producer_pos`), `overwrite_pos` moves forward whole
//! records at a time until it does (`new_prod - overwrite_pos <= size - 1`),
//! and is stored (`WRITE_ONCE`) before the Release store of `producer_pos`
//! that publishes both.
//!
//! Payload bytes are written with relaxed atomic stores: a spectator
//! (`ring::spectate`) may read them while they are rewritten, and a race
//! between atomic accesses is allowed where one with a plain write is not.
//!
//! # Safety
//!
//! A producer is built over memory its creator promises is writable
//! (producer page and data) and where it is the only producer. A
//! [`Reserved`] token is the only way to write payload bytes, it exists once
//! per reserved record, and it borrows the producer, so two writers never
//! touch the same bytes. The raw overwrite functions for corruption tests are
//! `unsafe`: their caller promises that no consumer reads the ring meanwhile.

use std::cell::Cell;
#[cfg(any(test, feature = "testing"))]
use std::ptr::NonNull;
#[cfg(any(test, feature = "testing"))]
use std::sync::Mutex;

#[cfg(any(test, feature = "testing"))]
use super::abi::header_len;
#[cfg(any(test, feature = "testing"))]
use super::abi::MAX_RECORD_LEN;
use super::abi::{record_stride, BUSY_BIT, DISCARD_BIT, HEADER_SIZE};
#[cfg(any(test, feature = "testing"))]
use super::sync::AtomicUsize;
use super::sync::{fence, AtomicU32, Ordering};
#[cfg(any(test, feature = "testing"))]
use super::wakeup;
use super::RawRing;

/// Why a reservation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReserveError {
    /// The record can never fit: longer than a header can say, or than the
    /// ring holds (the kernel's `E2BIG` for a user ring buffer).
    TooBig,
    /// Not enough free space now (the kernel's NULL, or `ENOSPC`).
    Full,
    /// The published consumer position is impossible seen from the
    /// producer's (more than the ring size behind it, ahead of it, or not
    /// 8-aligned): nothing is reserved.
    Corrupt {
        /// The consumer position found.
        consumer: usize,
        /// The producer's position.
        producer: usize,
    },
}

/// The memory a producer writes: a ring, and whether its data area's second
/// copy is separate memory (plain-memory tests), in which case every payload
/// byte is written to both copies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProducerMem {
    ring: RawRing,
    mirror: bool,
}

// SAFETY: the pointers target shared memory that outlives the producer
// (`RawProducer::new` / `UserProducer::new`'s contract) and is not tied to a
// thread. Positions and headers are accessed only atomically; the one
// function that must not run concurrently (`publish_reservation`) is
// `unsafe`, and payload bytes are written only through a `Reserved` (one per
// record, borrowed mutably to write) or by `unsafe` functions.
unsafe impl Send for ProducerMem {}
// SAFETY: as above.
unsafe impl Sync for ProducerMem {}

/// A producer over a ring's memory, with the kernel's rules for a
/// `BPF_MAP_TYPE_RINGBUF` (the fake ring, unit tests): reservations from any
/// thread, serialised by a lock, as `rb->spinlock`.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug)]
pub(crate) struct RawProducer {
    mem: ProducerMem,
    /// The kernel's `rb->spinlock`, guarding `rb->pending_pos`: every record
    /// before it is committed.
    pending: Mutex<usize>,
    /// Overwrite mode: the `overwrite_pos` word (the producer page's second
    /// word), written only under `pending`'s lock.
    overwrite: Option<NonNull<AtomicUsize>>,
}

// SAFETY: as `ProducerMem`'s; the `overwrite` word is in the same shared
// memory, accessed only atomically and written only under `pending`'s lock.
#[cfg(any(test, feature = "testing"))]
unsafe impl Send for RawProducer {}
// SAFETY: as above.
#[cfg(any(test, feature = "testing"))]
unsafe impl Sync for RawProducer {}

/// A reserved record of a [`RawProducer`]: the right to write its payload,
/// and the duty to commit it. Not `Clone`: one token per record.
#[cfg(any(test, feature = "testing"))]
#[derive(Debug)]
pub(crate) struct Reserved<'p> {
    mem: &'p ProducerMem,
    pos: usize,
    len: usize,
}

impl ProducerMem {
    /// The `len` word of the header at `pos`.
    fn header(&self, pos: usize) -> &AtomicU32 {
        self.ring.header_atomic(pos)
    }

    /// The `pg_off` word of the header at `pos`.
    fn pg_off(&self, pos: usize) -> &AtomicU32 {
        self.ring.header_atomic(pos.wrapping_add(4))
    }

    /// Step 1 of a reservation, once the space is checked: writes
    /// `len | BUSY` and `pg_off` into the header at `prod`, then publishes
    /// `new_prod` as the producer position (Release). `pg_off` is for the
    /// kernel's own records only: a user ring's drain never reads it (libbpf
    /// zeroes it; we leave it).
    ///
    /// # Safety
    ///
    /// The caller is the only one reserving in this memory now, `prod` is
    /// the current producer position, and `[prod, new_prod)` is free: the
    /// consumer is done with it and no [`Reserved`] covers it.
    #[inline(always)]
    unsafe fn publish_reservation(
        &self,
        prod: usize,
        new_prod: usize,
        len: usize,
        pg_off: Option<u32>,
    ) {
        // Relaxed: published by the Release store of producer_pos below.
        self.header(prod)
            .store(len as u32 | BUSY_BIT, Ordering::Relaxed);
        if let Some(pg_off) = pg_off {
            self.pg_off(prod).store(pg_off, Ordering::Relaxed);
        }
        // Release: as smp_store_release(&rb->producer_pos) in
        // __bpf_ringbuf_reserve, and in libbpf's user_ring_buffer__reserve;
        // pairs with the consumer's Acquire load (RawRing::load_producer, the
        // kernel's smp_load_acquire(&rb->producer_pos) in
        // __bpf_user_ringbuf_peek), so the BUSY header is visible with it.
        self.ring
            .producer_atomic()
            .store(new_prod, Ordering::Release);
    }

    /// Copies `bytes` to the data area at `pos` (modulo the size), wrapping
    /// seamlessly, in both copies when mirrored.
    ///
    /// # Safety
    ///
    /// `bytes.len() <= size`, and no one else reads or writes these bytes
    /// meanwhile: they belong to a record this producer reserved and has not
    /// committed, or no consumer or other writer uses the ring.
    #[cfg(any(test, feature = "testing"))]
    unsafe fn write_raw(&self, pos: usize, bytes: &[u8]) {
        let size = self.ring.size();
        debug_assert!(bytes.len() <= size);
        let off = pos & self.ring.mask;
        // SAFETY: `off < size` and `bytes.len() <= size`, so the range lies in
        // the `2 * size` bytes of the data area. The caller promises that no
        // one else writes it; readers may race (a spectator), hence atomics.
        unsafe { store_bytes(self.ring.data.as_ptr().add(off), bytes) };
        if self.mirror {
            // Keep the two halves equal: the part written past the end goes to
            // the start too, the part before the end to the second half.
            let first = bytes.len().min(size - off);
            let data = self.ring.data.as_ptr();
            // SAFETY: `off + size + first <= 2 * size`, and
            // `bytes.len() - first <= off` bytes at the start; as above.
            unsafe {
                store_bytes(data.add(off + size), &bytes[..first]);
                store_bytes(data, &bytes[first..]);
            }
        }
    }

    /// With a mirrored data area: copies the `len` bytes at data offset
    /// `off` (< size) of the first copy's view to where the other copy holds
    /// them (the part before the end to the second half, the part past the
    /// end to the start).
    ///
    /// # Safety
    ///
    /// `off < size`, `len <= size`, and nobody else accesses these bytes in
    /// either copy meanwhile.
    unsafe fn mirror_range(&self, off: usize, len: usize) {
        let size = self.ring.size();
        let data = self.ring.data.as_ptr();
        let first = len.min(size - off);
        // SAFETY: `[off, off + first)` and `[off + size, off + size + first)`
        // lie in the `2 * size` bytes and are disjoint (size apart);
        // `[size, size + len - first)` and `[0, len - first)` too, with
        // `len - first <= off < size`. The caller's promise covers the rest.
        unsafe {
            std::ptr::copy_nonoverlapping(data.add(off), data.add(off + size), first);
            std::ptr::copy_nonoverlapping(data.add(size), data, len - first);
        }
    }
}

#[cfg(any(test, feature = "testing"))]
impl RawProducer {
    /// # Safety
    ///
    /// `ring` was built with [`RawRing::new`]'s promises, and moreover its
    /// producer word and data area are writable and stay mapped while this
    /// producer (or a [`Reserved`] of it) lives; nothing else produces into
    /// this memory. With `mirror`, the data area's two halves are distinct
    /// memory (else they must be one double mapping).
    pub(crate) unsafe fn new(ring: RawRing, mirror: bool) -> RawProducer {
        // Relaxed: the creator owns the memory; no producer runs yet.
        let start = ring.producer_atomic().load(Ordering::Relaxed);
        RawProducer {
            mem: ProducerMem { ring, mirror },
            pending: Mutex::new(start),
            overwrite: None,
        }
    }

    /// A producer in overwrite mode (`BPF_F_RB_OVERWRITE`), keeping
    /// `overwrite_pos` in the word at `overwrite`; it starts at the producer
    /// position, like every position of a new kernel map (all zero).
    ///
    /// # Safety
    ///
    /// As [`new`](Self::new); moreover `overwrite` points to an aligned,
    /// writable `usize` word that stays mapped as long as the ring memory,
    /// accessed only atomically, and written by this producer only.
    pub(crate) unsafe fn new_overwrite(
        ring: RawRing,
        mirror: bool,
        overwrite: NonNull<usize>,
    ) -> RawProducer {
        // SAFETY: the caller's promises, as for `new`.
        let mut p = unsafe { RawProducer::new(ring, mirror) };
        let start = *p.pending.get_mut().unwrap_or_else(|e| e.into_inner());
        let word = overwrite.cast::<AtomicUsize>();
        // SAFETY: aligned, mapped, accessed only atomically (caller's promise).
        // Relaxed: no producer runs yet; the creator owns the memory.
        unsafe { word.as_ref() }.store(start, Ordering::Relaxed);
        p.overwrite = Some(word);
        p
    }

    /// `overwrite_pos` in overwrite mode (Relaxed, then an Acquire fence:
    /// as the spectator reads it), else `None`.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn overwrite_position(&self) -> Option<usize> {
        self.overwrite.map(|w| {
            // SAFETY: `new_overwrite`'s contract.
            let v = unsafe { w.as_ref() }.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            v
        })
    }

    /// The ring the producer writes.
    pub(crate) fn ring(&self) -> &RawRing {
        &self.mem.ring
    }

    /// Reserves a record of `len` payload bytes, as `__bpf_ringbuf_reserve`.
    pub(crate) fn reserve(&self, len: usize) -> Result<Reserved<'_>, ReserveError> {
        if len > MAX_RECORD_LEN {
            return Err(ReserveError::TooBig);
        }
        let stride = record_stride(len);
        let mask = self.mem.ring.mask;
        if stride > mask {
            return Err(ReserveError::TooBig);
        }
        // Relaxed + Acquire fence (the consumer page may be mapped read-only
        // to a producer, as for a user ring buffer): pairs with the
        // consumer's Release store of consumer_pos (RawRing::publish); the
        // consumer is done with every byte before it.
        let cons = self.mem.ring.consumer_atomic().load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        // Relaxed: only the holder of this lock writes producer_pos.
        let prod = self.mem.ring.producer_atomic().load(Ordering::Relaxed);
        // Advance past committed records, as the kernel does with pending_pos.
        while *pending != prod {
            // Acquire: pairs with the commit swap of that header.
            let hdr = self.mem.header(*pending).load(Ordering::Acquire);
            if hdr & BUSY_BIT != 0 {
                break;
            }
            *pending = pending.wrapping_add(record_stride(header_len(hdr)));
        }
        let new_prod = prod.wrapping_add(stride);
        // bpf_ringbuf_has_space: never overrun a record not yet committed;
        // outside overwrite mode, never pass the consumer either.
        if new_prod.wrapping_sub(*pending) > mask
            || (self.overwrite.is_none() && new_prod.wrapping_sub(cons) > mask)
        {
            return Err(ReserveError::Full);
        }
        if let Some(word) = self.overwrite {
            // SAFETY: `new_overwrite`'s contract; written only under this lock.
            let word = unsafe { word.as_ref() };
            // Relaxed: only the holder of this lock writes it.
            let mut over = word.load(Ordering::Relaxed);
            while new_prod.wrapping_sub(over) > mask {
                // Every record before `pending` is committed (the check
                // above keeps `over` behind it): whole records at a time.
                // Acquire: pairs with that record's commit swap.
                let hdr = self.mem.header(over).load(Ordering::Acquire);
                over = over.wrapping_add(record_stride(header_len(hdr)));
            }
            // Relaxed (the kernel's WRITE_ONCE): published by the Release
            // store of producer_pos below, which a reader loads first.
            word.store(over, Ordering::Relaxed);
        }
        // The page offset of the header, for the kernel only (pg_off).
        let pg_off = ((prod & mask) / crate::sys::page_size() + 2) as u32;
        // SAFETY: we hold the lock (the only reserver); `prod` is the
        // producer position (only lock holders write it); the space up to
        // `new_prod` is free by the two checks above.
        unsafe {
            self.mem
                .publish_reservation(prod, new_prod, len, Some(pg_off))
        };
        drop(pending);
        Ok(Reserved {
            mem: &self.mem,
            pos: prod,
            len,
        })
    }
    /// **Corruption:** overwrites the `len` word of the header at `pos`
    /// (rounded down to 8) with any value.
    ///
    /// # Safety
    ///
    /// No consumer of this memory exists (no record slice can be alive over
    /// the word).
    pub(crate) unsafe fn overwrite_header(&self, pos: usize, word: u32) {
        // SeqCst swap, like a commit: the bytes written before are visible.
        self.mem
            .header(pos & !(HEADER_SIZE - 1))
            .swap(word, Ordering::SeqCst);
    }

    /// **Corruption:** copies `bytes` (at most the ring size) into the data
    /// area at `pos`.
    ///
    /// # Safety
    ///
    /// No consumer of this memory exists, and no [`Reserved`] of this
    /// producer is alive (its owner may be writing the same bytes).
    pub(crate) unsafe fn overwrite_data(&self, pos: usize, bytes: &[u8]) {
        let n = bytes.len().min(self.mem.ring.size());
        // SAFETY: `n <= size`; the caller's promise covers the rest.
        unsafe { self.mem.write_raw(pos, &bytes[..n]) }
    }

    /// **Setup or corruption:** stores any value as `producer_pos`, and
    /// continues producing from it.
    ///
    /// # Safety
    ///
    /// No consumer of this memory exists and no [`Reserved`] is alive: a
    /// consumer could be lent records the producer then overwrites, since
    /// the free-space check trusts the positions.
    #[cfg(feature = "testing")]
    pub(crate) unsafe fn set_producer_position(&self, pos: usize) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        *pending = pos;
        // Release: as in `reserve`.
        self.mem
            .ring
            .producer_atomic()
            .store(pos, Ordering::Release);
    }

    /// **Setup or corruption:** stores any value as `consumer_pos`.
    ///
    /// # Safety
    ///
    /// As [`set_producer_position`](Self::set_producer_position).
    #[cfg(feature = "testing")]
    pub(crate) unsafe fn set_consumer_position(&self, pos: usize) {
        self.mem.ring.publish(pos);
    }

    /// Copies data bytes at `pos` (modulo the size) into `out`, at most the
    /// ring size, through atomic byte loads: allowed to race with a writer.
    #[cfg(feature = "testing")]
    pub(crate) fn read_data(&self, pos: usize, out: &mut [u8]) {
        let n = out.len().min(self.mem.ring.size());
        for (i, b) in out[..n].iter_mut().enumerate() {
            *b = self.mem.ring.data_byte(pos.wrapping_add(i));
        }
    }
}

#[cfg(any(test, feature = "testing"))]
/// Stores `bytes` at `dst` with relaxed atomic byte stores (the fake
/// producer's `memcpy`: a spectator may read them meanwhile).
///
/// # Safety
///
/// `dst..dst + bytes.len()` is writable ring memory that only atomics access
/// while it may be read concurrently.
unsafe fn store_bytes(dst: *mut u8, bytes: &[u8]) {
    for (i, &b) in bytes.iter().enumerate() {
        // SAFETY: in bounds (caller's promise); an `AtomicU8` has the size
        // and alignment of a `u8`.
        let a = unsafe { &*dst.add(i).cast::<std::sync::atomic::AtomicU8>() };
        // Relaxed: ordered for readers by the commit swap (a consumer) or
        // validated afterwards (a spectator).
        a.store(b, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(any(test, feature = "testing"))]
impl Reserved<'_> {
    /// The ring position of the record's header.
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// The payload length.
    #[cfg(feature = "testing")]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Writes `bytes` at `offset` in the payload; `false` (and nothing
    /// written) if that runs past the record's end.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn write(&mut self, offset: usize, bytes: &[u8]) -> bool {
        if offset
            .checked_add(bytes.len())
            .is_none_or(|end| end > self.len)
        {
            return false;
        }
        // SAFETY: inside this record's payload (checked above; the record's
        // stride is at most the size, checked by `reserve`). The record is
        // BUSY, so no consumer reads it before the commit, and this token is
        // its only writer (`&mut self`).
        unsafe {
            self.mem
                .write_raw(self.pos.wrapping_add(HEADER_SIZE + offset), bytes)
        };
        true
    }

    /// The header word that ends the reservation.
    #[cfg(any(test, feature = "testing"))]
    fn final_word(&self, discard: bool) -> u32 {
        if discard {
            self.len as u32 | DISCARD_BIT
        } else {
            self.len as u32
        }
    }

    /// Commits the record (or discards it), as `bpf_ringbuf_commit`: the
    /// header's exchange, then the wakeup decision. Returns whether the
    /// consumer had caught up (the kernel would wake it).
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn commit(self, discard: bool) -> bool {
        let word = self.final_word(discard);
        let m = self.mem;
        wakeup::commit_needs_wakeup(m.header(self.pos), word, m.ring.consumer_atomic(), self.pos)
    }

    /// Leaves the record BUSY forever (a stuck producer); returns its position.
    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn leak(self) -> usize {
        self.pos
    }
}

/// The producer of a `BPF_MAP_TYPE_USER_RINGBUF`, with libbpf's rules
/// (`user_ring_buffer__reserve`): the whole data area may be outstanding
/// (`producer_pos - consumer_pos <= size`, as the kernel's drain accepts),
/// a record larger than the ring or than a dynptr can describe is refused
/// for good, and the consumer (the kernel's `bpf_user_ringbuf_drain`) never
/// passes a BUSY record, so no `pending_pos` is needed.
///
/// Not `Sync` (its position is a [`Cell`]): one thread reserves at a time,
/// as the kernel's protocol requires, with no lock. Samples may be
/// outstanding in any number and committed in any order.
#[derive(Debug)]
pub(crate) struct UserProducer {
    mem: ProducerMem,
    /// The producer position: only this producer writes it.
    prod: Cell<usize>,
    /// What its samples became.
    counters: UserCounters,
    /// Keeps the memory mapped; dropped after everything above.
    _owner: Box<dyn Send + std::fmt::Debug>,
}

/// The two kernel mappings a [`UserProducer`] owns.
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct UserMappings {
    _consumer: crate::sys::mmap::Mmap,
    _producer: crate::sys::mmap::Mmap,
}

impl UserProducer {
    /// # Safety
    ///
    /// As [`RawProducer::new`]: `ring` was built with [`RawRing::new`]'s
    /// promises, its producer word and data area are writable and stay
    /// mapped while `owner` lives, and nothing else produces into this
    /// memory.
    unsafe fn new(
        ring: RawRing,
        mirror: bool,
        owner: Box<dyn Send + std::fmt::Debug>,
    ) -> UserProducer {
        // Relaxed: only a producer writes producer_pos, and we are the only
        // one from now on (an earlier one, if any, is gone: its stores are
        // ordered before ours by whatever handed us the map).
        let start = ring.producer_atomic().load(Ordering::Relaxed);
        UserProducer {
            mem: ProducerMem { ring, mirror },
            prod: Cell::new(start),
            counters: UserCounters::default(),
            _owner: owner,
        }
    }

    /// The producer of a user ring buffer of `size` data bytes over its two
    /// kernel mappings ([`crate::sys::mmap::map_user_ring`]), which it takes
    /// and keeps. Its caller holds the map's producer claim (one producer
    /// per map in this process; another process producing into the same
    /// map is a documented precondition, as for consumers).
    #[cfg(target_os = "linux")]
    pub(crate) fn from_kernel_mappings(
        consumer: crate::sys::mmap::Mmap,
        producer: crate::sys::mmap::Mmap,
        size: usize,
    ) -> UserProducer {
        let page = crate::sys::page_size();
        // SAFETY: `map_user_ring`'s layout for a map of `size` bytes
        // (asserted by `from_kernel`), with the producer page and data
        // mapped writable.
        let ring = unsafe { RawRing::from_kernel(&consumer, &producer, page, size) };
        let owner = Box::new(UserMappings {
            _consumer: consumer,
            _producer: producer,
        });
        // SAFETY: writable producer word and data (above); `owner` keeps the
        // mappings alive as long as the producer; the only producer (the
        // caller's claim).
        unsafe { UserProducer::new(ring, false, owner) }
    }

    /// The producer of a fake user ring (a memfd double mapping), sharing
    /// the memory. Its caller holds the fake ring's producer claim.
    #[cfg(feature = "testing")]
    pub(crate) fn from_memfd(mem: std::sync::Arc<crate::sys::mmap::MemfdRing>) -> UserProducer {
        // SAFETY: `mem` moves into the producer below, so it outlives `ring`.
        let ring = unsafe { RawRing::from_memfd(&mem) };
        // SAFETY: a memfd ring is all writable and double mapped; `mem`
        // keeps it mapped; the only producer (the caller's claim).
        unsafe { UserProducer::new(ring, false, Box::new(mem)) }
    }

    /// The consumer's cursor over a fake user ring's memory (the fake
    /// kernel drain), keeping the memory mapped as long as it lives.
    #[cfg(feature = "testing")]
    pub(crate) fn memfd_cursor(
        mem: &std::sync::Arc<crate::sys::mmap::MemfdRing>,
    ) -> Result<super::cursor::Cursor, super::cursor::Corruption> {
        // SAFETY: the memfd ring's layout; the `Arc` clone moves into the
        // cursor, so the memory outlives it.
        let ring = unsafe { RawRing::from_memfd(mem) };
        // SAFETY: the box owns the memory `ring` points into.
        unsafe { super::cursor::Cursor::new(ring, Box::new(std::sync::Arc::clone(mem))) }
    }

    /// A producer over plain memory with a mirrored data area (unit tests,
    /// Miri).
    ///
    /// # Safety
    ///
    /// As [`RawProducer::new`] with `mirror`.
    #[cfg(test)]
    pub(crate) unsafe fn over_plain_memory(ring: RawRing) -> UserProducer {
        // SAFETY: the caller's promise.
        unsafe { UserProducer::new(ring, true, Box::new(())) }
    }

    /// The ring the producer writes.
    pub(crate) fn ring(&self) -> &RawRing {
        &self.mem.ring
    }

    /// Samples submitted and discarded so far.
    pub(crate) fn counters(&self) -> &UserCounters {
        &self.counters
    }

    /// The producer position (every reservation so far).
    pub(crate) fn position(&self) -> usize {
        self.prod.get()
    }

    /// The largest payload that can ever be reserved in a ring of `size`
    /// bytes: a record of `size` bytes, header included, and at most
    /// [`abi::USER_RINGBUF_MAX_SAMPLE`](super::abi::USER_RINGBUF_MAX_SAMPLE).
    pub(crate) fn max_sample(size: usize) -> usize {
        (size - HEADER_SIZE).min(super::abi::USER_RINGBUF_MAX_SAMPLE)
    }

    /// The bytes free now (`size - (producer_pos - consumer_pos)`), or the
    /// impossible consumer position.
    #[inline(always)]
    pub(crate) fn free(&self) -> Result<usize, ReserveError> {
        self.free_at(self.prod.get())
    }

    /// [`free`](Self::free) with the producer position `prod` already read.
    #[inline(always)]
    fn free_at(&self, prod: usize) -> Result<usize, ReserveError> {
        let size = self.mem.ring.size();
        // Relaxed + Acquire fence (the consumer page is mapped read-only):
        // pairs with the kernel's smp_store_release(&rb->consumer_pos) in
        // __bpf_user_ringbuf_sample_release (and in __bpf_user_ringbuf_peek
        // for a discarded sample): the kernel is done with every byte before
        // it.
        let cons = self.mem.ring.consumer_atomic().load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        let used = prod.wrapping_sub(cons);
        if used > size || used % HEADER_SIZE != 0 {
            return Err(ReserveError::Corrupt {
                consumer: cons,
                producer: prod,
            });
        }
        Ok(size - used)
    }

    /// Reserves a sample of `len` payload bytes, as
    /// `user_ring_buffer__reserve`.
    #[inline(always)]
    pub(crate) fn reserve(&self, len: usize) -> Result<Sample<'_>, ReserveError> {
        let size = self.mem.ring.size();
        if len > super::abi::USER_RINGBUF_MAX_SAMPLE {
            return Err(ReserveError::TooBig);
        }
        let stride = record_stride(len);
        if stride > size {
            return Err(ReserveError::TooBig);
        }
        // Read before the fence in `free_at`, which would make the compiler
        // read it again after.
        let prod = self.prod.get();
        if stride > self.free_at(prod)? {
            return Err(ReserveError::Full);
        }
        let new_prod = prod.wrapping_add(stride);
        // SAFETY: the only reserver: `self` is not `Sync` and this function
        // does not re-enter; `prod` is the producer position (only we write
        // it); `[prod, new_prod)` is free: at most `size` bytes are between
        // the consumer position and `new_prod` (checked above), and the
        // kernel's drain never moves the consumer position past a BUSY
        // record, so no earlier reservation overlaps.
        unsafe { self.mem.publish_reservation(prod, new_prod, len, None) };
        self.prod.set(new_prod);
        Ok(Sample {
            producer: self,
            pos: prod,
            len,
        })
    }
}

/// The telemetry of a [`UserProducer`]: plain cells, one thread uses it.
#[derive(Debug, Default)]
pub(crate) struct UserCounters {
    /// Samples submitted.
    pub samples: Cell<u64>,
    /// Payload bytes of the samples submitted.
    pub bytes: Cell<u64>,
    /// Samples discarded (explicitly or dropped).
    pub discarded: Cell<u64>,
}

/// A reserved sample of a [`UserRingBuf`](crate::UserRingBuf): `len` bytes
/// of the ring, written in place through `DerefMut<Target = [u8]>`.
///
/// [`submit`](Self::submit) hands it to the kernel; [`discard`](Self::discard),
/// or dropping it, withdraws it (the kernel skips it, the program never
/// sees it). Until then the kernel's drain stops at it. The sample borrows
/// its producer: it cannot outlive it or be submitted to another ring.
///
/// Its bytes start as whatever the ring held there (earlier samples): write
/// every byte the program reads.
///
/// ```no_run,ignore-windows
/// # fn main() -> bpf_ringbuf::Result<()> {
/// let ring = bpf_ringbuf::UserRingBuf::create(1 << 16)?;
/// let mut sample = ring.reserve(12)?;
/// sample[..4].copy_from_slice(&7u32.to_le_bytes());
/// sample[4..].copy_from_slice(&1_000u64.to_le_bytes());
/// if sample.len() == 12 {
///     sample.submit();
/// } // else: dropped, so discarded
/// # Ok(()) }
/// ```
pub struct Sample<'p> {
    producer: &'p UserProducer,
    /// The ring position of its header.
    pos: usize,
    len: usize,
}

impl Sample<'_> {
    /// Hands the sample to the kernel: the program's next drain delivers it
    /// (after every sample reserved before it is submitted or discarded).
    #[inline(always)]
    pub fn submit(self) {
        let this = std::mem::ManuallyDrop::new(self);
        this.finish(false);
        let c = &this.producer.counters;
        c.samples.set(c.samples.get().wrapping_add(1));
        c.bytes.set(c.bytes.get().wrapping_add(this.len as u64));
    }

    /// Withdraws the sample: the kernel skips it. Dropping it does the same.
    #[inline]
    pub fn discard(self) {
        // Drop discards.
    }

    /// The ring position of the sample's header.
    #[cfg(test)]
    pub(crate) fn position(&self) -> usize {
        self.pos
    }

    /// Ends the reservation, as libbpf's `user_ringbuf_commit`: clears BUSY
    /// (and sets DISCARD) in the header. No wakeup: the kernel's program
    /// drains when it runs. Called once per sample: by `submit` (which then
    /// forgets the sample) or by `drop`.
    #[inline(always)]
    fn finish(&self, discard: bool) {
        let mem = &self.producer.mem;
        if mem.mirror {
            let off = self.pos.wrapping_add(HEADER_SIZE) & mem.ring.mask;
            // SAFETY: this sample's payload (`off < size`, `len <= size - 8`),
            // still BUSY and written only through this sample.
            unsafe { mem.mirror_range(off, self.len) };
        }
        let word = if discard {
            self.len as u32 | DISCARD_BIT
        } else {
            self.len as u32
        };
        // Release: pairs with the kernel's smp_load_acquire(hdr) in
        // __bpf_user_ringbuf_peek, so the sample's bytes are visible with the
        // cleared BUSY bit. (libbpf uses an AcqRel exchange; only this sample
        // writes the header while BUSY, and the kernel never writes it, so a
        // store is the same protocol without the locked instruction.)
        mem.header(self.pos).store(word, Ordering::Release);
    }

    /// Where the payload starts.
    #[inline(always)]
    fn payload_ptr(&self) -> *mut u8 {
        let mem = &self.producer.mem;
        let off = self.pos.wrapping_add(HEADER_SIZE) & mem.ring.mask;
        // SAFETY: `off < size`, inside the `2 * size` data bytes.
        unsafe { mem.ring.data.as_ptr().add(off) }
    }
}

impl Drop for Sample<'_> {
    #[inline]
    fn drop(&mut self) {
        self.finish(true);
        let c = &self.producer.counters;
        c.discarded.set(c.discarded.get().wrapping_add(1));
    }
}

impl std::ops::Deref for Sample<'_> {
    type Target = [u8];
    /// The payload, in place (in a mirrored data area, the first copy's
    /// view, copied to the second when the sample ends).
    #[inline(always)]
    fn deref(&self) -> &[u8] {
        // SAFETY: `len <= size - 8` (the reservation checked
        // `record_stride(len) <= size`), so the payload lies in the
        // `2 * size` bytes of the data area, which are mapped while the
        // producer lives (its contract; the sample borrows it) and
        // initialised (mapped file pages). The sample is BUSY from its
        // reservation until it ends (`submit` or drop), so no consumer reads
        // these bytes, and no other sample covers them (at most `size` bytes
        // are outstanding, at distinct positions); the slice borrows the
        // sample, so no mutable slice of it is alive meanwhile.
        unsafe { std::slice::from_raw_parts(self.payload_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for Sample<'_> {
    #[inline(always)]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; the slice borrows the sample mutably, so it
        // is the only access to these bytes while it lives.
        unsafe { std::slice::from_raw_parts_mut(self.payload_ptr(), self.len) }
    }
}

impl std::fmt::Debug for Sample<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sample")
            .field("len", &self.len)
            .field("position", &self.pos)
            .finish()
    }
}

/// A producer over a memfd double mapping (the fake ring), owning a share of
/// the memory; consumers it makes ([`cursor`](Self::cursor)) own one too.
#[cfg(feature = "testing")]
#[derive(Debug)]
pub(crate) struct MemfdProducer {
    /// Declared first: it points into `mem`.
    raw: RawProducer,
    mem: std::sync::Arc<crate::sys::mmap::MemfdRing>,
    /// How many cursors over this memory are alive; the corruption
    /// functions refuse while any is.
    consumers: std::sync::Arc<Mutex<usize>>,
}

/// A cursor's share of a memfd ring: the memory, and its place in the count
/// of live consumers.
#[cfg(feature = "testing")]
#[derive(Debug)]
struct CursorShare {
    _mem: std::sync::Arc<crate::sys::mmap::MemfdRing>,
    consumers: std::sync::Arc<Mutex<usize>>,
}

#[cfg(feature = "testing")]
impl Drop for CursorShare {
    fn drop(&mut self) {
        *self.consumers.lock().unwrap_or_else(|e| e.into_inner()) -= 1;
    }
}

/// A corruption function refused: a consumer of the ring is alive.
#[cfg(feature = "testing")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConsumerAlive;

#[cfg(feature = "testing")]
impl MemfdProducer {
    /// Maps a zero-filled ring of `size` data bytes (a valid ring size),
    /// produced into in overwrite mode if `overwrite` (the `overwrite_pos`
    /// word is the producer page's second word, as in the kernel).
    pub(crate) fn new(size: usize, overwrite: bool) -> Result<MemfdProducer, crate::Error> {
        let mem = std::sync::Arc::new(crate::sys::mmap::MemfdRing::new(size)?);
        // SAFETY: `mem` lives in `self` as long as `raw`; the memfd ring is
        // all writable, double mapped (so no mirroring), and this is its only
        // producer (the fake ring owns it). The producer page is a whole
        // page, so its second word is inside it, aligned, and only atomics
        // touch it.
        let raw = unsafe {
            let ring = RawRing::from_memfd(&mem);
            if overwrite {
                let word = mem.producer_page().cast::<usize>().add(1);
                RawProducer::new_overwrite(ring, false, word)
            } else {
                RawProducer::new(ring, false)
            }
        };
        Ok(MemfdProducer {
            raw,
            mem,
            consumers: std::sync::Arc::new(Mutex::new(0)),
        })
    }

    /// A consumer's cursor over the same memory, starting at the published
    /// consumer position. It keeps the memory mapped as long as it lives.
    pub(crate) fn cursor(&self) -> Result<super::cursor::Cursor, super::cursor::Corruption> {
        let mut n = self.consumers.lock().unwrap_or_else(|e| e.into_inner());
        *n += 1;
        let share: Box<dyn Send + std::fmt::Debug> = Box::new(CursorShare {
            _mem: std::sync::Arc::clone(&self.mem),
            consumers: std::sync::Arc::clone(&self.consumers),
        });
        drop(n);
        // SAFETY: `share` owns an `Arc` of the memory `raw.ring` points into.
        // (On error it drops, and gives its count back.)
        unsafe { super::cursor::Cursor::new(*self.raw.ring(), share) }
    }

    /// A spectator's cursor over the same memory, starting at `start` (see
    /// [`spectate::SpectateCursor::new`](super::spectate::SpectateCursor::new)).
    /// It keeps the memory mapped as long as it lives, and does not count as
    /// a consumer (it never writes the consumer position).
    pub(crate) fn spectate_cursor(
        &self,
        start: super::spectate::StartAt,
    ) -> Result<super::spectate::SpectateCursor, super::cursor::Corruption> {
        let share: Box<dyn Send + std::fmt::Debug> = Box::new(std::sync::Arc::clone(&self.mem));
        let overwrite = self.raw.overwrite.map(|w| w.cast::<usize>());
        // SAFETY: `share` owns an `Arc` of the memory `raw.ring` points into;
        // the overwrite word is the producer page's second word, in it.
        unsafe { super::spectate::SpectateCursor::new(*self.raw.ring(), overwrite, share, start) }
    }

    /// Runs a corruption `f` while no cursor over this memory is alive,
    /// holding the count so that none is made meanwhile. `&mut self`: no
    /// [`Reserved`] is alive either.
    fn without_consumers(&mut self, f: impl FnOnce(&RawProducer)) -> Result<(), ConsumerAlive> {
        let n = self.consumers.lock().unwrap_or_else(|e| e.into_inner());
        if *n != 0 {
            return Err(ConsumerAlive);
        }
        f(&self.raw);
        drop(n);
        Ok(())
    }

    /// [`RawProducer::overwrite_header`], refused while a consumer is alive.
    pub(crate) fn overwrite_header(&mut self, pos: usize, word: u32) -> Result<(), ConsumerAlive> {
        // SAFETY: no consumer exists (none can be made meanwhile), and
        // `&mut self` rules out a live `Reserved`.
        self.without_consumers(|p| unsafe { p.overwrite_header(pos, word) })
    }

    /// [`RawProducer::overwrite_data`], refused while a consumer is alive.
    pub(crate) fn overwrite_data(&mut self, pos: usize, bytes: &[u8]) -> Result<(), ConsumerAlive> {
        // SAFETY: as in `overwrite_header`.
        self.without_consumers(|p| unsafe { p.overwrite_data(pos, bytes) })
    }

    /// [`RawProducer::set_producer_position`], refused while a consumer is alive.
    pub(crate) fn set_producer_position(&mut self, pos: usize) -> Result<(), ConsumerAlive> {
        // SAFETY: as in `overwrite_header`.
        self.without_consumers(|p| unsafe { p.set_producer_position(pos) })
    }

    /// [`RawProducer::set_consumer_position`], refused while a consumer is alive.
    pub(crate) fn set_consumer_position(&mut self, pos: usize) -> Result<(), ConsumerAlive> {
        // SAFETY: as in `overwrite_header`.
        self.without_consumers(|p| unsafe { p.set_consumer_position(pos) })
    }

    /// A watcher of the positions that does not keep the memory mapped.
    pub(crate) fn watch(&self) -> PositionWatch {
        PositionWatch {
            ring: *self.raw.ring(),
            mem: std::sync::Arc::downgrade(&self.mem),
        }
    }
}

#[cfg(feature = "testing")]
impl std::ops::Deref for MemfdProducer {
    type Target = RawProducer;
    fn deref(&self) -> &RawProducer {
        &self.raw
    }
}

/// Reads a fake ring's positions while its memory is still mapped.
#[cfg(feature = "testing")]
#[derive(Debug)]
pub(crate) struct PositionWatch {
    ring: RawRing,
    mem: std::sync::Weak<crate::sys::mmap::MemfdRing>,
}

// SAFETY: `ring` is only dereferenced while `mem` upgrades (the memory is
// mapped), and only through atomic loads.
#[cfg(feature = "testing")]
unsafe impl Send for PositionWatch {}

#[cfg(feature = "testing")]
impl PositionWatch {
    /// `(consumer_pos, producer_pos)` as published, or `None` once every
    /// owner of the memory is gone.
    pub(crate) fn positions(&self) -> Option<(usize, usize)> {
        let _alive = self.mem.upgrade()?;
        // Both Acquire (see the functions): the memory is mapped while `_alive` lives.
        Some((self.ring.load_consumer(), self.ring.load_producer()))
    }
}
