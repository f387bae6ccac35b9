//! [`MapInfo`] and [`map_ids`]: what the kernel says about any BPF map, and
//! every map on the host, for tools that look for ring buffers (the CLI's
//! `list`). Reading a ring still goes through [`RingBuf`](crate::RingBuf).

use std::os::fd::AsFd;

use crate::error::{Error, Result};
use crate::sys::bpf;

/// What the kernel reports about a BPF map of any type
/// (`bpf(BPF_OBJ_GET_INFO_BY_FD)`, `struct bpf_map_info`).
///
/// ```no_run
/// use bpf_ringbuf::{MapInfo, RingBuf};
/// let ring = RingBuf::create_named(1 << 16, "events")?;
/// let info = MapInfo::of(&ring)?;
/// assert_eq!((info.type_name, info.name.as_str()), ("RINGBUF", "events"));
/// assert!(info.is_ring_buffer());
/// # Ok::<(), bpf_ringbuf::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MapInfo {
    /// The kernel's id of the map.
    pub id: u32,
    /// `BPF_MAP_TYPE_*` (27 for `RINGBUF`, 31 for `USER_RINGBUF`).
    pub map_type: u32,
    /// The kernel's name of the type, without `BPF_MAP_TYPE_` (`"RINGBUF"`,
    /// `"UNKNOWN"` for a type newer than this crate).
    pub type_name: &'static str,
    /// The map's name (up to 15 bytes, as the loader gave it).
    pub name: String,
    /// Key size in bytes (0 for ring buffers).
    pub key_size: u32,
    /// Value size in bytes (0 for ring buffers).
    pub value_size: u32,
    /// `max_entries`: for ring buffers, the data size in bytes.
    pub max_entries: u32,
    /// `map_flags` (for a ring, bit 19 is `BPF_F_RB_OVERWRITE`).
    pub map_flags: u32,
}

impl MapInfo {
    /// `map_type` of a `BPF_MAP_TYPE_RINGBUF` (kernel producer).
    pub const RINGBUF: u32 = bpf::BPF_MAP_TYPE_RINGBUF;
    /// `map_type` of a `BPF_MAP_TYPE_USER_RINGBUF` (userspace producer).
    pub const USER_RINGBUF: u32 = bpf::BPF_MAP_TYPE_USER_RINGBUF;
    /// `BPF_F_RB_OVERWRITE` in `map_flags` (overwrite mode, Linux 6.19+).
    pub const OVERWRITE: u32 = bpf::BPF_F_RB_OVERWRITE;

    /// `bpf(BPF_OBJ_GET_INFO_BY_FD)` on any descriptor of a BPF map.
    /// A descriptor that is not a BPF object fails with the call's error.
    pub fn of(map: impl AsFd) -> Result<MapInfo> {
        let raw = bpf::map_info(map.as_fd())?;
        let end = raw.name.iter().position(|&b| b == 0).unwrap_or(16);
        Ok(MapInfo {
            id: raw.id,
            map_type: raw.map_type,
            type_name: bpf::map_type_name(raw.map_type),
            name: String::from_utf8_lossy(&raw.name[..end]).into_owned(),
            key_size: raw.key_size,
            value_size: raw.value_size,
            max_entries: raw.max_entries,
            map_flags: raw.map_flags,
        })
    }

    /// `bpf(BPF_MAP_GET_FD_BY_ID)`, then [`of`](Self::of): the map with id
    /// `id`. A map that does not exist (any more) is a
    /// [`Error::Syscall`] whose [`os_error`](Error::os_error) is `ENOENT`.
    pub fn from_id(id: u32) -> Result<MapInfo> {
        MapInfo::of(bpf::map_get_fd_by_id(id, 0)?)
    }

    /// Whether the map is a ring buffer: `RINGBUF` or `USER_RINGBUF`.
    pub fn is_ring_buffer(&self) -> bool {
        self.map_type == Self::RINGBUF || self.map_type == Self::USER_RINGBUF
    }
}

/// Every BPF map id on the host, in increasing order
/// (`bpf(BPF_MAP_GET_NEXT_ID)`; needs `CAP_SYS_ADMIN`). Maps created or
/// freed meanwhile may or may not show up, and a map may be gone by the time
/// it is opened. A failing call ends the iteration after yielding its error.
///
/// ```no_run
/// use bpf_ringbuf::{map_ids, MapInfo};
/// for id in map_ids() {
///     let Ok(info) = MapInfo::from_id(id?) else { continue }; // freed meanwhile
///     if info.is_ring_buffer() {
///         println!("{} {} {} bytes", info.id, info.name, info.max_entries);
///     }
/// }
/// # Ok::<(), bpf_ringbuf::Error>(())
/// ```
pub fn map_ids() -> MapIds {
    MapIds { next: Some(0) }
}

/// The iterator of [`map_ids`].
#[derive(Debug)]
pub struct MapIds {
    /// The id to ask the next one above of; `None` once finished.
    next: Option<u32>,
}

impl Iterator for MapIds {
    type Item = Result<u32>;

    fn next(&mut self) -> Option<Result<u32>> {
        let start = self.next?;
        match bpf::map_get_next_id(start) {
            Ok(Some(id)) => {
                self.next = Some(id);
                Some(Ok(id))
            }
            Ok(None) => {
                self.next = None;
                None
            }
            Err(e) => {
                self.next = None;
                Some(Err::<u32, Error>(e))
            }
        }
    }
}
