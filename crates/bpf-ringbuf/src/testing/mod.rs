//! Test support (feature `testing`): a kernel producer that needs no BPF
//! compiler, the payload format it writes, and helpers for privileged tests.
//!
//! ```no_run
//! # fn main() -> bpf_ringbuf::Result<()> {
//! use bpf_ringbuf::testing::{check_payload, KernelProducer, ProducerConfig};
//! use bpf_ringbuf::{Reader, RingBuf};
//!
//! let ring = RingBuf::create(1 << 20)?;
//! let producer = KernelProducer::new(&ring, ProducerConfig::default())?;
//! let report = producer.produce(1000)?;
//! assert_eq!(report.submitted, 1000);
//!
//! let mut reader = Reader::new(&ring)?;
//! reader.set_deadline(Some(std::time::Instant::now()));
//! let mut expected = 0;
//! while let Ok(rec) = reader.read_zero_copy() {
//!     assert_eq!(check_payload(rec).unwrap(), expected);
//!     expected += 1;
//! }
//! # Ok(()) }
//! ```

mod asm;
mod fake_ring;
mod producer;
mod user_ring;

pub use fake_ring::{FakeRing, Reservation};
pub use producer::{KernelProducer, ProduceReport, ProducerConfig, RecordSize, Wakeup};
pub use user_ring::{FakeUserRing, KernelDrain, MAX_COPIED_SAMPLE, MAX_DRAIN_SAMPLES};

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The environment variable that turns a skipped privileged test into a failure.
pub const REQUIRE_PRIVILEGED_ENV: &str = "BPF_RINGBUF_REQUIRE_PRIVILEGED";

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Word `w` (bytes `8w..8w+8`, little-endian) of the payload of record `seq`
/// of length `len`:
///
/// * word 0 is `seq`;
/// * word 1 holds `len as u32` in its low half, and the high half of the pattern;
/// * word `w >= 2` is the pattern `seq ^ (0x9E3779B97F4A7C15 * (w + 1))`.
///
/// A payload shorter than a word boundary is these words truncated.
pub fn payload_word(seq: u64, len: usize, w: usize) -> u64 {
    match w {
        0 => seq,
        _ => {
            let p = seq ^ GOLDEN.wrapping_mul(w as u64 + 1);
            if w == 1 {
                (p & !0xffff_ffff) | (len as u32 as u64)
            } else {
                p
            }
        }
    }
}

/// Fills `buf` with the payload the kernel producer writes for `seq`.
pub fn fill_payload(seq: u64, buf: &mut [u8]) {
    let len = buf.len();
    for (w, chunk) in buf.chunks_mut(8).enumerate() {
        let bytes = payload_word(seq, len, w).to_le_bytes();
        chunk.copy_from_slice(&bytes[..chunk.len()]);
    }
}

/// A payload that does not match what the producer wrote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// Shorter than the 8-byte sequence number.
    #[error("record of {0} bytes is shorter than its sequence number")]
    TooShort(usize),
    /// A byte differs.
    #[error("record seq {seq}: byte {offset} is {found:#04x}, expected {expected:#04x}")]
    Mismatch {
        /// The sequence number the record claims.
        seq: u64,
        /// Offset of the first wrong byte.
        offset: usize,
        /// The byte the pattern requires.
        expected: u8,
        /// The byte found.
        found: u8,
    },
}

/// Checks every byte of a record written by [`KernelProducer`] and returns
/// its sequence number.
pub fn check_payload(rec: &[u8]) -> std::result::Result<u64, PayloadError> {
    if rec.len() < 8 {
        return Err(PayloadError::TooShort(rec.len()));
    }
    let seq = u64::from_le_bytes(rec[..8].try_into().expect("8 bytes"));
    for (w, chunk) in rec.chunks(8).enumerate() {
        let want = payload_word(seq, rec.len(), w).to_le_bytes();
        if chunk != &want[..chunk.len()] {
            let i = chunk
                .iter()
                .zip(want)
                .position(|(a, b)| *a != b)
                .expect("chunks differ");
            return Err(PayloadError::Mismatch {
                seq,
                offset: 8 * w + i,
                expected: want[i],
                found: chunk[i],
            });
        }
    }
    Ok(seq)
}

/// Whether this process can create ring buffers. If not, prints a loud
/// `SKIPPED` line and returns `false` — or panics when the environment
/// variable [`REQUIRE_PRIVILEGED_ENV`] is `1` (as CI sets it), so a
/// privileged test can never pass by skipping there.
pub fn privileged_or_skip(test: &str) -> bool {
    match crate::RingBuf::create(crate::page_size()) {
        Ok(_) => true,
        Err(e @ Error::PermissionDenied { .. }) => {
            if std::env::var(REQUIRE_PRIVILEGED_ENV).as_deref() == Ok("1") {
                panic!("{test}: privileged test cannot run ({e}) and {REQUIRE_PRIVILEGED_ENV}=1");
            }
            eprintln!("SKIPPED {test}: needs CAP_BPF or root ({e})");
            false
        }
        Err(e) => panic!("{test}: cannot create a ring buffer: {e}"),
    }
}

/// The bpffs mount point, mounting it at `/sys/fs/bpf` if needed (a fresh
/// machine has the directory but no mount). Needs root.
pub fn ensure_bpffs() -> Result<PathBuf> {
    let path = Path::new("/sys/fs/bpf");
    if !crate::sys::is_bpffs(path) {
        crate::sys::mount_bpffs(path)?;
    }
    Ok(path.to_path_buf())
}

/// A fresh path for a pin under the bpffs, unique to this process and call.
pub fn temp_pin_path(name: &str) -> Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let p = ensure_bpffs()?.join(format!(
        "bpf_ringbuf_test_{}_{}_{n}",
        std::process::id(),
        name
    ));
    let _ = std::fs::remove_file(&p);
    Ok(p)
}

/// `bpf(BPF_MAP_CREATE)` of any map type, for tests that need a map of the
/// wrong type (an array, a `USER_RINGBUF`).
pub fn create_map(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> Result<std::os::fd::OwnedFd> {
    crate::sys::bpf::map_create(map_type, key_size, value_size, max_entries, "rb_test_map")
}

/// `bpf(BPF_MAP_CREATE)` of a map of maps (`map_type` 12,
/// `BPF_MAP_TYPE_ARRAY_OF_MAPS`, or 13, `BPF_MAP_TYPE_HASH_OF_MAPS`) whose
/// values are maps like `inner` (for ring buffers: of the same size). Fill
/// it with [`set_inner_map`]; read it with
/// [`RingSet::insert_inner`](crate::RingSet::insert_inner).
pub fn create_map_of_maps(
    map_type: u32,
    key_size: u32,
    max_entries: u32,
    inner: impl std::os::fd::AsFd,
) -> Result<std::os::fd::OwnedFd> {
    crate::sys::bpf::map_create_of_maps(
        map_type,
        key_size,
        max_entries,
        inner.as_fd(),
        "rb_test_outer",
    )
}

/// `bpf(BPF_MAP_UPDATE_ELEM)`: stores the map `inner` at `key` of the map
/// of maps `outer` (the value written is `inner`'s descriptor). `key` must
/// be exactly the outer map's key size, else [`Error::WrongMapLayout`].
pub fn set_inner_map(
    outer: impl std::os::fd::AsFd,
    key: &[u8],
    inner: impl std::os::fd::AsFd,
) -> Result<()> {
    use std::os::fd::AsRawFd;
    let info = crate::sys::bpf::map_info(outer.as_fd())?;
    if key.len() != info.key_size as usize || info.value_size != 4 {
        return Err(Error::WrongMapLayout {
            map_id: info.id,
            layout: "a map of maps updated with this key",
            reason: format!(
                "key size {} and value size {} (expected a {}-byte key and 4)",
                info.key_size,
                info.value_size,
                key.len()
            ),
        });
    }
    let fd = inner.as_fd().as_raw_fd() as u32;
    crate::sys::bpf::map_update(outer.as_fd(), key, &fd.to_ne_bytes())
}

/// `bpf(BPF_MAP_GET_FD_BY_ID)` with `BPF_F_RDONLY`: a read-only descriptor of
/// the map `id`, as a process without write access would hold. A consumer
/// refuses it with [`Error::ReadOnlyMap`] (it must write the consumer position).
pub fn open_map_read_only(id: u32) -> Result<std::os::fd::OwnedFd> {
    crate::sys::bpf::map_get_fd_by_id(id, crate::sys::bpf::BPF_F_RDONLY)
}

/// Pins the calling thread to `cpu` (`sched_setaffinity`). Benchmarks and
/// demos pin the producer and the consumer to different CPUs: otherwise the
/// scheduler may wake the consumer on the producer's busy CPU, where it waits
/// a whole time slice while the ring fills.
pub fn pin_current_thread(cpu: usize) -> Result<()> {
    crate::sys::pin_current_thread(cpu)
}

/// The number of CPUs this process may run on.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_roundtrip() {
        for len in [8, 9, 12, 13, 16, 17, 64, 100, 4096] {
            let mut buf = vec![0u8; len];
            fill_payload(12345, &mut buf);
            assert_eq!(check_payload(&buf), Ok(12345));
            if len >= 12 {
                assert_eq!(
                    u32::from_le_bytes(buf[8..12].try_into().unwrap()) as usize,
                    len
                );
            }
            let last = len - 1;
            buf[last] ^= 1;
            if len == 8 {
                // Only the sequence number itself: a flipped bit names another record.
                assert_eq!(check_payload(&buf), Ok(12345 ^ (1 << 56)));
                continue;
            }
            assert!(matches!(
                check_payload(&buf),
                Err(PayloadError::Mismatch { seq: 12345, offset, .. }) if offset == last
            ));
        }
        assert_eq!(check_payload(&[1, 2, 3]), Err(PayloadError::TooShort(3)));
    }
}
