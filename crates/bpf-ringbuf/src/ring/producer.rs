//! The producer's half of the protocol, over raw memory: the kernel's
//! `__bpf_ringbuf_reserve` and `bpf_ringbuf_commit`, step for step.
//!
//! One copy of the sequence serves the fake ring (`testing::FakeRing`) and the
//! ring layer's unit tests (over plain memory, under Miri); it is also what a
//! userspace producer of a `BPF_MAP_TYPE_USER_RINGBUF` does. The loom model
//! (`tests/loom.rs`) keeps its own tiny copy, so that it stays independent of
//! the code it checks.
//!
//! 1. **Reserve** (under the producer lock, the kernel's `rb->spinlock`):
//!    refuse when `new_prod - consumer_pos > size - 1` or when the record would
//!    overrun the oldest uncommitted one (`pending_pos`); write `len | BUSY`
//!    into the header, then `smp_store_release(&producer_pos)`.
//! 2. **Fill** the payload: no consumer reads it while BUSY is set.
//! 3. **Commit**: `xchg(&hdr->len, len [| DISCARD])`, a full barrier, then
//!    read `consumer_pos`: the consumer is woken only if it equals the
//!    record's position (see [`wakeup::commit_needs_wakeup`]).
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
//! A [`RawProducer`] is built over memory its creator promises is writable
//! (producer page and data) and where it is the only producer. A
//! [`Reserved`] token is the only way to write payload bytes, it exists once
//! per reserved record, and it borrows the producer, so two writers never
//! touch the same bytes. The raw overwrite functions for corruption tests are
//! `unsafe`: their caller promises that no consumer reads the ring meanwhile.

use std::ptr::NonNull;
use std::sync::Mutex;

use super::abi::{header_len, record_stride, BUSY_BIT, DISCARD_BIT, HEADER_SIZE, MAX_RECORD_LEN};
use super::sync::{fence, AtomicU32, AtomicUsize, Ordering};
use super::{wakeup, RawRing};

/// Why a reservation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReserveError {
    /// The record can never fit: longer than a header can say, or than the
    /// ring holds (the kernel's `E2BIG` for a user ring buffer).
    TooBig,
    /// Not enough free space now (the kernel's NULL, or `ENOSPC`).
    Full,
}

/// A producer over a ring's memory.
#[derive(Debug)]
pub(crate) struct RawProducer {
    ring: RawRing,
    /// The data area's second copy is separate memory (plain-memory tests):
    /// every payload byte is written to both copies.
    mirror: bool,
    /// The kernel's `rb->spinlock`, guarding `rb->pending_pos`: every record
    /// before it is committed.
    pending: Mutex<usize>,
    /// Overwrite mode: the `overwrite_pos` word (the producer page's second
    /// word), written only under `pending`'s lock.
    overwrite: Option<NonNull<AtomicUsize>>,
}

// SAFETY: the pointers target shared memory that outlives the producer
// (`new`'s contract) and is not tied to a thread. Positions and headers are
// accessed only atomically; reservations are serialised by `pending`; payload
// bytes are written only through a `Reserved` (one per record, borrowed
// mutably to write) or by the `unsafe` overwrite functions.
unsafe impl Send for RawProducer {}
// SAFETY: as above: every `&self` method is safe to call from many threads.
unsafe impl Sync for RawProducer {}

/// A reserved record: the right to write its payload, and the duty to commit
/// it. Not `Clone`: one token per record.
#[derive(Debug)]
pub(crate) struct Reserved<'p> {
    producer: &'p RawProducer,
    pos: usize,
    len: usize,
}

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
            ring,
            mirror,
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
        &self.ring
    }

    /// Reserves a record of `len` payload bytes, as `__bpf_ringbuf_reserve`.
    pub(crate) fn reserve(&self, len: usize) -> Result<Reserved<'_>, ReserveError> {
        if len > MAX_RECORD_LEN {
            return Err(ReserveError::TooBig);
        }
        let stride = record_stride(len);
        let mask = self.ring.mask;
        if stride > mask {
            return Err(ReserveError::TooBig);
        }
        // Relaxed + Acquire fence (the consumer page may be mapped read-only
        // to a producer, as for a user ring buffer): pairs with the
        // consumer's Release store of consumer_pos (RawRing::publish); the
        // consumer is done with every byte before it.
        let cons = self.ring.consumer_atomic().load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        // Relaxed: only the holder of this lock writes producer_pos.
        let prod = self.ring.producer_atomic().load(Ordering::Relaxed);
        // Advance past committed records, as the kernel does with pending_pos.
        while *pending != prod {
            // Acquire: pairs with the commit swap of that header.
            let hdr = self.header(*pending).load(Ordering::Acquire);
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
                let hdr = self.header(over).load(Ordering::Acquire);
                over = over.wrapping_add(record_stride(header_len(hdr)));
            }
            // Relaxed (the kernel's WRITE_ONCE): published by the Release
            // store of producer_pos below, which a reader loads first.
            word.store(over, Ordering::Relaxed);
        }
        // Relaxed: published by the Release store of producer_pos below.
        self.header(prod)
            .store(len as u32 | BUSY_BIT, Ordering::Relaxed);
        // The page offset of the header, for the kernel only (pg_off).
        self.pg_off(prod).store(
            ((prod & mask) / crate::sys::page_size() + 2) as u32,
            Ordering::Relaxed,
        );
        // Release: as smp_store_release(&rb->producer_pos) in
        // __bpf_ringbuf_reserve; pairs with the consumer's Acquire load
        // (RawRing::load_producer), so the BUSY header is visible with it.
        self.ring
            .producer_atomic()
            .store(new_prod, Ordering::Release);
        drop(pending);
        Ok(Reserved {
            producer: self,
            pos: prod,
            len,
        })
    }

    /// The `len` word of the header at `pos`.
    fn header(&self, pos: usize) -> &AtomicU32 {
        self.ring.header_atomic(pos)
    }

    /// The `pg_off` word of the header at `pos`.
    fn pg_off(&self, pos: usize) -> &AtomicU32 {
        self.ring.header_atomic(pos.wrapping_add(4))
    }

    /// Copies `bytes` to the data area at `pos` (modulo the size), wrapping
    /// seamlessly, in both copies when mirrored.
    ///
    /// # Safety
    ///
    /// `bytes.len() <= size`, and no one else reads or writes these bytes
    /// meanwhile: they belong to a record this producer reserved and has not
    /// committed, or no consumer or other writer uses the ring.
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

    /// **Corruption:** overwrites the `len` word of the header at `pos`
    /// (rounded down to 8) with any value.
    ///
    /// # Safety
    ///
    /// No consumer of this memory exists (no record slice can be alive over
    /// the word).
    pub(crate) unsafe fn overwrite_header(&self, pos: usize, word: u32) {
        // SeqCst swap, like a commit: the bytes written before are visible.
        self.header(pos & !(HEADER_SIZE - 1))
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
        let n = bytes.len().min(self.ring.size());
        // SAFETY: `n <= size`; the caller's promise covers the rest.
        unsafe { self.write_raw(pos, &bytes[..n]) }
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
        self.ring.producer_atomic().store(pos, Ordering::Release);
    }

    /// **Setup or corruption:** stores any value as `consumer_pos`.
    ///
    /// # Safety
    ///
    /// As [`set_producer_position`](Self::set_producer_position).
    #[cfg(feature = "testing")]
    pub(crate) unsafe fn set_consumer_position(&self, pos: usize) {
        self.ring.publish(pos);
    }

    /// Copies data bytes at `pos` (modulo the size) into `out`, at most the
    /// ring size, through atomic byte loads: allowed to race with a writer.
    #[cfg(feature = "testing")]
    pub(crate) fn read_data(&self, pos: usize, out: &mut [u8]) {
        let n = out.len().min(self.ring.size());
        for (i, b) in out[..n].iter_mut().enumerate() {
            *b = self.ring.data_byte(pos.wrapping_add(i));
        }
    }
}

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
    pub(crate) fn write(&mut self, offset: usize, bytes: &[u8]) -> bool {
        if offset
            .checked_add(bytes.len())
            .is_none_or(|end| end > self.len)
        {
            return false;
        }
        // SAFETY: inside this record's payload (checked above; the record's
        // stride is at most the size, checked by `reserve`). The record is
        // BUSY, so no consumer reads it before the commit swap, and this
        // token is its only writer (`&mut self`).
        unsafe {
            self.producer
                .write_raw(self.pos.wrapping_add(HEADER_SIZE + offset), bytes)
        };
        true
    }

    /// Commits the record (or discards it), as `bpf_ringbuf_commit`: the
    /// header's exchange, then the wakeup decision. Returns whether the
    /// consumer had caught up (the kernel would wake it).
    pub(crate) fn commit(self, discard: bool) -> bool {
        let mut word = self.len as u32;
        if discard {
            word |= DISCARD_BIT;
        }
        let p = self.producer;
        wakeup::commit_needs_wakeup(p.header(self.pos), word, p.ring.consumer_atomic(), self.pos)
    }

    /// Leaves the record BUSY forever (a stuck producer); returns its position.
    pub(crate) fn leak(self) -> usize {
        self.pos
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
        unsafe { super::cursor::Cursor::new(self.raw.ring, share) }
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
        unsafe { super::spectate::SpectateCursor::new(self.raw.ring, overwrite, share, start) }
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
            ring: self.raw.ring,
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
