//! The consumer cursor: a local read position over a [`RawRing`], published
//! to the kernel only when asked. This is where record slices are created,
//! with lifetimes that make "no use after commit" a compile-time fact.

use std::cell::Cell;
use std::ops::ControlFlow;

use super::abi::HEADER_SIZE as HDR_SZ;
use super::{Peek, RawRing};
use crate::error::Error;
#[cfg(target_os = "linux")]
use crate::sys::mmap::Mmap;

/// One step of the cursor within the known part of the ring (for tests: the
/// reads use [`Cursor::next_record`] and [`Cursor::skip_discards`]).
#[cfg(test)]
#[derive(Debug)]
pub(crate) enum Step<'a> {
    /// A committed record, lent until the next `&mut self` call.
    Record(&'a [u8]),
    /// The cached producer position is reached: reload it.
    End,
    /// The record at the cursor is reserved, not committed.
    Busy,
    /// The header at the cursor is inconsistent with the data produced.
    Corrupt(#[expect(dead_code, reason = "shown by Debug when a test fails")] Corruption),
}

/// What is corrupt, and where. Becomes one of [`Error::Corrupt`],
/// [`Error::CorruptProducerPosition`] or [`Error::MisalignedConsumerPosition`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Corruption {
    /// The header at `pos` claims a record longer than the bytes produced.
    Header {
        pos: usize,
        len: usize,
        available: usize,
    },
    /// `producer_pos` is impossible seen from the cursor at `pos`: more than
    /// the ring size ahead, behind, or not 8-aligned.
    Producer {
        pos: usize,
        producer: usize,
        size: usize,
    },
    /// The published consumer position is not 8-aligned.
    MisalignedConsumer { pos: usize },
}

impl From<Corruption> for Error {
    fn from(c: Corruption) -> Error {
        match c {
            Corruption::Header {
                pos,
                len,
                available,
            } => Error::Corrupt {
                pos,
                len,
                available,
            },
            Corruption::Producer {
                pos,
                producer,
                size,
            } => Error::CorruptProducerPosition {
                consumer: pos,
                producer,
                size,
            },
            Corruption::MisalignedConsumer { pos } => Error::MisalignedConsumerPosition { pos },
        }
    }
}

/// What is at the cursor after [`Cursor::skip_discards`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Head {
    /// The cached producer position is reached: reload it.
    End,
    /// A committed record: the fast paths take it.
    Record,
    /// The record at the cursor is reserved, not committed.
    Busy,
    /// The header at the cursor is inconsistent with the data produced.
    Corrupt(Corruption),
}

/// What [`Cursor::prepare_wait`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadState {
    Empty,
    Ready,
    Busy,
}

/// How a [`Cursor::drain`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DrainEnd {
    Empty,
    Budget,
    Callback,
    Busy,
    Corrupt(Corruption),
}

/// The consumer's cursor over one ring.
///
/// Invariant: `published <= pos <= prod` (in ring order), every position is a
/// multiple of 8, and `prod - pos <= size` (checked at every reload). Bytes in
/// `[published, pos)` belong to records we lent out or skipped; the kernel
/// cannot reuse them until we publish.
#[derive(Debug)]
pub(crate) struct Cursor {
    ring: RawRing,
    pos: Cell<usize>,
    prod: Cell<usize>,
    published: Cell<usize>,
    /// A slice was lent since the last publish.
    lent: Cell<bool>,
    /// Telemetry, counted where it costs least (see [`Counters`]).
    counters: Counters,
    /// Napping policies: a drain that empties the ring publishes only up to
    /// the start of the last record it delivered, so the kernel sees the
    /// consumer behind and sends no default wakeup for the next record (see
    /// `Reader`'s `WakePolicy`). Only while what is held stays small (see
    /// [`may_hold`](Self::may_hold)).
    hold_last: Cell<bool>,
    /// The position handed back as far as the reader is concerned; ahead of
    /// `published` by the one record held back. Published on drop.
    owed: Cell<Option<usize>>,
    /// The consumer position this cursor started at: the bytes handed back
    /// are the published position minus it (positions only grow).
    start: usize,
    /// Owns the memory `ring` points into (the mappings); dropped, and so
    /// unmapped, with the consumer.
    _mem: Box<dyn Send + std::fmt::Debug>,
}

/// What a cursor has done, always counted. Per record only `records` moves
/// (one add to memory on the zero-copy path; `drain` adds its local count
/// once per call); the rest move once per batch or in the slow paths.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Records delivered lent or passed to a callback.
    pub records: Cell<u64>,
    /// Records copied out and published one by one (each is a record and a
    /// commit: one add instead of two on the copying path).
    pub copied: Cell<u64>,
    /// Discarded records skipped.
    pub discarded: Cell<u64>,
    /// Stores of the consumer position that moved it, besides `copied`.
    pub commits: Cell<u64>,
    /// The most bytes seen unconsumed by the kernel (producer position minus
    /// published consumer position), at each load of the producer position.
    pub max_fill: Cell<usize>,
}

fn bump(c: &Cell<u64>, n: u64) {
    c.set(c.get().wrapping_add(n));
}

/// The kernel's two mappings of a `BPF_MAP_TYPE_RINGBUF` map.
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct KernelMappings {
    _consumer: Mmap,
    _producer: Mmap,
}

// SAFETY: the pointers in `ring` target memory owned alongside the consumer
// (the reader's mappings), not tied to any thread. `Cursor` is `!Sync`
// because of its `Cell`s, so one thread at a time uses it.
unsafe impl Send for Cursor {}

impl Cursor {
    /// A cursor over the kernel's mappings of a ring buffer of `size` data
    /// bytes (see [`RawRing::from_kernel`]). Takes ownership of both, so the
    /// memory lives as long as the cursor.
    #[cfg(target_os = "linux")]
    pub(crate) fn from_kernel_mappings(
        consumer: Mmap,
        producer: Mmap,
        page: usize,
        size: usize,
    ) -> Result<Cursor, Corruption> {
        // SAFETY: the mappings are the caller's ring buffer map's (this
        // crate maps them in `Consumer::new` with this layout), and they move
        // into the cursor below, so they outlive the `RawRing`.
        let ring = unsafe { RawRing::from_kernel(&consumer, &producer, page, size) };
        let mem = Box::new(KernelMappings {
            _consumer: consumer,
            _producer: producer,
        });
        // SAFETY: `mem` owns the mappings `ring` points into.
        unsafe { Cursor::new(ring, mem) }
    }

    /// A cursor over eBPF for Windows' mapping of a ring buffer (see
    /// [`RawRing::from_efw`]). Takes ownership of it, so the memory lives as
    /// long as the cursor.
    #[cfg(windows)]
    pub(crate) fn from_efw_mapping(
        mapping: crate::sys::windows::RingMapping,
    ) -> Result<Cursor, Corruption> {
        // SAFETY: the mapping moves into the cursor below, so it outlives
        // the `RawRing`.
        let ring = unsafe { RawRing::from_efw(&mapping) };
        // SAFETY: `mapping` owns the views `ring` points into.
        unsafe { Cursor::new(ring, Box::new(mapping)) }
    }

    /// Starts at the published consumer position; an error if that position
    /// is not 8-aligned (corrupt), since headers could not be read safely.
    ///
    /// # Safety
    ///
    /// `mem` owns (keeps mapped) the memory `ring` points into.
    pub(crate) unsafe fn new(
        ring: RawRing,
        mem: Box<dyn Send + std::fmt::Debug>,
    ) -> Result<Cursor, Corruption> {
        let start = ring.load_consumer();
        if start % HDR_SZ != 0 {
            return Err(Corruption::MisalignedConsumer { pos: start });
        }
        Ok(Cursor {
            ring,
            pos: Cell::new(start),
            prod: Cell::new(start),
            published: Cell::new(start),
            lent: Cell::new(false),
            counters: Counters::default(),
            hold_last: Cell::new(false),
            owed: Cell::new(None),
            start,
            _mem: mem,
        })
    }

    /// Sets whether an emptying drain holds back its last record.
    pub(crate) fn set_hold_last(&self, hold: bool) {
        self.hold_last.set(hold);
    }

    /// Whether a record is held back (the kernel sees the consumer behind).
    /// (Ring sets ask; they are Linux-only.)
    #[inline]
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    pub(crate) fn is_holding(&self) -> bool {
        self.owed.get().is_some()
    }

    /// Whether a record is held back and what is held still fits
    /// ([`may_hold`](Self::may_hold)): discards skipped after a hold (by a
    /// read that does not drain, such as `read_zero_copy`) count too, and
    /// once they are too many the caller publishes, ending the hold.
    #[inline]
    pub(crate) fn hold_fits(&self) -> bool {
        self.owed.get().is_some() && self.may_hold(self.published.get(), self.pos.get())
    }

    /// Whether the ring bytes `from..to` (a record held back, and the
    /// discards after it) are few enough to hold: at most 1/32 of the ring.
    /// The kernel counts them as unconsumed, so they take room from the
    /// producer: a held record of half the ring would make every later one
    /// of that size fail to reserve (and, never delivered, keep the ring
    /// looking empty), and discards piling up behind a hold would fill it.
    #[inline]
    fn may_hold(&self, from: usize, to: usize) -> bool {
        to.wrapping_sub(from) <= self.ring.size() / 32
    }

    /// Publishes the cursor only if a slice is lent (it would otherwise stay
    /// unpublished); a held-back record stays held.
    #[inline]
    pub(crate) fn publish_if_lent(&mut self) {
        if self.lent.get() {
            self.publish();
        }
    }

    /// Whether a slice was lent since the last publish.
    #[inline]
    pub(crate) fn is_lent(&self) -> bool {
        self.lent.get()
    }

    /// The telemetry counters.
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Ring bytes handed back to the kernel since this cursor started.
    pub(crate) fn bytes_published(&self) -> u64 {
        self.published.get().wrapping_sub(self.start) as u64
    }

    /// Records `pos` as published (the caller stores it to the ring): counts
    /// the store.
    #[inline]
    fn mark_published(&self, pos: usize) {
        // Any publish reaches the cursor, past a held-back record (the drain
        // that holds one back sets `owed` after this).
        self.owed.set(None);
        if pos != self.published.get() {
            bump(&self.counters.commits, 1);
            self.published.set(pos);
        }
    }

    /// Notes a freshly loaded producer position for the fill high-water mark.
    #[inline]
    fn note_fill(&self, prod: usize) {
        let fill = prod.wrapping_sub(self.published.get());
        if fill > self.counters.max_fill.get() {
            self.counters.max_fill.set(fill);
        }
    }

    /// Bytes unconsumed as the kernel sees them at the last producer load
    /// (cached producer position minus published consumer position).
    #[inline]
    pub(crate) fn known_fill(&self) -> usize {
        self.prod.get().wrapping_sub(self.published.get())
    }

    #[inline]
    pub(crate) fn raw(&self) -> &RawRing {
        &self.ring
    }

    /// The local cursor.
    #[inline]
    pub(crate) fn pos(&self) -> usize {
        self.pos.get()
    }

    /// The per-record fast path of the zero-copy reads: the committed record
    /// at the cursor, within the known part of the ring, or `None` for
    /// anything else (end of the known part, a discard, BUSY, corrupt), which
    /// [`skip_discards`](Self::skip_discards) then sorts out. Small enough to
    /// inline into the caller's loop, and returns in registers.
    /// No stores to shared memory, one Acquire load of the header.
    #[inline(always)]
    pub(crate) fn next_record(&self) -> Option<&[u8]> {
        let (len, next, ptr, _) = self.peek_next()?;
        self.pos.set(next);
        self.lent.set(true);
        bump(&self.counters.records, 1);
        // SAFETY: `peek_record` returned a record at the cursor; the slice
        // borrows `self`, and the position is published past it only by
        // `publish(&mut self)` or, while nothing is lent, by `publish_unlent`
        // (`lent` is set above).
        Some(unsafe { ptr.slice(len) })
    }

    /// The fast case at the cursor, moving nothing: `(len, next, payload,
    /// prod)` if [`RawRing::peek_record`] finds a committed record there,
    /// within the known part of the ring (`prod`, the cached producer
    /// position).
    #[inline(always)]
    fn peek_next(&self) -> Option<(usize, usize, super::RecordPtr, usize)> {
        let pos = self.pos.get();
        let prod = self.prod.get();
        if pos == prod {
            return None;
        }
        let (len, next, ptr) = self.ring.peek_record(pos, prod.wrapping_sub(pos))?;
        Some((len, next, ptr, prod))
    }

    /// Advances over the known part of the ring, skipping discards.
    /// No stores to shared memory, one Acquire load per header.
    #[cfg(test)]
    pub(crate) fn step(&self) -> Step<'_> {
        loop {
            let pos = self.pos.get();
            let prod = self.prod.get();
            if pos == prod {
                return Step::End;
            }
            match self.ring.peek_at(pos, prod) {
                (Peek::Record { len, next }, ptr) => {
                    self.pos.set(next);
                    self.lent.set(true);
                    // SAFETY: `peek_at` returned `Record` for `pos`. The slice
                    // borrows `self`. The position is published past `pos` only
                    // by `publish(&mut self)`, which cannot run while the
                    // borrow lives, or by `publish_unlent`, which refuses while
                    // `lent` is set. The memory outlives `self` (RawRing::new).
                    return Step::Record(unsafe { ptr.slice(len) });
                }
                (Peek::Discard { next }, _) => self.pos.set(next),
                (Peek::Busy, _) => return Step::Busy,
                (Peek::Corrupt { len, available }, _) => {
                    return Step::Corrupt(Corruption::Header {
                        pos,
                        len,
                        available,
                    })
                }
            }
        }
    }

    /// The per-record fast path of the copying reads: if the next thing
    /// within the known part of the ring is a committed record, copies it
    /// into `buf` (replacing its contents), publishes the position past it
    /// (which also covers every slice lent before, so `lent` is cleared) and
    /// returns the ring bytes known past it (`Record::remaining`). `None` for
    /// anything else, without side effects: [`skip_discards`](Self::skip_discards)
    /// then sorts out. One Acquire load, one copy, one Release store.
    #[inline(always)]
    pub(crate) fn copy_next_record(&mut self, buf: &mut Vec<u8>) -> Option<usize> {
        let (len, next, ptr, prod) = self.peek_next()?;
        // SAFETY: `peek_record` returned a record at the cursor; the slice is
        // copied out before the position is published past it.
        buf.clear();
        buf.extend_from_slice(unsafe { ptr.slice(len) });
        self.pos.set(next);
        self.published.set(next);
        self.owed.set(None);
        self.lent.set(false);
        self.ring.publish(next);
        bump(&self.counters.copied, 1);
        Some(prod.wrapping_sub(next))
    }

    /// Skips discarded records within the known part of the ring and says
    /// what is at the cursor then. Moves only over discards (each one
    /// re-read by the fast path's caller is then a record), no stores to
    /// shared memory.
    pub(crate) fn skip_discards(&self) -> Head {
        loop {
            let pos = self.pos.get();
            match self.head() {
                None => return Head::End,
                Some(Peek::Discard { next }) => {
                    self.pos.set(next);
                    bump(&self.counters.discarded, 1);
                }
                Some(Peek::Record { .. }) => return Head::Record,
                Some(Peek::Busy) => return Head::Busy,
                Some(Peek::Corrupt { len, available }) => {
                    return Head::Corrupt(Corruption::Header {
                        pos,
                        len,
                        available,
                    })
                }
            }
        }
    }

    /// What is at the cursor, using the cached producer position: `None`
    /// when the cursor has reached it. Re-reads the header; moves nothing.
    #[inline]
    pub(crate) fn head(&self) -> Option<Peek> {
        let pos = self.pos.get();
        let prod = self.prod.get();
        (pos != prod).then(|| self.ring.peek(pos, prod))
    }

    /// Loads the producer position (one Acquire load) and checks it.
    /// `Ok(true)` if there is something past the cursor.
    #[inline]
    pub(crate) fn reload(&self) -> Result<bool, Corruption> {
        let pos = self.pos.get();
        let prod = self.ring.load_producer();
        if !self.ring.check_producer(pos, prod) {
            return Err(self.bad_producer(pos, prod));
        }
        self.prod.set(prod);
        self.note_fill(prod);
        Ok(prod != pos)
    }

    #[cold]
    fn bad_producer(&self, pos: usize, producer: usize) -> Corruption {
        Corruption::Producer {
            pos,
            producer,
            size: self.ring.size(),
        }
    }

    /// Publishes the cursor (one Release store, none if unchanged). Ends every
    /// lent slice, hence `&mut self`.
    #[inline]
    pub(crate) fn publish(&mut self) {
        let pos = self.pos.get();
        self.owed.set(None);
        if pos != self.published.get() {
            self.mark_published(pos);
            self.lent.set(false);
            self.ring.publish(pos);
        }
    }

    /// Publishes the cursor if no slice is lent since the last publish (only
    /// skipped discards lie past the published position).
    #[inline]
    pub(crate) fn publish_unlent(&self) {
        let pos = self.pos.get();
        if !self.lent.get() && pos != self.published.get() {
            self.mark_published(pos);
            self.ring.publish(pos);
        }
    }

    /// Publishes the cursor and re-checks emptiness with the wakeup fence, if
    /// no slice is lent (only skipped discards lie past the published
    /// position). `None` if a slice is lent; else `Some(empty)`.
    #[inline]
    pub(crate) fn publish_unlent_and_check_empty(&self) -> Option<bool> {
        if self.lent.get() {
            return None;
        }
        let pos = self.pos.get();
        self.mark_published(pos);
        Some(self.ring.publish_and_check_empty(pos))
    }

    /// The head record is BUSY: publish the cursor with the wakeup fence (if
    /// no slice is lent) so the kernel wakes us when it commits, then re-read
    /// the header. Returns whether it is still BUSY. (With a slice lent the
    /// kernel will not wake us; the caller's sleep is bounded anyway.)
    pub(crate) fn publish_unlent_and_check_busy(&self) -> bool {
        if !self.lent.get() {
            let pos = self.pos.get();
            self.mark_published(pos);
            self.ring.publish_and_fence(pos);
        }
        matches!(self.head(), Some(Peek::Busy))
    }

    /// [`publish`](Self::publish), the wakeup fence, then a look at the
    /// ring: empty (safe to sleep: the kernel will wake us), a record to
    /// read, or a head record still BUSY (its commit will wake us unless it
    /// is made with `BPF_RB_NO_WAKEUP`).
    pub(crate) fn prepare_wait(&mut self) -> Result<HeadState, Corruption> {
        if self.publish_and_check_empty() {
            return Ok(HeadState::Empty);
        }
        // Something was produced. The fence above ordered our publication
        // before this look at the head, so a BUSY head's commit sees it.
        self.reload()?;
        Ok(match self.head() {
            Some(Peek::Busy) => HeadState::Busy,
            // A corrupt head is reported by the read that follows.
            _ => HeadState::Ready,
        })
    }

    /// [`publish`](Self::publish), then the wakeup fence and re-check.
    pub(crate) fn publish_and_check_empty(&mut self) -> bool {
        let pos = self.pos.get();
        self.mark_published(pos);
        self.lent.set(false);
        self.ring.publish_and_check_empty(pos)
    }

    /// Delivers records up to the producer position loaded now, within the
    /// budget, then publishes once; and, within a drain longer than
    /// `publish_every` ring bytes, after every `publish_every` bytes as well
    /// (so a producer that samples the unconsumed data sees progress).
    /// Returns (records, bytes, how it ended).
    #[inline]
    pub(crate) fn drain<F>(
        &mut self,
        max_records: usize,
        max_bytes: usize,
        publish_every: usize,
        f: F,
    ) -> (usize, usize, DrainEnd)
    where
        F: FnMut(&[u8]) -> ControlFlow<()>,
    {
        // One load of the producer position yields at most `size` bytes, so
        // at most `size / 8` records and fewer than `size` payload bytes: a
        // budget above both can never stop the loop, which then runs
        // without its two compares per record.
        let size = self.ring.size();
        if max_records > size / HDR_SZ && max_bytes > size {
            self.drain_loop::<F, false>(max_records, max_bytes, publish_every, f)
        } else {
            self.drain_loop::<F, true>(max_records, max_bytes, publish_every, f)
        }
    }

    /// What [`drain_loop`](Self::drain_loop) does at its `stop` mark, out of
    /// the loop (cold, not inlined: otherwise the compiler computes parts of
    /// it for every record): publishes if a chunk of `every` bytes is done,
    /// looks at the byte budget if due; returns the next mark, or `None`
    /// when the byte budget is used up. `left > 0`.
    #[cold]
    #[inline(never)]
    fn look(&mut self, m: &mut Marks, pos: usize, left: usize, bytes: usize) -> Option<usize> {
        if left <= m.publish_at {
            // A chunk is done and more is there: hand it back now.
            self.pos.set(pos);
            self.publish();
            m.publish_at = left.saturating_sub(m.every);
        }
        if left <= m.budget_at {
            if bytes >= m.max_bytes {
                return None;
            }
            m.budget_at = left.saturating_sub(m.max_bytes - bytes);
        }
        Some(m.stop())
    }

    /// [`drain`](Self::drain)'s loop; `BUDGET`: the budget can stop it.
    /// The position, the bytes left before the producer position and the
    /// ring's base and mask stay in locals (registers) for the whole batch.
    ///
    /// The budget costs one decrement and test per record: the record budget
    /// counts down, and the byte budget is looked at only at the loop's
    /// `stop` mark, like the publish cadence. Payload bytes grow no faster
    /// than the ring bytes they come from, so after a look that found
    /// `bytes` delivered, the budget cannot be reached before
    /// `max_bytes - bytes` more ring bytes: the next look is set there, and
    /// the first record boundary where `bytes >= max_bytes` always finds
    /// itself at or past it.
    #[inline(always)]
    fn drain_loop<F, const BUDGET: bool>(
        &mut self,
        max_records: usize,
        max_bytes: usize,
        publish_every: usize,
        mut f: F,
    ) -> (usize, usize, DrainEnd)
    where
        F: FnMut(&[u8]) -> ControlFlow<()>,
    {
        // A copy of the pointers: the Acquire fences below would otherwise
        // make the compiler reload them from `self` at every header.
        let ring = self.ring;
        let mut pos = self.pos.get();
        let prod = ring.load_producer();
        if !ring.check_producer(pos, prod) {
            self.publish();
            return (0, 0, DrainEnd::Corrupt(self.bad_producer(pos, prod)));
        }
        self.prod.set(prod);
        self.note_fill(prod);
        // Bytes produced past `pos`: `check_producer` bounded it by `size`,
        // and every stride taken from it below is checked against it first.
        let mut left = prod.wrapping_sub(pos);
        // Publish once `left` falls to `stop` or below (a chunk of
        // `publish_every` bytes is done): the loop's end test compares with
        // `stop` instead of 0, so the cadence costs nothing per record.
        let mut marks = Marks {
            every: publish_every.max(HDR_SZ),
            publish_at: 0,
            budget_at: 0,
            max_bytes: if BUDGET { max_bytes } else { usize::MAX },
        };
        marks.publish_at = left.saturating_sub(marks.every);
        if BUDGET {
            marks.budget_at = left.saturating_sub(max_bytes);
        }
        let mut stop = marks.stop();
        // Records delivered (without a budget), or still allowed (with one).
        let mut records = if BUDGET { max_records } else { 0 };
        let mut bytes = 0usize;
        // Where the last record delivered starts (for `hold_last`).
        let mut last = pos;
        let end = loop {
            if left <= stop {
                if left == 0 {
                    break DrainEnd::Empty;
                }
                match self.look(&mut marks, pos, left, bytes) {
                    Some(s) => stop = s,
                    None => break DrainEnd::Budget,
                }
            }
            if BUDGET && records == 0 {
                break DrainEnd::Budget;
            }
            let (len, next, ptr) = match ring.peek_record(pos, left) {
                Some(rec) => rec,
                // Decoded again: BUSY, a discard, corrupt, or (committed in
                // between) a record after all.
                None => match ring.peek_within(pos, left) {
                    (Peek::Record { len, next }, ptr) => (len, next, ptr),
                    (Peek::Discard { next }, _) => {
                        left -= next.wrapping_sub(pos);
                        pos = next;
                        bump(&self.counters.discarded, 1);
                        continue;
                    }
                    (Peek::Busy, _) => break DrainEnd::Busy,
                    (Peek::Corrupt { len, available }, _) => {
                        break DrainEnd::Corrupt(Corruption::Header {
                            pos,
                            len,
                            available,
                        })
                    }
                },
            };
            // SAFETY: `peek_record` or `peek_within` found a record. The
            // slice is lent to `f` for this call only (`F: FnMut(&[u8])` is
            // higher-ranked, so it cannot keep it), and we publish only after
            // `f` returns.
            let rec = unsafe { ptr.slice(len) };
            left -= next.wrapping_sub(pos);
            last = pos;
            pos = next;
            if BUDGET {
                records -= 1;
            } else {
                records += 1;
            }
            bytes += len;
            if f(rec).is_break() {
                break DrainEnd::Callback;
            }
        };
        self.pos.set(pos);
        if BUDGET {
            records = max_records - records;
        }
        // Under a napping policy, an emptying drain holds the last record it
        // delivered back (see `hold_last`): it publishes only up to that
        // record's start, the rest is owed (published later, or on drop).
        // So does one that stopped at a reserved, uncommitted record: else
        // its commit would find the consumer caught up and wake it (the
        // reader's wait for it is bounded anyway).
        // A drain that delivered nothing keeps a hold already there, with
        // any discards it skipped (publishing would make the next commit
        // wake the reader). Never behind what is published already: a
        // publish within this drain (`look`) may have passed the last
        // record, and positions only grow; then what is held is what lies
        // past that publish (discards).
        let published = self.published.get();
        let hold_from = if records > 0 && pos.wrapping_sub(last) <= pos.wrapping_sub(published) {
            Some(last)
        } else if records > 0 || self.owed.get().is_some() {
            Some(published)
        } else {
            None
        };
        match hold_from {
            Some(from)
                if self.hold_last.get()
                    && matches!(end, DrainEnd::Empty | DrainEnd::Busy)
                    && !self.lent.get()
                    && from != pos
                    && self.may_hold(from, pos) =>
            {
                if from != published {
                    self.mark_published(from);
                    self.ring.publish(from);
                }
                self.owed.set(Some(pos));
            }
            _ => self.publish(),
        }
        bump(&self.counters.records, records as u64);
        (records, bytes, end)
    }
}

/// Peeking for the ordered merge of a ring set (`RingSet::consume_ordered`):
/// look at the head record in place, then take it with
/// [`Cursor::next_record`]. Linux only (ring sets are).
#[cfg(target_os = "linux")]
impl Cursor {
    /// The committed record at the cursor, within the known part of the ring
    /// (the producer position of the last reload), skipping discards but not
    /// moving past it: `Ok(None)` at the end of the known part or at a BUSY
    /// record. The next [`next_record`](Self::next_record) returns the same
    /// record (a committed header stays so until we publish past it).
    pub(crate) fn peek_head_record(&self) -> Result<Option<&[u8]>, Corruption> {
        loop {
            if let Some((len, _next, ptr, _prod)) = self.peek_next() {
                // SAFETY: `peek_record` found a committed record at the
                // cursor. The slice borrows `self`. Only a publish past the
                // cursor could release it: `publish(&mut self)` cannot run
                // while the borrow lives, and the `&self` publishes
                // (`publish_unlent*`) publish at most the cursor itself,
                // which is this record's start, or refuse once `next_record`
                // has moved past it (it sets `lent`).
                return Ok(Some(unsafe { ptr.slice(len) }));
            }
            match self.skip_discards() {
                Head::Record => continue,
                Head::End | Head::Busy => return Ok(None),
                Head::Corrupt(c) => return Err(c),
            }
        }
    }
}

/// The marks of [`Cursor::drain_loop`]: where (in bytes left before the
/// producer position) it next publishes, and next looks at its byte budget.
struct Marks {
    /// The publish cadence.
    every: usize,
    /// Publish once `left` is at or below this.
    publish_at: usize,
    /// Look at the byte budget once `left` is at or below this (0: never
    /// before the end).
    budget_at: usize,
    /// The byte budget (`usize::MAX`: none).
    max_bytes: usize,
}

impl Marks {
    /// The loop's next stop: the nearer of the two marks.
    #[inline]
    fn stop(&self) -> usize {
        self.publish_at.max(self.budget_at)
    }
}

impl Drop for Cursor {
    /// Hands back a record held back by a napping reader: the reader was done
    /// with it. (Records lent and not committed are not published: dropping
    /// does not commit them.)
    fn drop(&mut self) {
        if let Some(owed) = self.owed.get() {
            if owed != self.published.get() {
                // Release, as in `publish`; the memory is still mapped (`_mem`
                // drops after this).
                self.ring.publish(owed);
            }
        }
    }
}
