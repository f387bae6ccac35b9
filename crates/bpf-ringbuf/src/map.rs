//! [`RingBuf`]: a handle on a `BPF_MAP_TYPE_RINGBUF` map.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use crate::error::{Error, Result};
use crate::ring::abi;
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
    flags: u32,
}

/// What the kernel says about a map, once checked.
pub(crate) struct CheckedMap {
    pub size: usize,
    pub id: u32,
    pub flags: u32,
}

/// Checks that `fd` is an open BPF map of type `expected`, with a valid size.
pub(crate) fn check_map(fd: BorrowedFd<'_>, expected: u32) -> Result<CheckedMap> {
    let info = check_map_type(fd, expected)?;
    let size = info.max_entries as usize;
    check_size(size)?;
    Ok(CheckedMap {
        size,
        id: info.id,
        flags: info.map_flags,
    })
}

/// Checks that `fd` is an open BPF map of type `expected` (any size), and
/// returns what the kernel says about it.
pub(crate) fn check_map_type(fd: BorrowedFd<'_>, expected: u32) -> Result<bpf::MapInfo> {
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
    Ok(info)
}

/// A size the kernel accepts for a ring buffer ([`abi::is_valid_ring_size`]).
/// The fake ring checks its size here too.
pub(crate) fn check_size(size: usize) -> Result<()> {
    let page = sys::page_size();
    if abi::is_valid_ring_size(size, page) {
        return Ok(());
    }
    Err(Error::BadSize {
        size,
        page_size: page,
        suggested: abi::nearest_ring_size(size, page),
    })
}

/// Map flags that do not change the ring's protocol: where the memory lives
/// (`BPF_F_NUMA_NODE`) and who may access the map through syscalls or
/// programs (read-only and write-only flags).
const HARMLESS_FLAGS: u32 = bpf::BPF_F_NUMA_NODE
    | bpf::BPF_F_RDONLY
    | bpf::BPF_F_WRONLY
    | bpf::BPF_F_RDONLY_PROG
    | bpf::BPF_F_WRONLY_PROG;

/// Refuses, for a zero-copy consumer, a ring whose `map_flags` (from
/// `bpf_map_info`) include any flag it does not understand: overwrite mode
/// (`BPF_F_RB_OVERWRITE`) rewrites records while they are borrowed, and an
/// unknown future flag may change the protocol just as much.
pub(crate) fn check_consumer_flags(flags: u32) -> Result<()> {
    let unsupported = flags & !HARMLESS_FLAGS;
    if unsupported == 0 {
        return Ok(());
    }
    let name = if unsupported & bpf::BPF_F_RB_OVERWRITE != 0 {
        "BPF_F_RB_OVERWRITE (overwrite mode)"
    } else {
        "an unknown flag"
    };
    Err(Error::UnsupportedMapFlags {
        flags,
        unsupported,
        name,
    })
}

/// Refuses, for a [`Spectator`](crate::Spectator), a ring whose `map_flags`
/// include a flag it does not understand. It reads overwrite-mode rings
/// (`BPF_F_RB_OVERWRITE`), and returns whether the ring is one.
pub(crate) fn check_spectator_flags(flags: u32) -> Result<bool> {
    let overwrite = flags & bpf::BPF_F_RB_OVERWRITE != 0;
    check_consumer_flags(flags & !bpf::BPF_F_RB_OVERWRITE)?;
    Ok(overwrite)
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

    /// `bpf(BPF_MAP_CREATE)` with `BPF_F_RB_OVERWRITE`: creates a ring buffer
    /// in overwrite mode (Linux 6.19+), a "flight recorder" whose producer
    /// overwrites the oldest records instead of failing when it is full.
    /// Read it with a [`FlightRecorder`](crate::FlightRecorder) or a
    /// [`Spectator`](crate::Spectator); a [`Reader`](crate::Reader) refuses it.
    ///
    /// A kernel without overwrite mode refuses the flag: that is
    /// [`Error::Syscall`] with `EINVAL` (see
    /// [`Error::os_error`]).
    ///
    /// ```no_run
    /// use bpf_ringbuf::{Error, RingBuf};
    /// match RingBuf::create_overwrite(1 << 20) {
    ///     Ok(ring) => assert_ne!(ring.map_flags() & (1 << 19), 0),
    ///     Err(e) if e.os_error().and_then(|e| e.raw_os_error()) == Some(libc::EINVAL) => {
    ///         println!("this kernel has no overwrite mode")
    ///     }
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), Error>(())
    /// ```
    pub fn create_overwrite(size: usize) -> Result<RingBuf> {
        check_size(size)?;
        let fd = bpf::map_create_with_flags(
            bpf::BPF_MAP_TYPE_RINGBUF,
            0,
            0,
            size as u32,
            bpf::BPF_F_RB_OVERWRITE,
            "bpf_ringbuf_ow",
        )?;
        RingBuf::from_fd(fd)
    }

    /// Whether the map is in overwrite mode (`BPF_F_RB_OVERWRITE`, bit 19 of
    /// [`map_flags`](Self::map_flags)).
    pub fn is_overwrite(&self) -> bool {
        self.flags & bpf::BPF_F_RB_OVERWRITE != 0
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
        abi::round_up_ring_size(requested, sys::page_size())
    }

    /// `bpf(BPF_OBJ_GET)`: opens a ring buffer pinned at `path` in a bpffs.
    ///
    /// A missing pin is [`Error::PinNotFound`].
    pub fn open_pinned(path: impl AsRef<Path>) -> Result<RingBuf> {
        RingBuf::from_fd(bpf::obj_get_pinned(path.as_ref())?)
    }

    /// `bpf(BPF_MAP_GET_FD_BY_ID)`: opens a ring buffer by its map id.
    pub fn from_id(id: u32) -> Result<RingBuf> {
        RingBuf::from_fd(bpf::map_get_fd_by_id(id, 0)?)
    }

    /// Adopts a descriptor, checking that it is a `BPF_MAP_TYPE_RINGBUF` map
    /// and reading its size from the kernel. On error the descriptor is closed.
    pub fn from_fd(fd: OwnedFd) -> Result<RingBuf> {
        let m = check_map(fd.as_fd(), bpf::BPF_MAP_TYPE_RINGBUF)?;
        Ok(RingBuf {
            fd,
            size: m.size,
            id: m.id,
            flags: m.flags,
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

    /// The map's `map_flags`, as the kernel reports them. A [`Consumer`](crate::Consumer)
    /// refuses flags that change the protocol, such as `BPF_F_RB_OVERWRITE`
    /// (bit 19).
    pub fn map_flags(&self) -> u32 {
        self.flags
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
                matches!(check_size(bad), Err(Error::BadSize { suggested, .. })
                    if suggested == abi::nearest_ring_size(bad, page)),
                "{bad}"
            );
        }
        assert_eq!(RingBuf::round_up_size(usize::MAX), abi::MAX_RING_SIZE);
    }

    /// The decision on a synthetic `bpf_map_info.map_flags`: this kernel
    /// (6.18) refuses to create an overwrite-mode ring, so no real map can
    /// show the flag here.
    #[test]
    fn consumer_flags() {
        for ok in [
            0,
            bpf::BPF_F_NUMA_NODE,
            bpf::BPF_F_RDONLY_PROG | bpf::BPF_F_WRONLY,
        ] {
            assert!(check_consumer_flags(ok).is_ok(), "{ok:#x}");
        }
        let ow = bpf::BPF_F_RB_OVERWRITE | bpf::BPF_F_NUMA_NODE;
        assert!(matches!(
            check_consumer_flags(ow),
            Err(Error::UnsupportedMapFlags { flags, unsupported, name })
                if flags == ow && unsupported == 1 << 19 && name.contains("BPF_F_RB_OVERWRITE")
        ));
        assert!(check_spectator_flags(ow).unwrap());
        assert!(!check_spectator_flags(bpf::BPF_F_RDONLY).unwrap());
        assert!(check_spectator_flags(ow | 1 << 25).is_err());
        assert!(matches!(
            check_consumer_flags(1 << 25),
            Err(Error::UnsupportedMapFlags { unsupported, name: "an unknown flag", .. })
                if unsupported == 1 << 25
        ));
    }
}
