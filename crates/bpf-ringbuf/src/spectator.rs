//! Reads that never consume: [`Spectator`] (look at a live ring without
//! taking its records) and [`FlightRecorder`] (the reader of overwrite-mode
//! rings).
//!
//! # Which one to use
//!
//! | you want | use | consumes | copies | sees every record |
//! |---|---|---|---|---|
//! | the records, each once, at full speed | [`Reader`](crate::Reader) | yes | no (zero-copy) | yes |
//! | to watch a ring another program consumes, without disturbing it | [`Spectator`] | no | yes | only those it copies before the producer reuses their space; the rest are counted as lapped |
//! | the last events of an overwrite-mode ring (`BPF_F_RB_OVERWRITE`, Linux 6.19+), after something went wrong, or to follow it | [`FlightRecorder`] | no | yes | the same; gaps are reported in-band |
//!
//! A spectator never writes the consumer position (its consumer page is
//! mapped read-only), and does not count as this process's consumer of the
//! map: a [`Reader`](crate::Reader) of the same map works next to it. (It
//! still needs a read-write descriptor: the kernel maps no part of a ring for
//! a `BPF_F_RDONLY` one.) It cannot make the
//! producer wait: when it falls behind, the producer overwrites records it
//! has not read yet, and it counts them ([`SpectatorStats`]).
//!
//! # Why copy-and-validate is sound
//!
//! The producer may rewrite a record's space while a spectator reads it, so
//! the spectator never builds a `&[u8]` over ring memory: it copies the
//! record out with relaxed atomic loads (which may race with the producer's
//! stores without undefined behaviour), then loads `producer_pos` again. The
//! producer writes a record's space again only at positions a whole ring
//! further on, and only after reserving them: the new record's header just
//! before the Release store of `producer_pos`, its payload after. So every
//! store the copy may have seen lies below the producer position loaded
//! after it plus one header; if that position is less than a ring size past
//! the record's start, nothing of the next lap has reached the record, and
//! the copy is exactly what was committed (its header's Acquire load, which
//! saw the commit, made the payload visible). Otherwise the record is
//! *lapped*: counted, never returned. The header is validated the same way
//! before its length is used. This needs the producer's payload stores to
//! become visible no earlier than the `producer_pos` store that reserved
//! them, which x86-64 guarantees (stores are seen in program order); on
//! weakly ordered CPUs (arm64) the kernel's Release store orders only what
//! precedes it, and a record torn by a producer a full lap ahead at that
//! very moment could pass.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::map::{check_map, check_spectator_flags, RingBuf};
use crate::reader::earliest;
use crate::ring::abi::{record_stride, HEADER_SIZE};
pub use crate::ring::spectate::SpectatorStats;
use crate::ring::spectate::{Look, SpectateCursor, StartAt};
use crate::sys::{self, bpf, mmap::Mmap};
use crate::wait::{self, ReaderHandle, Shared, Waiter};

/// Where a [`Spectator`] starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// At the published consumer position: the records a consumer has not
    /// read yet (in overwrite mode, what it has not read and is still there).
    #[default]
    Consumer,
    /// At the oldest record still in the ring: `overwrite_pos` in overwrite
    /// mode, else the consumer position (the space before it may be reused
    /// at any time).
    Oldest,
    /// At the producer position: only records reserved from now on.
    Now,
}

/// A record a [`Spectator`] copied into the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    /// The ring position of the record's header.
    pub position: u64,
    /// The payload length (the buffer's new length).
    pub len: usize,
}

impl Observed {
    /// The position of the record after this one (header and padding
    /// included): what [`FlightRecorder::since`] takes to continue here.
    pub fn next_position(&self) -> u64 {
        self.position.wrapping_add(record_stride(self.len) as u64)
    }
}

/// Records the producer overwrote before a spectator could copy them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The ring position where the gap starts (the spectator's position).
    pub position: u64,
    /// Ring bytes skipped (headers and padding included).
    pub bytes: u64,
    /// How many records they held, when known. `None` when the producer
    /// overwrote their headers before the spectator read them: it then
    /// starts again from the oldest record boundary it can trust, and only
    /// the bytes are known.
    pub records: Option<u64>,
}

/// What a spectator found next: a record (copied into the caller's buffer)
/// or a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A committed record, intact.
    Record(Observed),
    /// Records lost to the producer.
    Gap(Gap),
}

/// Reads a ring's records without consuming them: the consumer position is
/// never written, and another consumer of the map is not disturbed. Every
/// record returned is byte-for-byte what the producer committed; records
/// the producer overwrote while (or before) they were copied are counted,
/// not returned. Works on overwrite-mode rings too. See the
/// [module docs](crate::spectator) for when to use it.
///
/// ```no_run
/// # fn main() -> bpf_ringbuf::Result<()> {
/// use std::time::{Duration, Instant};
/// use bpf_ringbuf::{Error, Spectator, Start};
///
/// // A ring some agent reads: look at what flows through it for a second.
/// let mut spectator = Spectator::open_pinned("/sys/fs/bpf/events", Start::Now)?;
/// spectator.set_deadline(Some(Instant::now() + Duration::from_secs(1)));
/// let mut buf = Vec::new();
/// loop {
///     match spectator.read_into(&mut buf) {
///         Ok(rec) => println!("{} bytes at {}", rec.len, rec.position),
///         Err(Error::DeadlineExceeded) => break,
///         Err(e) => return Err(e),
///     }
/// }
/// let stats = spectator.stats();
/// println!("{} records seen, {} lapped", stats.records, stats.lapped_records);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Spectator {
    /// The read-only cursor, owning the mappings; declared first, so the
    /// memory is unmapped before the descriptor closes.
    cur: SpectateCursor,
    /// The ring's descriptor (a duplicate; or a fake ring's eventfd).
    _fd: OwnedFd,
    overwrite: bool,
    deadline: Option<Instant>,
    poll_interval: Duration,
    shared: Arc<Shared>,
    waiter: Waiter,
}

/// The default of [`Spectator::set_poll_interval`].
const DEFAULT_POLL: Duration = Duration::from_millis(2);

fn start_at(start: Start) -> StartAt {
    match start {
        Start::Consumer => StartAt::Consumer,
        Start::Oldest => StartAt::Oldest,
        Start::Now => StartAt::Now,
    }
}

impl Spectator {
    /// Opens a spectator of a ring buffer map: a [`RingBuf`], or any `AsFd`
    /// that is one (an aya or libbpf-rs map, a raw `OwnedFd`), normal or in
    /// overwrite mode. The descriptor must be read-write (the kernel refuses
    /// to map a ring for a `BPF_F_RDONLY` one: `EINVAL`), though nothing is
    /// ever written.
    ///
    /// The descriptor is duplicated. Both mappings are read-only. Unlike a
    /// [`Reader`](crate::Reader), it does not claim the map: a reader of the
    /// same map may live next to it.
    ///
    /// Errors: [`Error::WrongMapType`], [`Error::NotAMap`], [`Error::BadFd`],
    /// [`Error::UnsupportedMapFlags`] for a flag other than overwrite mode
    /// that changes the protocol, [`Error::MisalignedConsumerPosition`], or
    /// the failing call.
    pub fn new(map: impl AsFd, start: Start) -> Result<Spectator> {
        let borrowed = map.as_fd();
        let checked = check_map(borrowed, bpf::BPF_MAP_TYPE_RINGBUF)?;
        let overwrite = check_spectator_flags(checked.flags)?;
        let fd = sys::dup(borrowed)?;
        let size = checked.size;
        let page = sys::page_size();
        // Read-only, the consumer page included: a spectator never writes
        // consumer_pos.
        let (consumer, producer) = Mmap::map_ring(fd.as_fd(), page, size, false)?;
        let cur = SpectateCursor::from_kernel_mappings(
            consumer,
            producer,
            page,
            size,
            overwrite,
            start_at(start),
        )?;
        Spectator::from_parts(cur, fd, overwrite)
    }

    /// `bpf(BPF_OBJ_GET)`, then [`new`](Self::new): a spectator of the ring
    /// pinned at `path`.
    pub fn open_pinned(path: impl AsRef<Path>, start: Start) -> Result<Spectator> {
        Spectator::new(RingBuf::open_pinned(path)?, start)
    }

    /// `bpf(BPF_MAP_GET_FD_BY_ID)`, then [`new`](Self::new).
    pub fn from_id(id: u32, start: Start) -> Result<Spectator> {
        Spectator::new(RingBuf::from_id(id)?, start)
    }

    pub(crate) fn from_parts(
        cur: SpectateCursor,
        fd: OwnedFd,
        overwrite: bool,
    ) -> Result<Spectator> {
        let shared = Shared::new()?;
        let waiter = Waiter::new(fd.as_fd(), &shared)?;
        Ok(Spectator {
            cur,
            _fd: fd,
            overwrite,
            deadline: None,
            poll_interval: DEFAULT_POLL,
            shared,
            waiter,
        })
    }

    /// The next record, copied into `buf` (replacing its contents), or a
    /// gap; `Ok(None)` when there is nothing new (the producer position is
    /// reached, or the next record is reserved but not yet committed).
    /// Discarded records are skipped. Never blocks.
    ///
    /// Errors: [`Error::Closed`] after [`ReaderHandle::close`],
    /// [`Error::Corrupt`] for a header that claims more than was produced,
    /// [`Error::CorruptProducerPosition`] for positions that cannot be.
    #[inline]
    pub fn try_next(&mut self, buf: &mut Vec<u8>) -> Result<Option<Event>> {
        if self.shared.is_closed() {
            return Err(Error::Closed);
        }
        loop {
            return Ok(Some(match self.cur.step(buf)? {
                Look::Record { pos, len } => Event::Record(Observed {
                    position: pos as u64,
                    len,
                }),
                Look::Gap {
                    pos,
                    bytes,
                    records,
                } => Event::Gap(Gap {
                    position: pos as u64,
                    bytes: bytes as u64,
                    records,
                }),
                Look::Discard => continue,
                Look::Busy | Look::Empty => return Ok(None),
            }));
        }
    }

    /// [`try_next`](Self::try_next), skipping gaps (they are in
    /// [`stats`](Self::stats)): the next intact record copied into `buf`,
    /// or `Ok(None)` when there is nothing new. Never blocks.
    #[inline]
    pub fn try_read_into(&mut self, buf: &mut Vec<u8>) -> Result<Option<Observed>> {
        loop {
            match self.try_next(buf)? {
                Some(Event::Record(r)) => return Ok(Some(r)),
                Some(Event::Gap(_)) => continue,
                None => return Ok(None),
            }
        }
    }

    /// The next record or gap, waiting for one: the spectator looks again
    /// every [`poll_interval`](Self::poll_interval), or sooner when the
    /// kernel wakes the ring's waiters (it does so for its consumer, not for
    /// a spectator). Honours the [deadline](Self::set_deadline) and the
    /// [`handle`](Self::handle)'s flush and close, like
    /// [`Reader::read`](crate::Reader::read): [`Error::DeadlineExceeded`],
    /// [`Error::Flushed`] (once, when nothing new is left), [`Error::Closed`].
    pub fn next_event(&mut self, buf: &mut Vec<u8>) -> Result<Event> {
        loop {
            if let Some(e) = self.try_next(buf)? {
                return Ok(e);
            }
            self.nap()?;
        }
    }

    /// [`next_event`](Self::next_event), skipping gaps: the next intact
    /// record, copied into `buf`.
    pub fn read_into(&mut self, buf: &mut Vec<u8>) -> Result<Observed> {
        loop {
            if let Event::Record(r) = self.next_event(buf)? {
                return Ok(r);
            }
        }
    }

    /// Nothing new: stop (deadline, flush, close) or sleep one interval.
    fn nap(&self) -> Result<()> {
        wait::check_stop(&self.shared, self.deadline)?;
        let until = earliest(
            Instant::now().checked_add(self.poll_interval),
            self.deadline,
        );
        self.waiter.sleep(&self.shared, until)?;
        Ok(())
    }

    /// Moves to `start` (the counters stay).
    pub fn seek(&mut self, start: Start) -> Result<()> {
        Ok(self.cur.seek(start_at(start))?)
    }

    /// Moves to `position`, which must be a record boundary this ring had:
    /// one returned as [`Observed::position`], [`Observed::next_position`],
    /// [`Gap::position`] or [`position`](Self::position). A position the
    /// producer has since overwritten shows as a [`Gap`] at the next read.
    ///
    /// Errors: [`Error::BadPosition`] for a position that is not 8-aligned or
    /// lies ahead of the producer.
    pub fn seek_to(&mut self, position: u64) -> Result<()> {
        let pos = position as usize;
        let prod = self.cur.raw().load_producer();
        let ahead = pos.wrapping_sub(prod);
        if pos % HEADER_SIZE != 0 || (ahead != 0 && ahead <= isize::MAX as usize) {
            return Err(Error::BadPosition {
                position,
                producer: prod as u64,
            });
        }
        Ok(self.cur.seek(StartAt::At(pos))?)
    }

    /// Sets the deadline for [`next_event`](Self::next_event) and
    /// [`read_into`](Self::read_into). `None` waits forever; a deadline in
    /// the past means "read what is there now".
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }

    /// The deadline set by [`set_deadline`](Self::set_deadline).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// How often a blocking read looks at an empty ring (default 2 ms): the
    /// kernel's wakeups go to the consumer's rhythm, not the spectator's.
    pub fn set_poll_interval(&mut self, interval: Duration) {
        self.poll_interval = interval;
    }

    /// The interval set by [`set_poll_interval`](Self::set_poll_interval).
    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// A handle to flush or close this spectator from any thread (the same
    /// type as a [`Reader`](crate::Reader)'s).
    pub fn handle(&self) -> ReaderHandle {
        ReaderHandle {
            shared: self.shared.clone(),
        }
    }

    /// The counters since this spectator was opened.
    pub fn stats(&self) -> SpectatorStats {
        *self.cur.counters()
    }

    /// The spectator's position: where the next record it reads starts.
    pub fn position(&self) -> u64 {
        self.cur.pos() as u64
    }

    /// The producer position now.
    pub fn producer_position(&self) -> u64 {
        self.cur.raw().load_producer() as u64
    }

    /// The consumer position a consumer published (never written by a
    /// spectator).
    pub fn consumer_position(&self) -> u64 {
        self.cur.raw().load_consumer() as u64
    }

    /// `overwrite_pos`, the oldest record still intact, for a ring in
    /// overwrite mode; `None` otherwise.
    pub fn overwrite_position(&self) -> Option<u64> {
        self.cur.load_overwrite().map(|p| p as u64)
    }

    /// Bytes the ring holds unconsumed as the kernel counts them
    /// (`BPF_RB_AVAIL_DATA`): the producer position minus the consumer
    /// position, or in overwrite mode minus the later of the consumer and
    /// overwrite positions.
    pub fn available_bytes(&self) -> u64 {
        let cons = self.cur.raw().load_consumer();
        let over = self.cur.load_overwrite();
        let prod = self.cur.raw().load_producer();
        let oldest = match over {
            // The later of the two, in ring order.
            Some(o) if o.wrapping_sub(cons) <= isize::MAX as usize => o,
            _ => cons,
        };
        prod.wrapping_sub(oldest) as u64
    }

    /// Bytes between the spectator's position and the producer's now: what
    /// it has still to read (or lost, beyond the ring size).
    pub fn lag(&self) -> u64 {
        self.cur.raw().load_producer().wrapping_sub(self.cur.pos()) as u64
    }

    /// The ring's data size in bytes.
    pub fn buffer_size(&self) -> usize {
        self.cur.raw().size()
    }

    /// Whether the ring is in overwrite mode (`BPF_F_RB_OVERWRITE`).
    pub fn is_overwrite(&self) -> bool {
        self.overwrite
    }
}

/// A record a [`FlightRecorder`] copied out, with its ring position.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recorded {
    /// The ring position of the record's header.
    pub position: u64,
    /// The payload.
    pub data: Vec<u8>,
}

/// An item of [`FlightRecorder::since`]: a record, or records lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A committed record, intact.
    Record(Recorded),
    /// Records lost to the producer.
    Gap(Gap),
}

/// The reader of an overwrite-mode ring (`BPF_F_RB_OVERWRITE`, Linux 6.19+):
/// a "flight recorder" whose producer never waits and overwrites its oldest
/// records, read after something went wrong. Built on a [`Spectator`]: it
/// never consumes, and every record it returns is intact.
///
/// * [`last`](Self::last): the last `n` records, newest last;
/// * [`since`](Self::since): everything from a position seen before, with a
///   [`Gap`] first if the producer has overwritten some of it since;
/// * [`follow`](Self::follow): every record as it comes, gaps in-band.
///
/// It reads normal rings too, where "the oldest record" is the consumer
/// position.
///
/// ```no_run
/// # fn main() -> bpf_ringbuf::Result<()> {
/// use bpf_ringbuf::FlightRecorder;
/// let mut recorder = FlightRecorder::open_pinned("/sys/fs/bpf/flight")?;
/// for rec in recorder.last(10)? {
///     println!("{}: {} bytes", rec.position, rec.data.len());
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FlightRecorder {
    spec: Spectator,
}

impl FlightRecorder {
    /// A recorder of the ring `map` (see [`Spectator::new`]), positioned at
    /// its oldest record.
    pub fn new(map: impl AsFd) -> Result<FlightRecorder> {
        Ok(FlightRecorder {
            spec: Spectator::new(map, Start::Oldest)?,
        })
    }

    /// `bpf(BPF_OBJ_GET)`, then [`new`](Self::new).
    pub fn open_pinned(path: impl AsRef<Path>) -> Result<FlightRecorder> {
        FlightRecorder::new(RingBuf::open_pinned(path)?)
    }

    /// `bpf(BPF_MAP_GET_FD_BY_ID)`, then [`new`](Self::new).
    pub fn from_id(id: u32) -> Result<FlightRecorder> {
        FlightRecorder::new(RingBuf::from_id(id)?)
    }

    /// Wraps a spectator (for example one of a `testing::FakeRing`).
    pub fn from_spectator(spec: Spectator) -> FlightRecorder {
        FlightRecorder { spec }
    }

    /// The last `n` intact records in the ring, newest last: reads from the
    /// oldest record up to the producer position seen when the call starts,
    /// and leaves the recorder there (so [`follow`](Self::follow) continues
    /// after them). Records the producer overwrites during the call are
    /// left out (they are in the [stats](Spectator::stats)).
    pub fn last(&mut self, n: usize) -> Result<Vec<Recorded>> {
        self.spec.seek(Start::Oldest)?;
        let end = self.spec.producer_position();
        let mut out: VecDeque<Recorded> = VecDeque::with_capacity(n.min(1024));
        let mut buf = Vec::new();
        while (end.wrapping_sub(self.spec.position()) as i64) > 0 {
            match self.spec.try_next(&mut buf)? {
                Some(Event::Record(r)) => {
                    if n == 0 {
                        continue;
                    }
                    if out.len() == n {
                        out.pop_front();
                    }
                    out.push_back(Recorded {
                        position: r.position,
                        data: buf.clone(),
                    });
                }
                Some(Event::Gap(_)) => {}
                None => break,
            }
        }
        Ok(out.into())
    }

    /// Every record from `position` (a record boundary seen before, such as
    /// [`Observed::next_position`] or [`position`](Self::position)) up to
    /// the producer position now, oldest first; a [`Gap`] where the producer
    /// overwrote records first. Leaves the recorder at the end.
    ///
    /// Errors: [`Error::BadPosition`] for a position that is not 8-aligned or
    /// lies ahead of the producer.
    pub fn since(&mut self, position: u64) -> Result<Vec<Entry>> {
        self.spec.seek_to(position)?;
        let end = self.spec.producer_position();
        let mut out = Vec::new();
        let mut buf = Vec::new();
        while (end.wrapping_sub(self.spec.position()) as i64) > 0 {
            match self.spec.try_next(&mut buf)? {
                Some(Event::Record(r)) => out.push(Entry::Record(Recorded {
                    position: r.position,
                    data: buf.clone(),
                })),
                Some(Event::Gap(g)) => out.push(Entry::Gap(g)),
                None => break,
            }
        }
        Ok(out)
    }

    /// Follow mode: the next record (copied into `buf`) or gap, waiting for
    /// one as [`Spectator::next_event`] does (deadline, flush, close).
    pub fn follow(&mut self, buf: &mut Vec<u8>) -> Result<Event> {
        self.spec.next_event(buf)
    }

    /// [`follow`](Self::follow) without waiting: `Ok(None)` when there is
    /// nothing new.
    pub fn try_follow(&mut self, buf: &mut Vec<u8>) -> Result<Option<Event>> {
        self.spec.try_next(buf)
    }

    /// The recorder's position: where the next record it reads starts.
    pub fn position(&self) -> u64 {
        self.spec.position()
    }

    /// The spectator underneath: positions, stats, deadline, handle.
    pub fn spectator(&self) -> &Spectator {
        &self.spec
    }

    /// The spectator underneath, to set its deadline or poll interval.
    pub fn spectator_mut(&mut self) -> &mut Spectator {
        &mut self.spec
    }
}
