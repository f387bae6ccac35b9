//! The consumers of a user ring buffer for tests: [`KernelDrain`], a
//! hand-assembled BPF program calling `bpf_user_ringbuf_drain` (run with
//! `BPF_PROG_TEST_RUN`), and [`FakeUserRing`], the same layout in ordinary
//! memory with a drain that follows the kernel's, for unprivileged tests of
//! the very same [`UserRingBuf`] producer.

use std::fmt;
use std::ops::ControlFlow;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::asm::*;
use crate::claim::{Claim, Key};
use crate::error::{Error, Result};
use crate::map::{check_map, check_size};
use crate::ring::cursor::Cursor;
use crate::ring::producer::UserProducer;
use crate::sys::epoll::EventFd;
use crate::sys::mmap::MemfdRing;
use crate::sys::{self, bpf};
use crate::user_ringbuf::UserRingBuf;

/// The most samples one `bpf_user_ringbuf_drain` call consumes
/// (`BPF_MAX_USER_RINGBUF_SAMPLES` in `kernel/bpf/ringbuf.c`).
pub const MAX_DRAIN_SAMPLES: usize = 128 * 1024;

/// The largest sample [`KernelDrain::into_ring`] copies: its program's
/// buffer (an array map value). Larger samples are consumed without a copy.
pub const MAX_COPIED_SAMPLE: usize = 1 << 20;

/// A BPF program that drains a user ring buffer: each [`drain`](Self::drain)
/// is one `bpf_user_ringbuf_drain(map, callback, NULL, 0)` call (up to
/// [`MAX_DRAIN_SAMPLES`] samples, stopping at the first one not submitted;
/// the kernel then wakes producers waiting for room).
///
/// With [`into_ring`](Self::into_ring) the callback copies every sample, byte
/// for byte, into a `BPF_MAP_TYPE_RINGBUF` (`bpf_dynptr_read` into a map
/// value, then `bpf_ringbuf_output`): userspace → kernel → userspace, for a
/// [`Reader`](crate::Reader) to check. With [`sink`](Self::sink) it only
/// consumes them (benchmarks).
///
/// The callback is a static subprogram referenced with `BPF_PSEUDO_FUNC`;
/// the verifier wants BTF `func_info` for it, so the program is loaded with
/// a minimal hand-built BTF blob. No compiler needed.
///
/// ```no_run
/// # fn main() -> bpf_ringbuf::Result<()> {
/// use bpf_ringbuf::testing::KernelDrain;
/// use bpf_ringbuf::{Reader, RingBuf, UserRingBuf};
///
/// let user = UserRingBuf::create(1 << 16)?;
/// let out = RingBuf::create(1 << 16)?;
/// let drain = KernelDrain::into_ring(&user, &out)?;
/// let mut s = user.reserve(5)?;
/// s.copy_from_slice(b"hello");
/// s.submit();
/// assert_eq!(drain.drain()?, 1);
/// let mut reader = Reader::new(&out)?;
/// assert_eq!(reader.read()?.data, b"hello");
/// # Ok(()) }
/// ```
pub struct KernelDrain {
    prog: OwnedFd,
    _btf: OwnedFd,
    insns: usize,
}

impl fmt::Debug for KernelDrain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelDrain")
            .field("prog", &self.prog)
            .field("insns", &self.insns)
            .finish_non_exhaustive()
    }
}

impl KernelDrain {
    /// A drain of the user ring buffer `user` that copies every sample into
    /// the ring buffer `out` (samples up to [`MAX_COPIED_SAMPLE`] bytes).
    ///
    /// Errors: [`Error::WrongMapType`] and friends for maps of the wrong
    /// types, [`Error::PermissionDenied`] without `CAP_BPF`,
    /// [`Error::ProgramRejected`] with the verifier's log.
    pub fn into_ring(user: impl AsFd, out: impl AsFd) -> Result<KernelDrain> {
        let u = check_map(user.as_fd(), bpf::BPF_MAP_TYPE_USER_RINGBUF)?;
        check_map(out.as_fd(), bpf::BPF_MAP_TYPE_RINGBUF)?;
        let buf_size = UserProducer::max_sample(u.size).min(MAX_COPIED_SAMPLE);
        let buf = bpf::map_create(
            bpf::BPF_MAP_TYPE_ARRAY,
            4,
            buf_size as u32,
            1,
            "rb_drain_buf",
        )?;
        let copy = Copy {
            buf: buf.as_raw_fd(),
            buf_size,
            out: out.as_fd().as_raw_fd(),
        };
        KernelDrain::load(user.as_fd().as_raw_fd(), Some(copy))
    }

    /// A drain of the user ring buffer `user` whose callback does nothing:
    /// samples are consumed and dropped.
    pub fn sink(user: impl AsFd) -> Result<KernelDrain> {
        check_map(user.as_fd(), bpf::BPF_MAP_TYPE_USER_RINGBUF)?;
        KernelDrain::load(user.as_fd().as_raw_fd(), None)
    }

    fn load(user: i32, copy: Option<Copy>) -> Result<KernelDrain> {
        let (insns, callback) = drain_program(user, copy)?;
        let (blob, ids) = btf_funcs(&[("drain", 1), ("sample", 2)]);
        let btf = bpf::btf_load(&blob)?;
        let funcs = [[0, ids[0]], [callback as u32, ids[1]]];
        let prog = bpf::prog_load_with_btf(
            bpf::BPF_PROG_TYPE_SOCKET_FILTER,
            &insns,
            "rb_user_drain",
            Some((btf.as_fd(), &funcs)),
        )?;
        Ok(KernelDrain {
            prog,
            _btf: btf,
            insns: insns.len(),
        })
    }

    /// The number of BPF instructions in the program.
    pub fn instructions(&self) -> usize {
        self.insns
    }

    /// Runs the program once: one `bpf_user_ringbuf_drain` call. Returns
    /// the samples it delivered to the callback (discarded ones are
    /// consumed but not counted, as the helper counts).
    ///
    /// A negative result of the helper is an [`Error::Syscall`] naming it
    /// (`EBUSY`: another drain of the map was running; `E2BIG`/`EINVAL`: a
    /// sample header the kernel refuses, and it stops there for good).
    pub fn drain(&self) -> Result<u64> {
        let data = [0u8; 64];
        let r = bpf::prog_test_run(self.prog.as_fd(), &data, &[], 1)?;
        // The program returns the helper's `long` result; the test run
        // reports its low 32 bits.
        let ret = r.retval as i32;
        if ret < 0 {
            return Err(Error::Syscall {
                call: "bpf_user_ringbuf_drain (in the test program)",
                source: std::io::Error::from_raw_os_error(-ret),
            });
        }
        Ok(ret as u64)
    }
}

/// Where the callback copies samples.
#[derive(Debug, Clone, Copy)]
struct Copy {
    /// An array map with one value of `buf_size` bytes.
    buf: i32,
    buf_size: usize,
    /// The `BPF_MAP_TYPE_RINGBUF` written.
    out: i32,
}

/// The sample's size is found by probing: `bpf_dynptr_read` of one byte at
/// offset `o` succeeds iff `o < size`, and a sample has fewer than `2^24`
/// bytes, so 24 probes, from the top bit down, find it without a branch
/// (the verifier then needs no state per path):
///
/// ```text
/// r7 = 0
/// for bit in 23..=0:
///     r0 = bpf_dynptr_read(r10 - 8, 1, dynptr, r7 + (1 << bit) - 1, 0)
///     r0 s>>= 63; r0 += 1; r0 <<= bit; r7 += r0   ; +2^bit if it succeeded
/// ```
const SIZE_BITS: i32 = 24;

/// The program (instruction 0) and its callback (returned: its first
/// instruction).
fn drain_program(user: i32, copy: Option<Copy>) -> Result<(Vec<u64>, usize)> {
    let mut a = Asm::default();
    let callback = a.label();
    // The program: return bpf_user_ringbuf_drain(user, callback, NULL, 0).
    a.ld_map_fd(R1, user)
        .ld_func(R2, callback)
        .mov_imm(R3, 0)
        .mov_imm(R4, 0)
        .call(FN_USER_RINGBUF_DRAIN)
        .exit();
    // The callback: long sample(struct bpf_dynptr *dynptr, void *ctx).
    a.bind(callback);
    if let Some(copy) = copy {
        let out = a.label();
        a.mov(R6, R1).mov_imm(R7, 0);
        for bit in (0..SIZE_BITS).rev() {
            a.mov(R1, R10)
                .add_imm(R1, -8)
                .mov_imm(R2, 1)
                .mov(R3, R6)
                .mov(R4, R7)
                .add_imm(R4, (1 << bit) - 1)
                .mov_imm(R5, 0)
                .call(FN_DYNPTR_READ);
            a.arsh_imm(R0, 63)
                .add_imm(R0, 1)
                .lsh_imm(R0, bit)
                .add(R7, R0);
        }
        // r8 = &buf[0]
        a.st_w(R10, -16, 0)
            .ld_map_fd(R1, copy.buf)
            .mov(R2, R10)
            .add_imm(R2, -16)
            .call(FN_MAP_LOOKUP_ELEM)
            .jeq_imm(R0, 0, out)
            .mov(R8, R0);
        // if size > buf_size: consume without a copy
        a.jgt_imm(R7, copy.buf_size as i32, out);
        // bpf_dynptr_read(buf, size, dynptr, 0, 0) == 0 ?
        a.mov(R1, R8)
            .mov(R2, R7)
            .mov(R3, R6)
            .mov_imm(R4, 0)
            .mov_imm(R5, 0)
            .call(FN_DYNPTR_READ)
            .jne_imm(R0, 0, out);
        // bpf_ringbuf_output(out, buf, size, 0)
        a.ld_map_fd(R1, copy.out)
            .mov(R2, R8)
            .mov(R3, R7)
            .mov_imm(R4, 0)
            .call(FN_RINGBUF_OUTPUT);
        a.bind(out);
    }
    a.mov_imm(R0, 0).exit();
    let start = a.position(callback).expect("bound above");
    Ok((a.finish()?, start))
}

/// A fake `BPF_MAP_TYPE_USER_RINGBUF`: the kernel's layout in ordinary
/// shared memory (a memfd, the data pages mapped twice), producing through
/// the same [`UserRingBuf`] as a kernel map, and drained by
/// [`drain`](Self::drain), which follows `bpf_user_ringbuf_drain`: samples
/// in order, discarded ones skipped, stopping at the first one not yet
/// submitted, then the consumer position published and, if it moved, the
/// producer's waiters woken. No privileges needed.
///
/// ```
/// # fn main() -> bpf_ringbuf::Result<()> {
/// use bpf_ringbuf::testing::FakeUserRing;
///
/// let ring = FakeUserRing::new(bpf_ringbuf::page_size())?;
/// let producer = ring.producer()?;
/// let mut a = producer.reserve(3)?;
/// let mut b = producer.reserve(5)?;
/// b.copy_from_slice(b"world");
/// b.submit();
/// let mut seen = Vec::new();
/// assert_eq!(ring.drain(|s| seen.push(s.to_vec()))?, 0); // `a` holds the drain back
/// a.copy_from_slice(b"abc");
/// a.discard();
/// assert_eq!(ring.drain(|s| seen.push(s.to_vec()))?, 1);
/// assert_eq!(seen, [b"world".to_vec()]);
/// # Ok(()) }
/// ```
pub struct FakeUserRing {
    mem: Arc<MemfdRing>,
    /// The kernel's consumer.
    cursor: Mutex<Cursor>,
    /// Written after a drain that consumed something: the producer's
    /// `EPOLLOUT`.
    event: EventFd,
    key: u64,
}

impl fmt::Debug for FakeUserRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (c, p) = self.positions();
        f.debug_struct("FakeUserRing")
            .field("size", &self.mem.size())
            .field("consumer_pos", &c)
            .field("producer_pos", &p)
            .finish_non_exhaustive()
    }
}

impl FakeUserRing {
    /// A zero-filled fake user ring of `size` data bytes (a valid ring size,
    /// else [`Error::BadSize`]).
    pub fn new(size: usize) -> Result<FakeUserRing> {
        static NEXT_KEY: AtomicU64 = AtomicU64::new(0);
        check_size(size)?;
        let mem = Arc::new(MemfdRing::new(size)?);
        let cursor = UserProducer::memfd_cursor(&mem).map_err(Error::from)?;
        Ok(FakeUserRing {
            mem,
            cursor: Mutex::new(cursor),
            event: EventFd::new()?,
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The producer: a [`UserRingBuf`] over this memory, the same type (and
    /// code) as over a kernel map. One live producer at a time
    /// ([`Error::ProducerExists`]).
    pub fn producer(&self) -> Result<UserRingBuf> {
        let claim = Claim::take(Key::FakeProducer(self.key))?;
        let fd = sys::dup(self.event.as_fd())?;
        UserRingBuf::from_fake(UserProducer::from_memfd(Arc::clone(&self.mem)), fd, claim)
    }

    /// One `bpf_user_ringbuf_drain`: hands every submitted sample, in order,
    /// to `f` (at most [`MAX_DRAIN_SAMPLES`]), skipping discarded ones and
    /// stopping at the first sample not yet submitted; publishes the
    /// consumer position and wakes a producer waiting for room if it moved.
    /// Returns the samples delivered.
    pub fn drain(&self, f: impl FnMut(&[u8])) -> Result<usize> {
        self.drain_at_most(MAX_DRAIN_SAMPLES, f)
    }

    /// [`drain`](Self::drain), delivering at most `max` samples: it stops
    /// right after the `max`-th (withdrawn samples after it stay in the
    /// ring, as do those after a sample still outstanding).
    pub fn drain_at_most(&self, max: usize, mut f: impl FnMut(&[u8])) -> Result<usize> {
        let mut cur = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        let before = cur.raw().load_consumer();
        let (n, _, end) = cur.drain(max, usize::MAX, usize::MAX, |s| {
            f(s);
            ControlFlow::Continue(())
        });
        cur.publish();
        if cur.raw().load_consumer() != before {
            self.event.notify();
        }
        if let crate::ring::cursor::DrainEnd::Corrupt(c) = end {
            return Err(c.into());
        }
        Ok(n)
    }

    /// `(consumer_pos, producer_pos)` as published.
    pub fn positions(&self) -> (usize, usize) {
        let cur = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
        (cur.raw().load_consumer(), cur.raw().load_producer())
    }

    /// The data size in bytes.
    pub fn size(&self) -> usize {
        self.mem.size()
    }
}
