//! The producer scenario (issue 11): the per-sample cost of reserve, write
//! and submit into a `BPF_MAP_TYPE_USER_RINGBUF` that the kernel drains, for
//! bpf-ringbuf's `UserRingBuf`, libbpf C's `user_ring_buffer__reserve` /
//! `__submit` and libbpf-rs's `UserRingBuffer`.
//!
//! Each producer fills a fresh 1 MiB user ring until its reserve reports
//! the ring full (timed), then the kernel drains it (`KernelDrain::sink`:
//! one `bpf_user_ringbuf_drain` call whose callback does nothing; not
//! timed), and again, until `bytes_per_round` ring bytes went through. The
//! three producers take turns within each round, in a rotating order.

use std::fmt::Write;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

use bpf_ringbuf::testing::{create_map, KernelDrain};
use bpf_ringbuf::{abi, Error, UserRingBuf};

use crate::report::{mark, median, ratios, size_label};
use crate::{Opts, Res};

/// The user ring's size.
pub const RING: usize = 1 << 20;
/// Sample sizes (payload bytes).
pub const SIZES: [usize; 3] = [16, 256, 4096];
/// Target: ours at most this times libbpf C's time per sample, at every size.
pub const LIMIT: f64 = 1.0;
const USER_RINGBUF: u32 = 31;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ours,
    Libbpf,
    LibbpfRs,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Ours, Kind::Libbpf, Kind::LibbpfRs];
    pub fn label(self) -> &'static str {
        match self {
            Kind::Ours => "ours `reserve` + write + `submit`",
            Kind::Libbpf => "libbpf C `user_ring_buffer__reserve` + write + `__submit`",
            Kind::LibbpfRs => "libbpf-rs `UserRingBuffer::reserve` + write + `submit`",
        }
    }
}

/// Per size: the nanoseconds per sample of each round, per kind (`Kind::ALL` order).
pub struct SizeRow {
    pub size: usize,
    /// Ring bytes written per producer and round.
    pub bytes: usize,
    pub ns: [Vec<f64>; 3],
}

/// Fills the ring: reserve, copy `src`, submit, until the ring is full.
/// Returns the samples written.
trait Fill {
    fn fill(&mut self, src: &[u8]) -> Res<u64>;
}

struct Ours(UserRingBuf);

impl Fill for Ours {
    fn fill(&mut self, src: &[u8]) -> Res<u64> {
        let mut n = 0;
        loop {
            match self.0.reserve(src.len()) {
                Ok(mut s) => {
                    s.copy_from_slice(src);
                    s.submit();
                    n += 1;
                }
                Err(Error::RingFull { .. }) => return Ok(n),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

struct Libbpf(*mut libbpf_sys::user_ring_buffer);

impl Libbpf {
    fn new(fd: i32) -> Res<Self> {
        // SAFETY: a valid user ring buffer map fd; no options.
        let rb = unsafe { libbpf_sys::user_ring_buffer__new(fd, std::ptr::null_mut()) };
        if rb.is_null() {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(Libbpf(rb))
    }
}

impl Fill for Libbpf {
    fn fill(&mut self, src: &[u8]) -> Res<u64> {
        let mut n = 0;
        loop {
            // SAFETY: rb is valid until drop; one thread uses it.
            let p = unsafe { libbpf_sys::user_ring_buffer__reserve(self.0, src.len() as u32) };
            if p.is_null() {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() == Some(libc::ENOSPC) {
                    return Ok(n);
                }
                return Err(e.into());
            }
            // SAFETY: libbpf reserved `src.len()` writable bytes at `p`.
            unsafe {
                std::ptr::copy_nonoverlapping(src.as_ptr(), p.cast::<u8>(), src.len());
                libbpf_sys::user_ring_buffer__submit(self.0, p);
            }
            n += 1;
        }
    }
}

impl Drop for Libbpf {
    fn drop(&mut self) {
        // SAFETY: created by user_ring_buffer__new, freed once.
        unsafe { libbpf_sys::user_ring_buffer__free(self.0) };
    }
}

struct LibbpfRs {
    rb: libbpf_rs::UserRingBuffer,
    _map: libbpf_rs::MapHandle,
}

impl Fill for LibbpfRs {
    fn fill(&mut self, src: &[u8]) -> Res<u64> {
        let mut n = 0;
        loop {
            // libbpf-rs maps ENOSPC (and E2BIG) to an error with a message:
            // the only failure here is a full ring.
            let Ok(mut s) = self.rb.reserve(src.len()) else {
                return Ok(n);
            };
            s.copy_from_slice(src);
            self.rb.submit(s)?;
            n += 1;
        }
    }
}

/// A fresh user ring and a producer of `kind` on it, with the kernel's drain.
fn setup(kind: Kind) -> Res<(Box<dyn Fill>, KernelDrain)> {
    Ok(match kind {
        Kind::Ours => {
            let ring = UserRingBuf::create(RING)?;
            let drain = KernelDrain::sink(&ring)?;
            (Box::new(Ours(ring)), drain)
        }
        Kind::Libbpf | Kind::LibbpfRs => {
            let fd = create_map(USER_RINGBUF, 0, 0, RING as u32)?;
            let drain = KernelDrain::sink(&fd)?;
            let fill: Box<dyn Fill> = if kind == Kind::Libbpf {
                Box::new(Libbpf::new(fd.as_raw_fd())?)
            } else {
                let map = libbpf_rs::MapHandle::from_map_id(crate::raw::map_id(fd.as_fd())?)?;
                let rb = libbpf_rs::UserRingBuffer::new(&map)?;
                Box::new(LibbpfRs { rb, _map: map })
            };
            (fill, drain)
        }
    })
}

/// Nanoseconds per sample of `kind` for `size`-byte samples, over
/// `bytes` ring bytes (filling time only).
fn measure(kind: Kind, src: &[u8], bytes: usize) -> Res<f64> {
    let size = src.len();
    let (mut p, drain) = setup(kind)?;
    let want = (bytes / abi::record_stride(size)) as u64;
    let (mut n, mut took) = (0u64, Duration::ZERO);
    while n < want {
        let t = Instant::now();
        let k = p.fill(src)?;
        took += t.elapsed();
        if k == 0 {
            return Err(format!("{kind:?}: no room after a drain").into());
        }
        n += k;
        let drained = drain.drain()?;
        if drained != k {
            return Err(format!("{kind:?}: {k} samples written, {drained} drained").into());
        }
    }
    Ok(took.as_nanos() as f64 / n as f64)
}

pub fn run(o: &Opts) -> Res<Vec<SizeRow>> {
    let bytes = if o.quick { 16 << 20 } else { 64 << 20 };
    let mut rows = Vec::new();
    for &size in &SIZES {
        // One source buffer for every producer: memcpy's speed depends on
        // its alignment.
        let src: Vec<u8> = (0..size).map(|i| i as u8).collect();
        let mut row = SizeRow {
            size,
            bytes,
            ns: [Vec::new(), Vec::new(), Vec::new()],
        };
        for round in 0..o.warmup + o.rounds {
            for i in 0..Kind::ALL.len() {
                let k = (i + round) % Kind::ALL.len();
                let ns = measure(Kind::ALL[k], &src, bytes)?;
                if round >= o.warmup {
                    row.ns[k].push(ns);
                }
            }
        }
        eprintln!(
            "producer {}: ours {:.1} ns, libbpf {:.1} ns, libbpf-rs {:.1} ns per sample",
            size_label(size),
            median(&row.ns[0]),
            median(&row.ns[1]),
            median(&row.ns[2])
        );
        rows.push(row);
    }
    Ok(rows)
}

pub fn render(rows: &[SizeRow]) -> String {
    let mut m = String::new();
    if rows.is_empty() {
        return m;
    }
    let rounds = rows[0].ns[0].len();
    let _ = writeln!(
        m,
        "### Producer: reserve + write + submit into a user ring buffer\n\n\
         Per sample, into a {} `BPF_MAP_TYPE_USER_RINGBUF` filled until full, then drained by \
         the kernel (`bpf_user_ringbuf_drain`, not timed), until {} of ring bytes went \
         through; median of {rounds} rounds, the three producers in turn within each round. \
         Target: ours at or below libbpf C per sample at every size (ratio <= {LIMIT:.2}, the \
         median of the per-round ratios).\n",
        size_label(RING),
        size_label(rows[0].bytes)
    );
    m.push_str("| sample |");
    for k in Kind::ALL {
        let _ = write!(m, " {} (ns) |", k.label());
    }
    m.push_str(" ours / libbpf C | ours / libbpf-rs | target |\n|---|");
    for _ in 0..Kind::ALL.len() + 3 {
        m.push_str("---:|");
    }
    m.push('\n');
    let mut all_met = true;
    for r in rows {
        let vs_c = median(&ratios(&r.ns[0], &r.ns[1]));
        let vs_rs = median(&ratios(&r.ns[0], &r.ns[2]));
        let met = vs_c <= LIMIT;
        all_met &= met;
        let _ = writeln!(
            m,
            "| {} | {:.1} | {:.1} | {:.1} | {vs_c:.3} | {vs_rs:.3} | {} |",
            size_label(r.size),
            median(&r.ns[0]),
            median(&r.ns[1]),
            median(&r.ns[2]),
            mark(met)
        );
    }
    let _ = writeln!(
        m,
        "\nProducer target (at or below libbpf C at 16 B, 256 B and 4 KiB): {}.\n",
        mark(all_met)
    );
    m
}
