//! The `bpf(2)` system call: commands, `union bpf_attr` members and
//! `struct bpf_map_info`, mirrored from `include/uapi/linux/bpf.h`.
//!
//! On Windows the same structures go to eBPF for Windows' `bpf()` in
//! `ebpfapi.dll`, which takes the Linux `bpf_attr` ABI (its
//! `include/linux/bpf.h`); only the map type numbers differ.

// The map-in-map, per-CPU and lookup items serve Linux-only modules.
#![cfg_attr(windows, allow(dead_code))]

use std::ffi::CString;
use std::mem::size_of;

#[cfg(target_os = "linux")]
use super::cvt;
use super::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use crate::error::Error;

pub(crate) const BPF_MAP_CREATE: u32 = 0;
pub(crate) const BPF_MAP_LOOKUP_ELEM: u32 = 1;
#[cfg(feature = "testing")]
pub(crate) const BPF_MAP_UPDATE_ELEM: u32 = 2;
#[cfg(feature = "testing")]
pub(crate) const BPF_PROG_LOAD: u32 = 5;
pub(crate) const BPF_OBJ_PIN: u32 = 6;
pub(crate) const BPF_OBJ_GET: u32 = 7;
#[cfg(feature = "testing")]
pub(crate) const BPF_PROG_TEST_RUN: u32 = 10;
pub(crate) const BPF_MAP_GET_NEXT_ID: u32 = 12;
pub(crate) const BPF_MAP_GET_FD_BY_ID: u32 = 14;
pub(crate) const BPF_OBJ_GET_INFO_BY_FD: u32 = 15;
#[cfg(feature = "testing")]
pub(crate) const BPF_BTF_LOAD: u32 = 18;

/// `BPF_F_NUMA_NODE`: the map was allocated on a chosen NUMA node.
pub(crate) const BPF_F_NUMA_NODE: u32 = 1 << 2;
/// `BPF_F_RDONLY`: read-only access from syscalls (a map flag, and the
/// `file_flags`/`open_flags` of a read-only descriptor).
pub(crate) const BPF_F_RDONLY: u32 = 1 << 3;
/// `BPF_F_WRONLY`: write-only access from syscalls.
pub(crate) const BPF_F_WRONLY: u32 = 1 << 4;
/// `BPF_F_RDONLY_PROG`: read-only access from BPF programs.
pub(crate) const BPF_F_RDONLY_PROG: u32 = 1 << 7;
/// `BPF_F_WRONLY_PROG`: write-only access from BPF programs.
pub(crate) const BPF_F_WRONLY_PROG: u32 = 1 << 8;
/// `BPF_F_RB_OVERWRITE` (Linux 6.19+): the producer overwrites the oldest
/// records instead of failing when the ring is full.
pub(crate) const BPF_F_RB_OVERWRITE: u32 = 1 << 19;

/// `BPF_MAP_TYPE_ARRAY`.
#[cfg(any(test, feature = "testing"))]
pub(crate) const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// `BPF_MAP_TYPE_PERCPU_ARRAY`: one value per possible CPU under each key.
pub(crate) const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
/// `BPF_MAP_TYPE_RINGBUF`: kernel producer, userspace consumer.
#[cfg(target_os = "linux")]
pub(crate) const BPF_MAP_TYPE_RINGBUF: u32 = 27;
/// eBPF for Windows' `BPF_MAP_TYPE_RINGBUF` (`ebpf_structs.h`: 13, where
/// Linux has 27).
#[cfg(windows)]
pub(crate) const BPF_MAP_TYPE_RINGBUF: u32 = 13;
/// `BPF_MAP_TYPE_USER_RINGBUF`: userspace producer, kernel consumer.
pub(crate) const BPF_MAP_TYPE_USER_RINGBUF: u32 = 31;

/// `BPF_PROG_TYPE_SOCKET_FILTER`, runnable with `BPF_PROG_TEST_RUN`.
#[cfg(feature = "testing")]
pub(crate) const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;

/// The `BPF_MAP_CREATE` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
pub(crate) struct MapCreateAttr {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub inner_map_fd: u32,
    pub numa_node: u32,
    pub map_name: [u8; 16],
    pub map_ifindex: u32,
    pub btf_fd: u32,
    pub btf_key_type_id: u32,
    pub btf_value_type_id: u32,
    pub btf_vmlinux_value_type_id: u32,
    pub map_extra: u64,
}

/// The `BPF_MAP_*_ELEM` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
pub(crate) struct MapElemAttr {
    pub map_fd: u32,
    pub _pad: u32,
    pub key: u64,
    pub value: u64,
    pub flags: u64,
}

/// The `BPF_OBJ_PIN`/`BPF_OBJ_GET` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
pub(crate) struct ObjAttr {
    pub pathname: u64,
    pub bpf_fd: u32,
    pub file_flags: u32,
    pub path_fd: i32,
    pub _pad: u32,
}

/// The `BPF_*_GET_FD_BY_ID` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
pub(crate) struct GetIdAttr {
    pub id: u32,
    pub next_id: u32,
    pub open_flags: u32,
}

/// The `BPF_OBJ_GET_INFO_BY_FD` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
pub(crate) struct InfoAttr {
    pub bpf_fd: u32,
    pub info_len: u32,
    pub info: u64,
}

#[cfg(any(test, feature = "testing"))]
/// The `BPF_PROG_LOAD` member of `union bpf_attr` (up to `expected_attach_type`).
#[repr(C)]
#[derive(Default)]
pub(crate) struct ProgLoadAttr {
    pub prog_type: u32,
    pub insn_cnt: u32,
    pub insns: u64,
    pub license: u64,
    pub log_level: u32,
    pub log_size: u32,
    pub log_buf: u64,
    pub kern_version: u32,
    pub prog_flags: u32,
    pub prog_name: [u8; 16],
    pub prog_ifindex: u32,
    pub expected_attach_type: u32,
    pub prog_btf_fd: u32,
    pub func_info_rec_size: u32,
    pub func_info: u64,
    pub func_info_cnt: u32,
    pub line_info_rec_size: u32,
}

#[cfg(any(test, feature = "testing"))]
/// The `BPF_PROG_TEST_RUN` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
pub(crate) struct TestRunAttr {
    pub prog_fd: u32,
    pub retval: u32,
    pub data_size_in: u32,
    pub data_size_out: u32,
    pub data_in: u64,
    pub data_out: u64,
    pub repeat: u32,
    pub duration: u32,
    pub ctx_size_in: u32,
    pub ctx_size_out: u32,
    pub ctx_in: u64,
    pub ctx_out: u64,
    pub flags: u32,
    pub cpu: u32,
    pub batch_size: u32,
    pub _pad: u32,
}

/// `struct bpf_map_info` (up to `map_extra`).
#[repr(C)]
#[derive(Default, Debug, Clone)]
pub(crate) struct MapInfo {
    pub map_type: u32,
    pub id: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub name: [u8; 16],
    pub ifindex: u32,
    pub btf_vmlinux_value_type_id: u32,
    pub netns_dev: u64,
    pub netns_ino: u64,
    pub btf_id: u32,
    pub btf_key_type_id: u32,
    pub btf_value_type_id: u32,
    pub btf_vmlinux_id: u32,
    pub map_extra: u64,
}

/// `bpf(cmd, attr, sizeof(*attr))`.
#[cfg(target_os = "linux")]
fn bpf<T>(call: &'static str, cmd: u32, attr: &mut T) -> Result<libc::c_long, Error> {
    // SAFETY: `attr` is a live, exclusively borrowed `#[repr(C)]` bpf_attr member
    // of exactly `size_of::<T>()` bytes; the kernel zero-extends the rest. Any
    // pointers inside it were set by our caller to memory that outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as libc::c_long,
        )
    };
    cvt(call, ret)
}

/// `bpf(cmd, attr, sizeof(*attr))` of eBPF for Windows (`ebpfapi.dll`).
#[cfg(windows)]
fn bpf<T>(call: &'static str, cmd: u32, attr: &mut T) -> Result<std::ffi::c_long, Error> {
    // SAFETY: `attr` is a live, exclusively borrowed `#[repr(C)]` bpf_attr
    // member of exactly `size_of::<T>()` bytes (efW takes the Linux layout
    // and zero-extends or checks the rest). Any pointers inside it were set
    // by our caller to memory that outlives the call.
    unsafe { super::windows::bpf(call, cmd, (attr as *mut T).cast(), size_of::<T>()) }
}

/// Wraps a descriptor returned by a successful `bpf()` call.
fn owned(ret: std::ffi::c_long) -> OwnedFd {
    // SAFETY: `ret` is a new descriptor the kernel just returned to us.
    unsafe { OwnedFd::from_raw_fd(ret as RawFd) }
}

fn obj_name(name: &str) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (o, b) in out
        .iter_mut()
        .zip(
            name.bytes()
                .filter(|b| b.is_ascii_alphanumeric() || *b == b'_'),
        )
        .take(15)
    {
        *o = b;
    }
    out
}

/// `bpf(BPF_MAP_CREATE)`: creates a map.
pub(crate) fn map_create(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    name: &str,
) -> Result<OwnedFd, Error> {
    map_create_with_flags(map_type, key_size, value_size, max_entries, 0, name)
}

/// `bpf(BPF_MAP_CREATE)` with `map_flags`.
pub(crate) fn map_create_with_flags(
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    name: &str,
) -> Result<OwnedFd, Error> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags,
        map_name: obj_name(name),
        ..Default::default()
    };
    bpf("bpf(BPF_MAP_CREATE)", BPF_MAP_CREATE, &mut attr).map(owned)
}

/// `bpf(BPF_OBJ_GET_INFO_BY_FD)` on a map.
pub(crate) fn map_info(fd: BorrowedFd<'_>) -> Result<MapInfo, Error> {
    let mut info = MapInfo::default();
    let mut attr = InfoAttr {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<MapInfo>() as u32,
        info: &mut info as *mut MapInfo as u64,
    };
    bpf(
        "bpf(BPF_OBJ_GET_INFO_BY_FD)",
        BPF_OBJ_GET_INFO_BY_FD,
        &mut attr,
    )?;
    Ok(info)
}

/// The path as a C string; a NUL byte inside is [`Error::InvalidPath`].
/// On Windows efW pin paths are strings; one that is not valid Unicode is
/// [`Error::InvalidPath`] too.
pub(crate) fn c_path(path: &std::path::Path) -> Result<CString, Error> {
    #[cfg(target_os = "linux")]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        Some(path.as_os_str().as_bytes())
    };
    #[cfg(windows)]
    let bytes = path.to_str().map(str::as_bytes);
    bytes
        .and_then(|b| CString::new(b).ok())
        .ok_or_else(|| Error::InvalidPath {
            path: path.to_path_buf(),
        })
}

/// `bpf(BPF_OBJ_PIN)`: pins an object in a bpffs.
pub(crate) fn obj_pin(fd: BorrowedFd<'_>, path: &std::path::Path) -> Result<(), Error> {
    let cpath = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: cpath.as_ptr() as u64,
        bpf_fd: fd.as_raw_fd() as u32,
        ..Default::default()
    };
    bpf("bpf(BPF_OBJ_PIN)", BPF_OBJ_PIN, &mut attr).map(drop)
}

/// `bpf(BPF_OBJ_GET)`: opens a pinned object (`file_flags` 0 for
/// read-write, or [`BPF_F_RDONLY`]).
pub(crate) fn obj_get(path: &std::path::Path, file_flags: u32) -> Result<OwnedFd, Error> {
    let cpath = c_path(path)?;
    let mut attr = ObjAttr {
        pathname: cpath.as_ptr() as u64,
        file_flags,
        ..Default::default()
    };
    bpf("bpf(BPF_OBJ_GET)", BPF_OBJ_GET, &mut attr).map(owned)
}

/// [`obj_get`] read-write, with a missing pin (`ENOENT`) as
/// [`Error::PinNotFound`] naming the path.
pub(crate) fn obj_get_pinned(path: &std::path::Path) -> Result<OwnedFd, Error> {
    obj_get(path, 0).map_err(|e| match e {
        Error::Syscall { ref source, .. } if source.raw_os_error() == Some(libc::ENOENT) => {
            Error::PinNotFound {
                path: path.to_path_buf(),
            }
        }
        e => e,
    })
}

/// `bpf(BPF_MAP_GET_FD_BY_ID)`: opens a map by its id (`open_flags` 0 for
/// read-write, or [`BPF_F_RDONLY`]).
pub(crate) fn map_get_fd_by_id(id: u32, open_flags: u32) -> Result<OwnedFd, Error> {
    let mut attr = GetIdAttr {
        id,
        open_flags,
        ..Default::default()
    };
    bpf("bpf(BPF_MAP_GET_FD_BY_ID)", BPF_MAP_GET_FD_BY_ID, &mut attr).map(owned)
}

/// `bpf(BPF_MAP_GET_NEXT_ID)`: the id of the first map with an id above
/// `start`, or `None` when there is none (`ENOENT`).
pub(crate) fn map_get_next_id(start: u32) -> Result<Option<u32>, Error> {
    let mut attr = GetIdAttr {
        id: start,
        ..Default::default()
    };
    match bpf("bpf(BPF_MAP_GET_NEXT_ID)", BPF_MAP_GET_NEXT_ID, &mut attr) {
        Ok(_) => Ok(Some(attr.next_id)),
        Err(Error::Syscall { source, .. }) if source.raw_os_error() == Some(libc::ENOENT) => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// `bpf(BPF_MAP_UPDATE_ELEM)` with `BPF_ANY`.
#[cfg(feature = "testing")]
pub(crate) fn map_update(fd: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> Result<(), Error> {
    let mut attr = MapElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_ptr() as u64,
        ..Default::default()
    };
    bpf("bpf(BPF_MAP_UPDATE_ELEM)", BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// `bpf(BPF_MAP_LOOKUP_ELEM)`: copies the value into `value`, which must be
/// exactly the map's value size (for a per-CPU map, the value size rounded
/// up to 8, times the number of possible CPUs: see [`super::possible_cpus`]).
pub(crate) fn map_lookup(fd: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> Result<(), Error> {
    let mut attr = MapElemAttr {
        map_fd: fd.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value: value.as_mut_ptr() as u64,
        ..Default::default()
    };
    bpf("bpf(BPF_MAP_LOOKUP_ELEM)", BPF_MAP_LOOKUP_ELEM, &mut attr).map(drop)
}

/// `bpf(BPF_PROG_LOAD)`. On failure the verifier log is returned in the error.
#[cfg(feature = "testing")]
pub(crate) fn prog_load(prog_type: u32, insns: &[u64], name: &str) -> Result<OwnedFd, Error> {
    prog_load_with_btf(prog_type, insns, name, None)
}

/// The `BPF_BTF_LOAD` member of `union bpf_attr`.
#[cfg(feature = "testing")]
#[repr(C)]
#[derive(Default)]
struct BtfLoadAttr {
    btf: u64,
    btf_log_buf: u64,
    btf_size: u32,
    btf_log_size: u32,
    btf_log_level: u32,
}

/// `bpf(BPF_BTF_LOAD)`: loads a BTF blob; on failure the kernel's log is
/// in the error ([`Error::ProgramRejected`]).
#[cfg(feature = "testing")]
pub(crate) fn btf_load(blob: &[u8]) -> Result<OwnedFd, Error> {
    let mut log = vec![0u8; 64 << 10];
    let mut attr = BtfLoadAttr {
        btf: blob.as_ptr() as u64,
        btf_size: blob.len() as u32,
        btf_log_buf: log.as_mut_ptr() as u64,
        btf_log_size: log.len() as u32,
        btf_log_level: 1,
    };
    match bpf("bpf(BPF_BTF_LOAD)", BPF_BTF_LOAD, &mut attr) {
        Ok(fd) => Ok(owned(fd)),
        Err(Error::Syscall { source, .. }) => {
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            Err(Error::ProgramRejected {
                source,
                log: String::from_utf8_lossy(&log[..end]).into_owned(),
            })
        }
        Err(e) => Err(e),
    }
}

/// `bpf(BPF_PROG_LOAD)` with BTF `func_info` (`prog_btf_fd`, and one
/// `{insn_off, type_id}` per function) when `btf` is given.
#[cfg(feature = "testing")]
pub(crate) fn prog_load_with_btf(
    prog_type: u32,
    insns: &[u64],
    name: &str,
    btf: Option<(BorrowedFd<'_>, &[[u32; 2]])>,
) -> Result<OwnedFd, Error> {
    let license = c"GPL";
    let mut attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name: obj_name(name),
        ..Default::default()
    };
    if let Some((fd, funcs)) = btf {
        attr.prog_btf_fd = fd.as_raw_fd() as u32;
        attr.func_info_rec_size = 8;
        attr.func_info = funcs.as_ptr() as u64;
        attr.func_info_cnt = funcs.len() as u32;
    }
    match bpf("bpf(BPF_PROG_LOAD)", BPF_PROG_LOAD, &mut attr) {
        Ok(fd) => Ok(owned(fd)),
        Err(Error::PermissionDenied { call, source })
            if source.raw_os_error() == Some(libc::EPERM) =>
        {
            Err(Error::PermissionDenied { call, source })
        }
        Err(first) => {
            // Load again with a log, to say why the verifier refused it.
            let mut log = vec![0u8; 1 << 20];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let source = match bpf("bpf(BPF_PROG_LOAD)", BPF_PROG_LOAD, &mut attr) {
                Ok(fd) => return Ok(owned(fd)),
                Err(Error::Syscall { source, .. } | Error::PermissionDenied { source, .. }) => {
                    source
                }
                Err(_) => return Err(first),
            };
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            let log = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
            Err(Error::ProgramRejected { source, log })
        }
    }
}

/// What `BPF_PROG_TEST_RUN` reports.
#[cfg(feature = "testing")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct TestRunResult {
    /// Mean nanoseconds per run, as measured by the kernel.
    pub duration_ns: u32,
    /// The program's return value (of the last run).
    pub retval: u32,
}

/// `bpf(BPF_PROG_TEST_RUN)` with `repeat` runs over `data_in`, and `ctx_in`
/// as the program's context (for skb programs, a prefix of `struct __sk_buff`).
#[cfg(feature = "testing")]
pub(crate) fn prog_test_run(
    prog: BorrowedFd<'_>,
    data_in: &[u8],
    ctx_in: &[u8],
    repeat: u32,
) -> Result<TestRunResult, Error> {
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: data_in.len() as u32,
        data_in: data_in.as_ptr() as u64,
        repeat,
        ctx_size_in: ctx_in.len() as u32,
        ctx_in: if ctx_in.is_empty() {
            0
        } else {
            ctx_in.as_ptr() as u64
        },
        ..Default::default()
    };
    bpf("bpf(BPF_PROG_TEST_RUN)", BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(TestRunResult {
        duration_ns: attr.duration,
        retval: attr.retval,
    })
}

/// A human name for a `BPF_MAP_TYPE_*` value, for error messages.
pub(crate) fn map_type_name(t: u32) -> &'static str {
    MAP_TYPE_NAMES.get(t as usize).copied().unwrap_or("UNKNOWN")
}

/// Linux's `BPF_MAP_TYPE_*` names, in order (`enum bpf_map_type`).
#[cfg(target_os = "linux")]
const MAP_TYPE_NAMES: &[&str] = &[
    "UNSPEC",
    "HASH",
    "ARRAY",
    "PROG_ARRAY",
    "PERF_EVENT_ARRAY",
    "PERCPU_HASH",
    "PERCPU_ARRAY",
    "STACK_TRACE",
    "CGROUP_ARRAY",
    "LRU_HASH",
    "LRU_PERCPU_HASH",
    "LPM_TRIE",
    "ARRAY_OF_MAPS",
    "HASH_OF_MAPS",
    "DEVMAP",
    "SOCKMAP",
    "CPUMAP",
    "XSKMAP",
    "SOCKHASH",
    "CGROUP_STORAGE",
    "REUSEPORT_SOCKARRAY",
    "PERCPU_CGROUP_STORAGE",
    "QUEUE",
    "STACK",
    "SK_STORAGE",
    "DEVMAP_HASH",
    "STRUCT_OPS",
    "RINGBUF",
    "INODE_STORAGE",
    "TASK_STORAGE",
    "BLOOM_FILTER",
    "USER_RINGBUF",
    "CGRP_STORAGE",
    "ARENA",
    "INSN_ARRAY",
];

/// eBPF for Windows' `BPF_MAP_TYPE_*` names, in order (`ebpf_structs.h`).
#[cfg(windows)]
const MAP_TYPE_NAMES: &[&str] = &[
    "UNSPEC",
    "HASH",
    "ARRAY",
    "PROG_ARRAY",
    "PERCPU_HASH",
    "PERCPU_ARRAY",
    "HASH_OF_MAPS",
    "ARRAY_OF_MAPS",
    "LRU_HASH",
    "LPM_TRIE",
    "QUEUE",
    "LRU_PERCPU_HASH",
    "STACK",
    "RINGBUF",
    "PERF_EVENT_ARRAY",
    "SAMPLE_HASH_MAP",
    "XSKMAP",
];

/// `BPF_MAP_TYPE_ARRAY_OF_MAPS`: an array whose values are maps. From
/// userspace a lookup returns the inner map's id (a `u32`).
pub(crate) const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;
/// `BPF_MAP_TYPE_HASH_OF_MAPS`: a hash whose values are maps (lookups as above).
pub(crate) const BPF_MAP_TYPE_HASH_OF_MAPS: u32 = 13;

/// `bpf(BPF_MAP_CREATE)` of a map-in-map (`ARRAY_OF_MAPS`, `HASH_OF_MAPS`):
/// its values are maps shaped like `inner` (the template's type and size),
/// written as descriptors (`u32`) by [`map_update`].
#[cfg(feature = "testing")]
pub(crate) fn map_create_of_maps(
    map_type: u32,
    key_size: u32,
    max_entries: u32,
    inner: BorrowedFd<'_>,
    name: &str,
) -> Result<OwnedFd, Error> {
    let mut attr = MapCreateAttr {
        map_type,
        key_size,
        value_size: size_of::<u32>() as u32,
        max_entries,
        inner_map_fd: inner.as_raw_fd() as u32,
        map_name: obj_name(name),
        ..Default::default()
    };
    bpf("bpf(BPF_MAP_CREATE)", BPF_MAP_CREATE, &mut attr).map(owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn map_create_attr_layout() {
        assert_eq!(offset_of!(MapCreateAttr, map_flags), 16);
        assert_eq!(offset_of!(MapCreateAttr, map_name), 28);
        assert_eq!(offset_of!(MapCreateAttr, map_ifindex), 44);
        assert_eq!(offset_of!(MapCreateAttr, btf_vmlinux_value_type_id), 60);
        assert_eq!(offset_of!(MapCreateAttr, map_extra), 64);
        assert_eq!(size_of::<MapCreateAttr>(), 72);
    }

    #[test]
    fn small_attr_layouts() {
        assert_eq!(offset_of!(MapElemAttr, key), 8);
        assert_eq!(offset_of!(MapElemAttr, flags), 24);
        assert_eq!(offset_of!(ObjAttr, bpf_fd), 8);
        assert_eq!(offset_of!(ObjAttr, path_fd), 16);
        assert_eq!(size_of::<GetIdAttr>(), 12);
        assert_eq!(offset_of!(InfoAttr, info), 8);
        assert_eq!(size_of::<InfoAttr>(), 16);
    }

    #[test]
    fn prog_attr_layouts() {
        assert_eq!(offset_of!(ProgLoadAttr, insns), 8);
        assert_eq!(offset_of!(ProgLoadAttr, license), 16);
        assert_eq!(offset_of!(ProgLoadAttr, log_level), 24);
        assert_eq!(offset_of!(ProgLoadAttr, log_buf), 32);
        assert_eq!(offset_of!(ProgLoadAttr, kern_version), 40);
        assert_eq!(offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(offset_of!(ProgLoadAttr, expected_attach_type), 68);
        assert_eq!(offset_of!(ProgLoadAttr, prog_btf_fd), 72);
        assert_eq!(offset_of!(ProgLoadAttr, func_info), 80);
        assert_eq!(offset_of!(ProgLoadAttr, func_info_cnt), 88);
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 96);
        assert_eq!(offset_of!(TestRunAttr, data_in), 16);
        assert_eq!(offset_of!(TestRunAttr, repeat), 32);
        assert_eq!(offset_of!(TestRunAttr, duration), 36);
        assert_eq!(offset_of!(TestRunAttr, ctx_in), 48);
        assert_eq!(offset_of!(TestRunAttr, flags), 64);
        assert_eq!(offset_of!(TestRunAttr, batch_size), 72);
    }

    #[test]
    fn map_info_layout() {
        assert_eq!(offset_of!(MapInfo, max_entries), 16);
        assert_eq!(offset_of!(MapInfo, name), 24);
        assert_eq!(offset_of!(MapInfo, netns_dev), 48);
        assert_eq!(offset_of!(MapInfo, btf_id), 64);
        assert_eq!(offset_of!(MapInfo, map_extra), 80);
        assert_eq!(size_of::<MapInfo>(), 88);
    }

    #[test]
    fn names() {
        assert_eq!(map_type_name(BPF_MAP_TYPE_RINGBUF), "RINGBUF");
        #[cfg(target_os = "linux")]
        assert_eq!(map_type_name(BPF_MAP_TYPE_USER_RINGBUF), "USER_RINGBUF");
        // eBPF for Windows numbers its types differently (ebpf_structs.h).
        #[cfg(windows)]
        assert_eq!(
            (BPF_MAP_TYPE_RINGBUF, map_type_name(14)),
            (13, "PERF_EVENT_ARRAY")
        );
        assert_eq!(map_type_name(BPF_MAP_TYPE_ARRAY), "ARRAY");
        assert_eq!(map_type_name(9999), "UNKNOWN");
        assert_eq!(&obj_name("a-b_c")[..4], b"ab_c");
    }
}
