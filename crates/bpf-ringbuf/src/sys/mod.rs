//! Kernel ABI and raw system calls: `bpf()`, `mmap`, `epoll`, `eventfd`, and
//! (feature `tokio`) registering a descriptor with tokio's reactor. On
//! Windows, [`windows`]: eBPF for Windows' `ebpfapi.dll` (its `bpf()` with
//! the same `bpf_attr` structures, its descriptors and ring mapping) and
//! Win32 events; `fd` names each system's descriptor types for the layers
//! above.
//!
//! # Safety
//!
//! This module and [`crate::ring`] are the only places that use `unsafe`.
//! Every call here passes pointers to memory owned by the caller for the
//! duration of the call, and every structure handed to the kernel is a
//! `#[repr(C)]` mirror of the UAPI layout, checked by the layout tests below.

// The ring protocol stores positions as `usize` where the kernel's are
// `unsigned long`, and relies on std's guarantee that relaxed atomic loads of
// up to 8 bytes work on read-only memory, which holds for 64-bit targets. A
// 32-bit process on a 64-bit kernel would also see 8-byte positions and a
// mapping of `page + 2 * size` that can wrap. Refuse to build rather than be
// silently wrong.
#[cfg(not(target_pointer_width = "64"))]
compile_error!(
    "bpf-ringbuf supports 64-bit targets only (positions are 64-bit words shared with the kernel)"
);

#[cfg(feature = "tokio")]
pub(crate) mod async_fd;
pub(crate) mod bpf;
#[cfg(target_os = "linux")]
pub(crate) mod epoll;
#[cfg(feature = "testing")]
pub(crate) mod memfd;
#[cfg(target_os = "linux")]
pub(crate) mod mmap;
#[cfg(windows)]
pub(crate) mod windows;

// The descriptor types of this system: std's on Linux, efW's on Windows.
#[cfg(target_os = "linux")]
pub(crate) use std::os::fd;
#[cfg(windows)]
pub(crate) use windows::fd;
#[cfg(windows)]
pub(crate) use windows::{dup, fd_is_open, fd_kind, page_size};

#[cfg(all(windows, any(feature = "testing", feature = "tokio")))]
compile_error!(
    "bpf-ringbuf: the features `testing` and `tokio` are Linux-only (the kernel test producer, the fake ring and the async reader); build for Windows without them"
);
#[cfg(not(any(target_os = "linux", windows)))]
compile_error!("bpf-ringbuf supports Linux and Windows (eBPF for Windows) only");

#[cfg(target_os = "linux")]
use std::io;
#[cfg(target_os = "linux")]
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

#[cfg(target_os = "linux")]
use crate::error::Error;

#[cfg(target_os = "linux")]
/// `sysconf(_SC_PAGESIZE)`: the runtime page size. Never assume 4096.
pub(crate) fn page_size() -> usize {
    use std::sync::OnceLock;
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no memory-safety preconditions.
        let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if v <= 0 {
            4096
        } else {
            v as usize
        }
    })
}

#[cfg(target_os = "linux")]
/// Turns a `-1`/errno return into an [`Error`] that names the call.
pub(crate) fn cvt(call: &'static str, ret: libc::c_long) -> Result<libc::c_long, Error> {
    if ret < 0 {
        Err(Error::from_syscall(call, io::Error::last_os_error()))
    } else {
        Ok(ret)
    }
}

#[cfg(target_os = "linux")]
/// `fcntl(fd, F_DUPFD_CLOEXEC, 3)`: duplicates a descriptor, keeping close-on-exec.
pub(crate) fn dup(fd: BorrowedFd<'_>) -> Result<OwnedFd, Error> {
    // SAFETY: fcntl on a borrowed fd; the result, if valid, is a new descriptor we own.
    let ret = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    let ret = cvt("fcntl(F_DUPFD_CLOEXEC)", ret as libc::c_long)? as RawFd;
    // SAFETY: `ret` is a fresh descriptor returned by the kernel, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(ret) })
}

#[cfg(target_os = "linux")]
/// `readlink("/proc/self/fd/N")`: what kind of file a descriptor refers to.
///
/// BPF maps show as `anon_inode:bpf-map`. Returns `None` when procfs is not
/// available, in which case callers fall back to the kernel's own checks.
pub(crate) fn fd_kind(fd: BorrowedFd<'_>) -> Option<String> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

#[cfg(target_os = "linux")]
/// `fcntl(fd, F_GETFD)`: whether a descriptor is open at all.
pub(crate) fn fd_is_open(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: F_GETFD only inspects the descriptor table.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) >= 0 }
}

#[cfg(target_os = "linux")]
/// Where the kernel lists the possible CPUs (`cpu_possible_mask`).
const POSSIBLE_CPUS: &str = "/sys/devices/system/cpu/possible";

#[cfg(target_os = "linux")]
/// The possible CPUs, in increasing order, from
/// `/sys/devices/system/cpu/possible` (e.g. `0-1`, or `0,2-5`): the CPUs a
/// per-CPU map holds a value for, in the order `BPF_MAP_LOOKUP_ELEM` copies
/// them out. Not the online CPUs, nor those this process may run on.
pub(crate) fn possible_cpus() -> Result<Vec<u32>, Error> {
    let call = "read(/sys/devices/system/cpu/possible)";
    let text = std::fs::read_to_string(POSSIBLE_CPUS).map_err(|e| Error::from_syscall(call, e))?;
    parse_cpu_list(&text).ok_or_else(|| Error::Syscall {
        call,
        source: io::Error::new(
            io::ErrorKind::InvalidData,
            format!("not a CPU list: {:?}", text.trim()),
        ),
    })
}

#[cfg(target_os = "linux")]
/// Parses the kernel's CPU list format (`cpulist_parse`): comma-separated
/// CPUs or inclusive ranges, increasing. `None` for anything else or an
/// empty list.
fn parse_cpu_list(text: &str) -> Option<Vec<u32>> {
    let mut cpus: Vec<u32> = Vec::new();
    for part in text.trim().split(',') {
        let (lo, hi): (u32, u32) = match part.split_once('-') {
            Some((lo, hi)) => (lo.parse().ok()?, hi.parse().ok()?),
            None => {
                let cpu = part.parse().ok()?;
                (cpu, cpu)
            }
        };
        if lo > hi || cpus.last().is_some_and(|&last| lo <= last) {
            return None;
        }
        cpus.extend(lo..=hi);
    }
    (!cpus.is_empty()).then_some(cpus)
}

/// `BPF_FS_MAGIC`, the `f_type` of a mounted bpffs.
#[cfg(feature = "testing")]
const BPF_FS_MAGIC: libc::c_long = 0xcafe4a11;

/// `statfs(path)`: whether `path` is the root of a mounted bpffs.
#[cfg(feature = "testing")]
pub(crate) fn is_bpffs(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs is plain data; zeroed is a valid initial value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a writable statfs.
    let ret = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    ret == 0 && st.f_type as libc::c_long == BPF_FS_MAGIC
}

/// `mount("bpf", path, "bpf", 0, NULL)`: mounts a bpffs.
#[cfg(feature = "testing")]
pub(crate) fn mount_bpffs(path: &std::path::Path) -> Result<(), Error> {
    let c = bpf::c_path(path)?;
    // SAFETY: all arguments are NUL-terminated strings or NULL.
    let ret = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            c.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    cvt("mount(bpf)", ret as libc::c_long).map(drop)
}

/// `sched_setaffinity(0, {cpu})`: pins the calling thread to one CPU.
#[cfg(feature = "testing")]
pub(crate) fn pin_current_thread(cpu: usize) -> Result<(), Error> {
    // SAFETY: cpu_set_t is plain data; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(Error::Syscall {
            call: "sched_setaffinity",
            source: io::Error::from_raw_os_error(libc::EINVAL),
        });
    }
    // SAFETY: `cpu < CPU_SETSIZE` (checked above), so the bit is inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed.
    let ret = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    cvt("sched_setaffinity", ret as libc::c_long).map(drop)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0\n"), Some(vec![0]));
        assert_eq!(parse_cpu_list("0-1\n"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0,2-4,7"), Some(vec![0, 2, 3, 4, 7]));
        for bad in ["", "\n", "a", "1-0", "0-", "-1", "0,,1", "2,1", "0-2,2"] {
            assert_eq!(parse_cpu_list(bad), None, "{bad:?}");
        }
        let cpus = possible_cpus().unwrap();
        assert!(!cpus.is_empty() && cpus.windows(2).all(|w| w[0] < w[1]));
    }
}
