//! [`RingBuf`]: a handle on a `BPF_MAP_TYPE_RINGBUF` map.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use crate::error::{Error, Result};
use crate::sys::{self, bpf};

/// A `BPF_MAP_TYPE_RINGBUF` map: created here, opened from a pin or an id, or
/// adopted from a descriptor. Its size always comes from the kernel.
///
/// A `RingBuf` only names the map; read it with a [`Reader`](crate::Reader).
///
/// ```no_run
/// use bpf_ringbuf::RingBuf;
/// let ring = RingBuf::create(RingBuf::round_up_size(1 << 20))?;
/// assert_eq!(ring.size(), 1 << 20);
/// # Ok::<(), bpf_ringbuf::Error>(())
/// ```
#[derive(Debug)]
pub struct RingBuf {
    fd: OwnedFd,
    size: usize,
    id: u32,
}

/// What the kernel says about a map, once checked.
pub(crate) struct CheckedMap {
    pub size: usize,
    pub id: u32,
}

/// Checks that `fd` is an open BPF map of type `expected`, with a valid size.
pub(crate) fn check_map(fd: BorrowedFd<'_>, expected: u32) -> Result<CheckedMap> {
    if !sys::fd_is_open(fd) {
        return Err(Error::BadFd { fd: fd.as_raw_fd() });
    }
    if let Some(kind) = sys::fd_kind(fd) {
        if kind != "anon_inode:bpf-map" {
            return Err(Error::NotAMap {
                fd: fd.as_raw_fd(),
                kind,
            });
        }
    }
    let info = match bpf::map_info(fd) {
        Ok(info) => info,
        // EINVAL/EBADF from OBJ_GET_INFO_BY_FD: not a BPF object at all.
        Err(Error::Syscall { source, .. })
            if matches!(
                source.raw_os_error(),
                Some(libc::EINVAL) | Some(libc::EBADF)
            ) =>
        {
            return Err(Error::NotAMap {
                fd: fd.as_raw_fd(),
                kind: sys::fd_kind(fd).unwrap_or_else(|| "unknown".into()),
            });
        }
        Err(e) => return Err(e),
    };
    if info.map_type != expected {
        return Err(Error::WrongMapType {
            found: info.map_type,
            found_name: bpf::map_type_name(info.map_type),
            expected,
            expected_name: bpf::map_type_name(expected),
        });
    }
    let size = info.max_entries as usize;
    check_size(size)?;
    Ok(CheckedMap { size, id: info.id })
}

/// A size the kernel accepts for a ring buffer: a power of two, a multiple of
/// the page size, and representable as `max_entries` (a `u32`).
fn check_size(size: usize) -> Result<()> {
    let page = sys::page_size();
    if size >= page && size.is_power_of_two() && size % page == 0 && size <= MAX_SIZE {
        return Ok(());
    }
    Err(Error::BadSize {
        size,
        page_size: page,
        suggested: nearest_size(size),
    })
}

/// The largest power of two that fits `max_entries` (`u32`).
const MAX_SIZE: usize = 1 << 31;

fn nearest_size(size: usize) -> usize {
    let up = RingBuf::round_up_size(size);
    let page = sys::page_size();
    let down = if size <= page {
        page
    } else {
        let p = 1usize << (usize::BITS - 1 - size.leading_zeros());
        p.clamp(page, MAX_SIZE)
    };
    if size.abs_diff(down) < size.abs_diff(up) {
        down
    } else {
        up
    }
}

impl RingBuf {
    /// `bpf(BPF_MAP_CREATE)`: creates a ring buffer of `size` data bytes.
    ///
    /// `size` must be a power of two and a multiple of the page size, or this
    /// returns [`Error::BadSize`] naming the nearest valid size. Use
    /// [`RingBuf::round_up_size`] to get one.
    ///
    /// ```no_run
    /// use bpf_ringbuf::{Error, RingBuf};
    /// assert!(matches!(RingBuf::create(5000), Err(Error::BadSize { suggested: 4096, .. })));
    /// let ring = RingBuf::create(256 * 1024)?;
    /// # Ok::<(), Error>(())
    /// ```
    pub fn create(size: usize) -> Result<RingBuf> {
        RingBuf::create_named(size, "bpf_ringbuf")
    }

    /// Like [`create`](Self::create), with a map name (at most 15 characters
    /// of `[A-Za-z0-9_]` are kept) shown by `bpftool map`.
    pub fn create_named(size: usize, name: &str) -> Result<RingBuf> {
        check_size(size)?;
        let fd = bpf::map_create(bpf::BPF_MAP_TYPE_RINGBUF, 0, 0, size as u32, name)?;
        RingBuf::from_fd(fd)
    }

    /// The smallest valid ring buffer size that holds `requested` bytes: the
    /// next power of two, at least one page, at most 2 GiB.
    ///
    /// ```
    /// use bpf_ringbuf::RingBuf;
    /// let page = bpf_ringbuf::page_size();
    /// assert_eq!(RingBuf::round_up_size(0), page);
    /// assert_eq!(RingBuf::round_up_size(page + 1), 2 * page);
    /// assert_eq!(RingBuf::round_up_size(1 << 20), 1 << 20);
    /// ```
    pub fn round_up_size(requested: usize) -> usize {
        requested
            .max(sys::page_size())
            .checked_next_power_of_two()
            .unwrap_or(MAX_SIZE)
            .min(MAX_SIZE)
    }

    /// `bpf(BPF_OBJ_GET)`: opens a ring buffer pinned at `path` in a bpffs.
    ///
    /// A missing pin is [`Error::PinNotFound`].
    pub fn open_pinned(path: impl AsRef<Path>) -> Result<RingBuf> {
        let path = path.as_ref();
        let fd = bpf::obj_get(path).map_err(|e| match e {
            Error::Syscall { ref source, .. } if source.raw_os_error() == Some(libc::ENOENT) => {
                Error::PinNotFound {
                    path: path.to_path_buf(),
                }
            }
            e => e,
        })?;
        RingBuf::from_fd(fd)
    }

    /// `bpf(BPF_MAP_GET_FD_BY_ID)`: opens a ring buffer by its map id.
    pub fn from_id(id: u32) -> Result<RingBuf> {
        RingBuf::from_fd(bpf::map_get_fd_by_id(id)?)
    }

    /// Adopts a descriptor, checking that it is a `BPF_MAP_TYPE_RINGBUF` map
    /// and reading its size from the kernel. On error the descriptor is closed.
    pub fn from_fd(fd: OwnedFd) -> Result<RingBuf> {
        let m = check_map(fd.as_fd(), bpf::BPF_MAP_TYPE_RINGBUF)?;
        Ok(RingBuf {
            fd,
            size: m.size,
            id: m.id,
        })
    }

    /// `bpf(BPF_OBJ_PIN)`: pins the map at `path`, which must be inside a
    /// mounted bpffs (usually `/sys/fs/bpf`).
    pub fn pin(&self, path: impl AsRef<Path>) -> Result<()> {
        bpf::obj_pin(self.fd.as_fd(), path.as_ref())
    }

    /// The data size in bytes (`max_entries`), not the size of the mapping.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The kernel's id for this map.
    pub fn id(&self) -> u32 {
        self.id
    }
}

impl AsFd for RingBuf {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl From<RingBuf> for OwnedFd {
    fn from(r: RingBuf) -> OwnedFd {
        r.fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let page = sys::page_size();
        assert!(check_size(page).is_ok());
        assert!(check_size(64 * page).is_ok());
        for bad in [0, 8, page - 8, page + 8, 3 * page, usize::MAX] {
            assert!(
                matches!(check_size(bad), Err(Error::BadSize { .. })),
                "{bad}"
            );
        }
        assert_eq!(nearest_size(0), page);
        assert_eq!(nearest_size(3 * page), 4 * page);
        assert_eq!(nearest_size(5 * page), 4 * page);
        assert_eq!(nearest_size(usize::MAX), MAX_SIZE);
        assert_eq!(RingBuf::round_up_size(usize::MAX), MAX_SIZE);
    }
}
