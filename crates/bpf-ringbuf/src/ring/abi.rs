//! The ring buffer's record format and size rules, as the kernel defines them
//! (`kernel/bpf/ringbuf.c`, `include/uapi/linux/bpf.h`). Every other part of
//! this crate, its tests included, takes these rules from here.
//!
//! A record is an 8-byte header `{ u32 len; u32 pg_off }` followed by `len`
//! payload bytes, padded so the next header is 8-aligned:
//!
//! ```
//! use bpf_ringbuf::abi::{record_stride, HEADER_SIZE};
//! assert_eq!(HEADER_SIZE, 8);
//! assert_eq!(record_stride(0), 8);
//! assert_eq!(record_stride(1), 16);
//! assert_eq!(record_stride(8), 16);
//! assert_eq!(record_stride(9), 24);
//! ```
//!
//! This module has no `unsafe` and reads no memory: the loom model includes
//! it as it is (`tests/loom.rs`).

/// Size of a record header: `{ u32 len; u32 pg_off }`.
pub const HEADER_SIZE: usize = 8;

/// Bit 31 of a header's `len`: the record is reserved and not yet committed
/// (`BPF_RINGBUF_BUSY_BIT`). A consumer stops at such a record.
pub const BUSY_BIT: u32 = 1 << 31;

/// Bit 30 of a header's `len`: the record was committed as discarded
/// (`BPF_RINGBUF_DISCARD_BIT`). A consumer skips it.
pub const DISCARD_BIT: u32 = 1 << 30;

/// The largest payload a header can describe: `len` must stay below the two
/// flag bits. (The kernel's own limit, `RINGBUF_MAX_RECORD_SZ`, is lower:
/// `UINT_MAX / 4`, and a record must also fit the ring.)
pub const MAX_RECORD_LEN: usize = (1 << 30) - 1;

/// The largest sample a `BPF_MAP_TYPE_USER_RINGBUF` can carry, whatever the
/// ring size: the kernel hands each sample to the program as a dynptr, whose
/// size field has 24 bits (`DYNPTR_MAX_SIZE`), and its drain stops with
/// `E2BIG` at a larger one, for good. (A sample must also fit the ring:
/// header included, at most the ring size.)
pub const USER_RINGBUF_MAX_SAMPLE: usize = (1 << 24) - 1;

/// The payload length of a header word, flag bits stripped.
#[inline(always)]
pub const fn header_len(word: u32) -> usize {
    (word & !(BUSY_BIT | DISCARD_BIT)) as usize
}

/// Ring bytes taken by a record of `len` payload bytes: header included,
/// rounded up to 8 (`round_up(len + BPF_RINGBUF_HDR_SZ, 8)`). Wraps for
/// lengths near `usize::MAX`, which no header can describe.
#[inline(always)]
pub const fn record_stride(len: usize) -> usize {
    len.wrapping_add(HEADER_SIZE + 7) & !7
}

/// The largest ring size this crate accepts: the largest power of two that
/// `max_entries` (a `u32`) can hold.
pub const MAX_RING_SIZE: usize = 1 << 31;

/// Whether the kernel accepts `size` as a ring buffer's data size on a
/// machine with pages of `page` bytes: a power of two, a multiple of the page
/// size (so at least one page), and at most [`MAX_RING_SIZE`].
///
/// ```
/// use bpf_ringbuf::abi::is_valid_ring_size;
/// assert!(is_valid_ring_size(4096, 4096));
/// assert!(is_valid_ring_size(1 << 20, 4096));
/// assert!(!is_valid_ring_size(2048, 4096)); // below one page
/// assert!(!is_valid_ring_size(3 * 4096, 4096)); // not a power of two
/// ```
pub const fn is_valid_ring_size(size: usize, page: usize) -> bool {
    size >= page && size.is_power_of_two() && size % page == 0 && size <= MAX_RING_SIZE
}

/// The smallest valid ring size that holds `requested` bytes: the next power
/// of two, at least one page, at most [`MAX_RING_SIZE`].
///
/// ```
/// use bpf_ringbuf::abi::round_up_ring_size;
/// assert_eq!(round_up_ring_size(0, 4096), 4096);
/// assert_eq!(round_up_ring_size(4097, 4096), 8192);
/// assert_eq!(round_up_ring_size(usize::MAX, 4096), 1 << 31);
/// ```
pub const fn round_up_ring_size(requested: usize, page: usize) -> usize {
    let r = if requested < page { page } else { requested };
    match r.checked_next_power_of_two() {
        Some(p) if p <= MAX_RING_SIZE => p,
        _ => MAX_RING_SIZE,
    }
}

/// The valid ring size nearest to `size` (the one above on a tie): what an
/// error about a bad size suggests.
///
/// ```
/// use bpf_ringbuf::abi::nearest_ring_size;
/// assert_eq!(nearest_ring_size(0, 4096), 4096);
/// assert_eq!(nearest_ring_size(3 * 4096, 4096), 4 * 4096);
/// assert_eq!(nearest_ring_size(5 * 4096, 4096), 4 * 4096);
/// ```
pub const fn nearest_ring_size(size: usize, page: usize) -> usize {
    let up = round_up_ring_size(size, page);
    let down = if size <= page {
        page
    } else {
        let p = 1usize << (usize::BITS - 1 - size.leading_zeros());
        if p < page {
            page
        } else if p > MAX_RING_SIZE {
            MAX_RING_SIZE
        } else {
            p
        }
    };
    if size.abs_diff(down) < size.abs_diff(up) {
        down
    } else {
        up
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides() {
        for (len, stride) in [(0, 8), (1, 16), (7, 16), (8, 16), (9, 24), (16, 24)] {
            assert_eq!(record_stride(len), stride, "{len}");
        }
        assert_eq!(header_len(BUSY_BIT | DISCARD_BIT | 5), 5);
        assert_eq!(header_len(u32::MAX), MAX_RECORD_LEN);
    }

    #[test]
    fn sizes() {
        let page = 4096;
        for bad in [0, 8, page - 8, page + 8, 3 * page, usize::MAX] {
            assert!(!is_valid_ring_size(bad, page), "{bad}");
        }
        assert!(is_valid_ring_size(page, page));
        assert!(is_valid_ring_size(MAX_RING_SIZE, page));
        assert!(!is_valid_ring_size(2 * MAX_RING_SIZE, page));
        assert_eq!(nearest_ring_size(usize::MAX, page), MAX_RING_SIZE);
        assert_eq!(round_up_ring_size(MAX_RING_SIZE + 1, page), MAX_RING_SIZE);
        // Every suggestion is valid.
        for s in [0, 1, page - 1, page + 1, 3 * page, 5 * page, 1 << 40] {
            assert!(is_valid_ring_size(nearest_ring_size(s, page), page), "{s}");
            assert!(is_valid_ring_size(round_up_ring_size(s, page), page), "{s}");
        }
    }
}
