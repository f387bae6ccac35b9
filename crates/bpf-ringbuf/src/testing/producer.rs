//! [`KernelProducer`]: a hand-assembled BPF program that writes records into
//! a ring buffer from the kernel, run on demand with `BPF_PROG_TEST_RUN`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use super::asm::*;
use crate::error::{Error, Result};
use crate::lost::LostCounter;
use crate::map::check_map;
use crate::sys::bpf;

/// Record sizes the producer writes (payload bytes, header excluded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordSize {
    /// Every record has this many bytes.
    Fixed(usize),
    /// Records cycle through these sizes, in order, per map: at most
    /// [`ProducerConfig::MAX_MIXED_SIZES`] sizes, summing to at most
    /// [`ProducerConfig::MAX_MIXED_TOTAL`] bytes.
    Mixed(Vec<usize>),
}

/// The flag passed to `bpf_ringbuf_submit`/`bpf_ringbuf_discard`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Wakeup {
    /// 0: the kernel wakes the consumer if it had caught up.
    #[default]
    Default,
    /// `BPF_RB_NO_WAKEUP` (1): never wake; the consumer needs a deadline or a flush.
    NoWakeup,
    /// `BPF_RB_FORCE_WAKEUP` (2): always wake.
    ForceWakeup,
    /// Sampled wakeups, as the kernel's ring buffer benchmark
    /// (`tools/testing/selftests/bpf/progs/ringbuf_bench.c`, `get_flags()`)
    /// and the tools that copied it: once the record is reserved and filled,
    /// just before its commit, the producer asks for the unconsumed bytes
    /// (`bpf_ringbuf_query(map, BPF_RB_AVAIL_DATA)`: `producer_pos` minus
    /// the *published* `consumer_pos`, so this record and every other one
    /// reserved so far count) and commits with
    /// [`ForceWakeup`](Self::ForceWakeup) when they are at least `threshold`
    /// bytes, else with [`NoWakeup`](Self::NoWakeup).
    ///
    /// Bytes are ring bytes: each record counts its 8-byte header and its
    /// padding (`abi::record_stride`). The benchmark's
    /// `wakeup_data_size = sample_rate * 16` with 8-byte records is a wakeup
    /// every `sample_rate` records for a consumer that is not reading.
    ///
    /// So a consumer that has caught up is *not* woken until `threshold`
    /// bytes are waiting, and while at least `threshold` bytes stay unread,
    /// every commit forces a wakeup.
    Sampled {
        /// The unconsumed bytes from which commits force a wakeup.
        threshold: u64,
    },
}

impl Wakeup {
    /// `BPF_RB_NO_WAKEUP`.
    const NO_WAKEUP: i32 = 1;
    /// `BPF_RB_FORCE_WAKEUP`.
    const FORCE_WAKEUP: i32 = 2;

    /// The commit flag when `available` bytes are unconsumed just before the
    /// commit (`bpf_ringbuf_query(map, BPF_RB_AVAIL_DATA)`). The generated
    /// program makes the same choice in BPF (`commit_flags`).
    pub(crate) fn flags(self, available: u64) -> i32 {
        match self {
            Wakeup::Default => 0,
            Wakeup::NoWakeup => Self::NO_WAKEUP,
            Wakeup::ForceWakeup => Self::FORCE_WAKEUP,
            Wakeup::Sampled { threshold } if available >= threshold => Self::FORCE_WAKEUP,
            Wakeup::Sampled { .. } => Self::NO_WAKEUP,
        }
    }

    /// Whether the kernel's `bpf_ringbuf_commit` wakes the consumer for a
    /// commit with `flags`: always with `BPF_RB_FORCE_WAKEUP`, never with
    /// `BPF_RB_NO_WAKEUP`, else only if the consumer had `caught_up`
    /// (published `consumer_pos` == the record's position).
    pub(crate) fn kernel_wakes(flags: i32, caught_up: bool) -> bool {
        if flags & Self::FORCE_WAKEUP != 0 {
            true
        } else {
            flags & Self::NO_WAKEUP == 0 && caught_up
        }
    }
}

/// How a [`KernelProducer`] writes records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    /// Payload size of each record, 8 to [`ProducerConfig::MAX_RECORD`] bytes.
    pub size: RecordSize,
    /// Discard (reserve, fill, then `bpf_ringbuf_discard`) every record whose
    /// sequence number `seq` has `(seq + 1) % k == 0`. `None`: discard nothing.
    pub discard_every: Option<u32>,
    /// The commit flag, or for [`Wakeup::Sampled`] the rule that picks it.
    pub wakeup: Wakeup,
}

impl Default for ProducerConfig {
    /// 64-byte records, no discards, default wakeups.
    fn default() -> ProducerConfig {
        ProducerConfig {
            size: RecordSize::Fixed(64),
            discard_every: None,
            wakeup: Wakeup::Default,
        }
    }
}

impl ProducerConfig {
    /// The largest record payload the generated program writes.
    ///
    /// The program writes each size with unrolled stores, about four
    /// instructions per 8 bytes, and its jumps span one size at most: this
    /// keeps them well inside the 16-bit jump offset (about 8,200 of 32,767).
    pub const MAX_RECORD: usize = 16384;
    /// The largest sum of sizes in [`RecordSize::Mixed`]. The program for the
    /// largest mixed config has about 35,000 instructions, far below the
    /// kernel's limit of 1,000,000.
    pub const MAX_MIXED_TOTAL: usize = 65536;
    /// The most sizes in [`RecordSize::Mixed`].
    pub const MAX_MIXED_SIZES: usize = 64;

    /// `Fixed(size)` records with the other settings at their defaults.
    pub fn fixed(size: usize) -> ProducerConfig {
        ProducerConfig {
            size: RecordSize::Fixed(size),
            ..ProducerConfig::default()
        }
    }

    /// Whether the record with sequence number `seq` is discarded.
    pub fn is_discarded(&self, seq: u64) -> bool {
        self.discard_every
            .is_some_and(|k| (seq + 1) % u64::from(k) == 0)
    }

    fn sizes(&self) -> &[usize] {
        match &self.size {
            RecordSize::Fixed(s) => std::slice::from_ref(s),
            RecordSize::Mixed(v) => v,
        }
    }

    fn validate(&self, ring_size: usize) -> Result<()> {
        let bad = |reason: String| {
            Err(Error::InvalidArgument {
                what: "ProducerConfig",
                reason,
            })
        };
        let sizes = self.sizes();
        if sizes.is_empty() {
            return bad("RecordSize::Mixed needs at least one size".into());
        }
        for &s in sizes {
            if !(8..=Self::MAX_RECORD).contains(&s) {
                return bad(format!(
                    "record size {s} is outside 8..={}",
                    Self::MAX_RECORD
                ));
            }
            if crate::abi::record_stride(s) > ring_size - crate::abi::HEADER_SIZE {
                return bad(format!(
                    "record size {s} cannot fit a ring of {ring_size} bytes"
                ));
            }
        }
        if sizes.iter().sum::<usize>() > Self::MAX_MIXED_TOTAL
            || sizes.len() > Self::MAX_MIXED_SIZES
        {
            return bad(format!(
                "mixed sizes: at most {} sizes summing to {}",
                Self::MAX_MIXED_SIZES,
                Self::MAX_MIXED_TOTAL
            ));
        }
        if self.discard_every == Some(0) || self.discard_every.is_some_and(|k| k > i32::MAX as u32)
        {
            return bad("discard_every must be in 1..=i32::MAX".into());
        }
        Ok(())
    }
}

/// What one [`KernelProducer::produce`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProduceReport {
    /// Program runs asked for.
    pub requested: u64,
    /// Records reserved, filled and submitted.
    pub submitted: u64,
    /// Records reserved, filled and discarded.
    pub discarded: u64,
    /// Reservations that failed (ring full, or contended), so no record.
    pub dropped: u64,
    /// Mean nanoseconds per program run, as `BPF_PROG_TEST_RUN` measured it
    /// (last chunk of the call).
    pub ns_per_run: u32,
    /// Wall time of the call.
    pub elapsed: Duration,
}

/// Number of per-call statistics slots; concurrent `produce` calls beyond it wait.
const SLOTS: u32 = 64;
/// Stats slot layout: [submitted, discarded, dropped] as u64.
const STAT_SUBMITTED: i16 = 0;
const STAT_DISCARDED: i16 = 8;
const STAT_DROPPED: i16 = 16;
/// Counter map layout: [next sequence number, size selector] as u64.
const CTR_SEQ: i16 = 0;
const CTR_SIZE: i16 = 8;
/// Lost counter value layout (`struct ringbuf_lost`, see `LostCounter`).
const LOST_COUNT: i16 = crate::lost::COUNT_OFFSET as i16;
const LOST_FIRST_NS: i16 = crate::lost::FIRST_NS_OFFSET as i16;
const LOST_LAST_NS: i16 = crate::lost::LAST_NS_OFFSET as i16;

/// Sequence counters, one per ring buffer map (by map id), shared by every
/// producer of this process on that map.
static COUNTERS: Mutex<Vec<(u32, Weak<OwnedFd>)>> = Mutex::new(Vec::new());

fn counters_for(map_id: u32) -> Result<Arc<OwnedFd>> {
    let mut reg = COUNTERS.lock().unwrap_or_else(|e| e.into_inner());
    reg.retain(|(_, w)| w.strong_count() > 0);
    if let Some(fd) = reg
        .iter()
        .find(|(id, _)| *id == map_id)
        .and_then(|(_, w)| w.upgrade())
    {
        return Ok(fd);
    }
    let fd = Arc::new(bpf::map_create(
        bpf::BPF_MAP_TYPE_ARRAY,
        4,
        16,
        1,
        "rb_test_ctr",
    )?);
    reg.push((map_id, Arc::downgrade(&fd)));
    Ok(fd)
}

/// A BPF program that writes records into a ring buffer map from the kernel.
///
/// Each run reserves one record (`bpf_ringbuf_reserve`), takes the next
/// sequence number of the map with an atomic fetch-add, fills the record (see
/// [`payload_word`](super::payload_word): the `u64` sequence number, the `u32`
/// length, then a pattern derived from the sequence number), then submits or
/// discards it with the configured flag (for [`Wakeup::Sampled`], chosen
/// just before the commit). A failed reservation is counted as
/// dropped (and, with [`with_lost_counter`](Self::with_lost_counter), in
/// the lost-event counter map) and uses no sequence number, so the numbers
/// of the records produced are contiguous from 0 for a new map.
///
/// Sequence numbers are unique and increasing across calls and across all
/// producers of this process on the same map. With two producers running at
/// once, the ring order of records from different CPUs can differ from their
/// sequence order (the number is taken after the reservation).
///
/// `produce` may be called from several threads at once.
#[derive(Debug)]
pub struct KernelProducer {
    prog: OwnedFd,
    stats: OwnedFd,
    counters: Arc<OwnedFd>,
    slots: Mutex<u64>,
    slot_free: Condvar,
    config: ProducerConfig,
    insns: usize,
}

impl KernelProducer {
    /// Loads the producer program for the ring buffer map `map`.
    ///
    /// Errors: [`Error::WrongMapType`] and friends for a map that is not a
    /// ring buffer, [`Error::InvalidArgument`] for a bad config (or, a bug, a
    /// program the generator could not assemble),
    /// [`Error::PermissionDenied`] without `CAP_BPF`, [`Error::ProgramRejected`]
    /// with the verifier log if the kernel refuses the program.
    pub fn new(map: impl AsFd, config: ProducerConfig) -> Result<KernelProducer> {
        KernelProducer::load(map.as_fd(), config, None)
    }

    /// Like [`new`](Self::new), and each failed reservation is also counted
    /// in `lost` as the [lost-event convention](crate::LostCounter) says:
    /// the count of this CPU's value incremented (an atomic add) and, in the
    /// full layout, `first_ns` set if it was 0 and `last_ns` set, both to
    /// `bpf_ktime_get_ns()`. The program holds its own reference to the
    /// map: `lost` may be dropped.
    pub fn with_lost_counter(
        map: impl AsFd,
        config: ProducerConfig,
        lost: &LostCounter,
    ) -> Result<KernelProducer> {
        KernelProducer::load(map.as_fd(), config, Some(lost))
    }

    fn load(
        map: BorrowedFd<'_>,
        config: ProducerConfig,
        lost: Option<&LostCounter>,
    ) -> Result<KernelProducer> {
        let checked = check_map(map, bpf::BPF_MAP_TYPE_RINGBUF)?;
        config.validate(checked.size)?;
        let stats = bpf::map_create(bpf::BPF_MAP_TYPE_ARRAY, 4, 24, SLOTS, "rb_test_stats")?;
        let counters = counters_for(checked.id)?;
        let lost = lost.map(|l| LostMap {
            fd: l.as_fd().as_raw_fd(),
            times: l.value_size() == LostCounter::VALUE_SIZE,
        });
        let insns = program(
            &config,
            map.as_raw_fd(),
            stats.as_raw_fd(),
            counters.as_raw_fd(),
            lost,
        )?;
        let prog = bpf::prog_load(bpf::BPF_PROG_TYPE_SOCKET_FILTER, &insns, "rb_test_prod")?;
        Ok(KernelProducer {
            prog,
            stats,
            counters,
            slots: Mutex::new(0),
            slot_free: Condvar::new(),
            config,
            insns: insns.len(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ProducerConfig {
        &self.config
    }

    /// The number of BPF instructions in the generated program.
    pub fn instructions(&self) -> usize {
        self.insns
    }

    /// The sequence number the next record on this map will get.
    pub fn next_seq(&self) -> Result<u64> {
        let mut v = [0u8; 16];
        bpf::map_lookup(self.counters.as_fd(), &0u32.to_ne_bytes(), &mut v)?;
        Ok(u64::from_ne_bytes(v[..8].try_into().expect("8 bytes")))
    }

    /// Runs the program `n` times (`BPF_PROG_TEST_RUN` with `repeat`), each
    /// run producing one record or one drop, and reports what happened.
    pub fn produce(&self, n: u64) -> Result<ProduceReport> {
        let start = Instant::now();
        let slot = self.take_slot();
        let result = self.produce_in(slot, n);
        self.put_slot(slot);
        let mut report = result?;
        report.elapsed = start.elapsed();
        Ok(report)
    }

    fn produce_in(&self, slot: u32, n: u64) -> Result<ProduceReport> {
        let key = slot.to_ne_bytes();
        bpf::map_update(self.stats.as_fd(), &key, &[0u8; 24])?;
        // Context: a `struct __sk_buff` prefix {len, pkt_type, mark, queue_mapping};
        // the program reads `mark` as its statistics slot.
        let mut ctx = [0u8; 16];
        ctx[8..12].copy_from_slice(&slot.to_ne_bytes());
        let data = [0u8; 64];
        let mut report = ProduceReport {
            requested: n,
            ..ProduceReport::default()
        };
        let mut done = 0u64;
        while done < n {
            let chunk = (n - done).min(u64::from(u32::MAX)) as u32;
            match bpf::prog_test_run(self.prog.as_fd(), &data, &ctx, chunk) {
                Ok(r) => report.ns_per_run = r.duration_ns,
                // A signal stops the run early; the slot says how far it got.
                Err(Error::Syscall { source, .. })
                    if source.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) => return Err(e),
            }
            let mut v = [0u8; 24];
            bpf::map_lookup(self.stats.as_fd(), &key, &mut v)?;
            let get = |i: usize| u64::from_ne_bytes(v[8 * i..8 * i + 8].try_into().expect("8"));
            report.submitted = get(0);
            report.discarded = get(1);
            report.dropped = get(2);
            done = report.submitted + report.discarded + report.dropped;
        }
        Ok(report)
    }

    fn take_slot(&self) -> u32 {
        let mut used = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let free = (!*used).trailing_zeros();
            if free < SLOTS {
                *used |= 1 << free;
                return free;
            }
            used = self.slot_free.wait(used).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn put_slot(&self, slot: u32) {
        let mut used = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        *used &= !(1 << slot);
        self.slot_free.notify_one();
    }
}

/// Generates the producer program. Registers: r6 = ctx, then the sequence
/// number; r7 = the reserved record; r8 = the counters; r9 = the stats slot.
///
/// Every jump stays local, so no config can need an offset wider than the
/// instruction's 16 bits: the size dispatch is a chain (each size block starts
/// with `if r1 != i goto next block`, a jump over one block at most), and each
/// block has its own commit, discard, statistics and exit instead of jumping
/// to a shared tail. The longest jump is over one block of
/// [`ProducerConfig::MAX_RECORD`] bytes, about 8,200 instructions.
fn program(
    config: &ProducerConfig,
    ring: i32,
    stats: i32,
    counters: i32,
    lost: Option<LostMap>,
) -> Result<Vec<u64>> {
    let mut a = Asm::default();
    let sizes = config.sizes();

    // r9 = &stats[ctx->mark]
    a.mov(R6, R1).ldx_w(R2, R6, 8).stx_w(R10, -4, R2);
    lookup_or_exit(&mut a, stats);
    a.mov(R9, R0);
    // r8 = &counters[0]
    a.st_w(R10, -4, 0);
    lookup_or_exit(&mut a, counters);
    a.mov(R8, R0);

    // r1 = the index of this run's size
    if sizes.len() > 1 {
        a.mov_imm(R1, 1).atomic_fetch_add(R8, CTR_SIZE, R1);
        a.mod_imm(R1, sizes.len() as i32);
    }
    let stat = |a: &mut Asm, slot: i16| {
        a.mov_imm(R1, 1)
            .atomic_add(R9, slot, R1)
            .mov_imm(R0, 0)
            .exit();
    };
    for (i, &size) in sizes.iter().enumerate() {
        let next = a.label();
        if i + 1 < sizes.len() {
            a.jne_imm(R1, i as i32, next);
        }
        let filled = a.label();
        a.ld_map_fd(R1, ring)
            .mov_imm(R2, size as i32)
            .mov_imm(R3, 0);
        a.call(FN_RINGBUF_RESERVE);
        a.jne_imm(R0, 0, filled);
        dropped(&mut a, lost);
        a.bind(filled).mov(R7, R0);
        a.mov_imm(R1, 1)
            .atomic_fetch_add(R8, CTR_SEQ, R1)
            .mov(R6, R1);
        fill(&mut a, size);
        if let Some(k) = config.discard_every {
            let submit = a.label();
            a.mov(R2, R6)
                .add_imm(R2, 1)
                .mod_imm(R2, k as i32)
                .jne_imm(R2, 0, submit);
            commit_flags(&mut a, config.wakeup, ring);
            a.mov(R1, R7).call(FN_RINGBUF_DISCARD);
            stat(&mut a, STAT_DISCARDED);
            a.bind(submit);
        }
        commit_flags(&mut a, config.wakeup, ring);
        a.mov(R1, R7).call(FN_RINGBUF_SUBMIT);
        stat(&mut a, STAT_SUBMITTED);
        a.bind(next);
    }
    a.finish()
}

/// A lost-event counter map the program writes ([`LostCounter`]).
#[derive(Debug, Clone, Copy)]
struct LostMap {
    fd: i32,
    /// The full layout (count, first_ns, last_ns), not the bare count.
    times: bool,
}

/// A failed reservation: counted in the stats slot and, by the lost-event
/// convention, in the lost counter (r7, free until a record is reserved,
/// holds this CPU's value), then `return 0`. As the C in `LostCounter`'s docs:
///
/// ```text
/// lock *(u64 *)(r9 + STAT_DROPPED) += 1
/// *(u32 *)(r10 - 4) = 0; r0 = bpf_map_lookup_elem(lost, r10 - 4); if !r0 exit
/// r7 = r0; lock *(u64 *)(r7 + 0) += 1           ; count
/// r0 = bpf_ktime_get_ns()
/// r1 = *(u64 *)(r7 + 8); if r1 != 0 goto +1     ; first_ns, once
/// *(u64 *)(r7 + 8) = r0
/// *(u64 *)(r7 + 16) = r0                        ; last_ns
/// ```
fn dropped(a: &mut Asm, lost: Option<LostMap>) {
    a.mov_imm(R1, 1).atomic_add(R9, STAT_DROPPED, R1);
    if let Some(lost) = lost {
        a.st_w(R10, -4, 0);
        lookup_or_exit(a, lost.fd);
        a.mov(R7, R0).mov_imm(R1, 1).atomic_add(R7, LOST_COUNT, R1);
        if lost.times {
            let seen = a.label();
            a.call(FN_KTIME_GET_NS)
                .ldx_dw(R1, R7, LOST_FIRST_NS)
                .jne_imm(R1, 0, seen)
                .stx_dw(R7, LOST_FIRST_NS, R0)
                .bind(seen)
                .stx_dw(R7, LOST_LAST_NS, R0);
        }
    }
    a.mov_imm(R0, 0).exit();
}

/// `r2 = ` the commit flag for `wakeup` (see [`Wakeup::flags`]); clobbers
/// r0 to r5. For [`Wakeup::Sampled`], as `get_flags()` in the kernel's
/// `ringbuf_bench.c`, just before the commit:
///
/// ```text
/// r1 = ring; r2 = BPF_RB_AVAIL_DATA; call bpf_ringbuf_query
/// r3 = threshold                      ; a u64: ld_imm64
/// r2 = BPF_RB_NO_WAKEUP
/// if r0 < r3 goto +1                  ; unsigned, a local jump
/// r2 = BPF_RB_FORCE_WAKEUP
/// ```
fn commit_flags(a: &mut Asm, wakeup: Wakeup, ring: i32) {
    let Wakeup::Sampled { threshold } = wakeup else {
        a.mov_imm(R2, wakeup.flags(0));
        return;
    };
    let below = a.label();
    a.ld_map_fd(R1, ring)
        .mov_imm(R2, BPF_RB_AVAIL_DATA)
        .call(FN_RINGBUF_QUERY);
    a.ld_imm64(R3, threshold)
        .mov_imm(R2, wakeup.flags(0))
        .jlt(R0, R3, below)
        .mov_imm(R2, wakeup.flags(threshold))
        .bind(below);
}

/// `r0 = bpf_map_lookup_elem(map, r10 - 4)`, returning 0 from the program if
/// there is no such element.
fn lookup_or_exit(a: &mut Asm, map: i32) {
    let found = a.label();
    a.ld_map_fd(R1, map)
        .mov(R2, R10)
        .add_imm(R2, -4)
        .call(FN_MAP_LOOKUP_ELEM);
    a.jne_imm(R0, 0, found).mov_imm(R0, 0).exit();
    a.bind(found);
}

/// Writes the payload of `size` bytes for the sequence number in r6 to the
/// record at r7, word by word (see `payload_word`), unrolled.
fn fill(a: &mut Asm, size: usize) {
    for w in 0..size.div_ceil(8) {
        let off = (8 * w) as i16;
        if w == 0 {
            a.mov(R2, R6);
        } else {
            a.ld_imm64(
                R2,
                super::payload_word(0, 0, w) & if w == 1 { !0xffff_ffff } else { !0 },
            );
            a.xor(R2, R6);
            if w == 1 {
                a.rsh_imm(R2, 32)
                    .lsh_imm(R2, 32)
                    .mov_imm(R3, size as i32)
                    .or(R2, R3);
            }
        }
        let bytes = (size - 8 * w).min(8);
        if bytes == 8 {
            a.stx_dw(R7, off, R2);
        } else {
            for b in 0..bytes {
                a.stx_b(R7, off + b as i16, R2);
                if b + 1 < bytes {
                    a.rsh_imm(R2, 8);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `validate`'s limits are ones the generator meets: the largest configs
    /// it accepts assemble (every jump in range) and stay far below the
    /// kernel's instruction limit.
    #[test]
    fn the_largest_accepted_configs_assemble() {
        let max = ProducerConfig::MAX_RECORD;
        let n = ProducerConfig::MAX_MIXED_SIZES;
        // Sizes of 7 mod 8 need the most instructions per byte (byte stores).
        let mut bytewise = vec![1031; n - 1];
        bytewise.push(ProducerConfig::MAX_MIXED_TOTAL - 1031 * (n - 1));
        assert_eq!(bytewise[n - 1] % 8, 7);
        let mut longest = 0;
        for size in [
            RecordSize::Fixed(max),
            RecordSize::Fixed(max - 1),
            RecordSize::Mixed(vec![max; 4]),
            RecordSize::Mixed(vec![max - 1, max - 3, max - 5, max - 7]),
            RecordSize::Mixed(bytewise),
            RecordSize::Mixed(vec![8; n]),
        ] {
            for (discard_every, wakeup) in [
                (None, Wakeup::Default),
                (
                    Some(3),
                    Wakeup::Sampled {
                        threshold: u64::MAX,
                    },
                ),
            ] {
                let cfg = ProducerConfig {
                    size: size.clone(),
                    discard_every,
                    wakeup,
                };
                cfg.validate(1 << 20).unwrap();
                let lost = Some(LostMap { fd: 6, times: true });
                let insns = program(&cfg, 3, 4, 5, lost).unwrap_or_else(|e| panic!("{cfg:?}: {e}"));
                longest = longest.max(insns.len());
            }
        }
        assert!(longest < MAX_INSNS / 20, "{longest} instructions");
    }
}
