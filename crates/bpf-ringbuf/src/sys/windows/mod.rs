//! eBPF for Windows (efW, v1.0 or later): `ebpfapi.dll` loaded at run time,
//! its `bpf()` (the Linux `bpf_attr` ABI, errors returned as `-errno`), its
//! file descriptors, the ring buffer mapping, and the Win32 events a reader
//! waits on.
//!
//! # Safety
//!
//! Every function pointer comes from `GetProcAddress` on `ebpfapi.dll`,
//! which is never unloaded, and is called with the C signature of efW's
//! public header `ebpf_api.h` (or `bpf()` in `linux/bpf.h`): `fd_t` is
//! `int32_t`, `ebpf_handle_t` is `intptr_t`, `ebpf_result_t` an `int32_t`
//! enum (0 is success), and on x86_64 and arm64 Windows the C and system
//! calling conventions are the same. Pointers passed to them point to memory
//! owned by the caller for the duration of the call. The ring's three views
//! returned by `ebpf_ring_buffer_map_map_buffer` stay mapped until
//! [`RingMapping`] hands the same three pointers back on drop.
//!
//! Nothing here has run on Windows on this project's machines: it is
//! type-checked and linked for `x86_64-pc-windows-gnu` in CI.

pub(crate) mod event;
pub mod fd;

use std::ffi::{c_int, c_uint, c_void};
use std::io;
use std::ptr::NonNull;
use std::sync::OnceLock;

use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_ALREADY_EXISTS, ERROR_FILE_NOT_FOUND, ERROR_INVALID_HANDLE,
    ERROR_INVALID_PARAMETER, ERROR_NOT_ENOUGH_MEMORY, ERROR_NOT_SUPPORTED,
};
use windows_sys::Win32::System::LibraryLoader::{GetProcAddress, LoadLibraryW};

use crate::error::Error;
use fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// efW's `ebpf_result_t`: 0 is `EBPF_SUCCESS`.
type EbpfResult = i32;

/// The functions of `ebpfapi.dll` this crate calls, resolved once.
struct Api {
    /// `int bpf(int cmd, union bpf_attr* attr, unsigned int size)`.
    bpf: unsafe extern "C" fn(c_int, *mut c_void, c_uint) -> c_int,
    /// `ebpf_ring_buffer_map_map_buffer(fd_t, void** consumer, const void** producer, const uint8_t** data, size_t* data_size)`.
    map_buffer: unsafe extern "C" fn(
        RawFd,
        *mut *mut c_void,
        *mut *const c_void,
        *mut *const u8,
        *mut usize,
    ) -> EbpfResult,
    /// `ebpf_ring_buffer_map_unmap_buffer(fd_t, void* consumer, const void* producer, const void* data)`.
    unmap_buffer:
        unsafe extern "C" fn(RawFd, *mut c_void, *const c_void, *const c_void) -> EbpfResult,
    /// `ebpf_map_set_wait_handle(fd_t, uint64_t index, ebpf_handle_t handle)`.
    set_wait_handle: unsafe extern "C" fn(RawFd, u64, isize) -> EbpfResult,
    /// `ebpf_duplicate_fd(fd_t, fd_t* dup)`.
    duplicate_fd: unsafe extern "C" fn(RawFd, *mut RawFd) -> EbpfResult,
    /// `ebpf_close_fd(fd_t)`.
    close_fd: unsafe extern "C" fn(RawFd) -> EbpfResult,
}

/// Why `ebpfapi.dll` could not be used: what was missing, and the
/// `GetLastError` code of the failed call.
#[derive(Debug, Clone, Copy)]
struct Missing {
    what: &'static str,
    code: u32,
}

/// `LoadLibraryW("ebpfapi.dll")` and `GetProcAddress` of each function, on
/// first use; the result (or what was missing) is kept for the process. A
/// machine without efW thus fails here, with [`Error::PlatformNotInstalled`],
/// and not when the program starts.
fn api() -> Result<&'static Api, Error> {
    static API: OnceLock<Result<Api, Missing>> = OnceLock::new();
    match API.get_or_init(load) {
        Ok(api) => Ok(api),
        Err(m) => Err(Error::PlatformNotInstalled {
            missing: m.what,
            source: io::Error::from_raw_os_error(m.code as i32),
        }),
    }
}

fn load() -> Result<Api, Missing> {
    let name: Vec<u16> = "ebpfapi.dll\0".encode_utf16().collect();
    // SAFETY: `name` is a NUL-terminated UTF-16 string that lives across the
    // call. The module is never freed, so every address resolved from it
    // stays valid for the life of the process.
    let module = unsafe { LoadLibraryW(name.as_ptr()) };
    if module.is_null() {
        return Err(Missing {
            what: "ebpfapi.dll",
            code: last_error(),
        });
    }
    /// Resolves `name` (NUL-terminated) as a function of type `F`.
    ///
    /// # Safety
    ///
    /// `F` is an `unsafe extern "C" fn` type with the export's C signature.
    unsafe fn sym<F: Copy>(
        module: windows_sys::Win32::Foundation::HMODULE,
        name: &'static str,
    ) -> Result<F, Missing> {
        debug_assert!(name.ends_with('\0'));
        // SAFETY: `module` is a loaded module and `name` a NUL-terminated
        // ASCII string.
        let f = unsafe { GetProcAddress(module, name.as_ptr()) };
        match f {
            // SAFETY: a function pointer has the size of `F` (a function
            // pointer type, the caller's promise), and the export has the
            // signature `F` says (also the caller's promise).
            Some(f) => Ok(unsafe { std::mem::transmute_copy::<_, F>(&f) }),
            None => Err(Missing {
                what: name.trim_end_matches('\0'),
                code: last_error(),
            }),
        }
    }
    // SAFETY: each type below is the export's signature in efW's headers
    // (see the `Api` fields).
    unsafe {
        Ok(Api {
            bpf: sym(module, "bpf\0")?,
            map_buffer: sym(module, "ebpf_ring_buffer_map_map_buffer\0")?,
            unmap_buffer: sym(module, "ebpf_ring_buffer_map_unmap_buffer\0")?,
            set_wait_handle: sym(module, "ebpf_map_set_wait_handle\0")?,
            duplicate_fd: sym(module, "ebpf_duplicate_fd\0")?,
            close_fd: sym(module, "ebpf_close_fd\0")?,
        })
    }
}

/// `GetLastError()`.
fn last_error() -> u32 {
    // SAFETY: no arguments; reads this thread's last-error value.
    unsafe { windows_sys::Win32::Foundation::GetLastError() }
}

/// `GetSystemInfo().dwPageSize`: the page size (4096 on x86_64).
pub(crate) fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        use windows_sys::Win32::System::SystemInformation::{GetSystemInfo, SYSTEM_INFO};
        // SAFETY: SYSTEM_INFO is plain data; zeroed is a valid value.
        let mut info: SYSTEM_INFO = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is a writable SYSTEM_INFO.
        unsafe { GetSystemInfo(&mut info) };
        match info.dwPageSize {
            0 => 4096,
            p => p as usize,
        }
    })
}

/// The Win32 error code closest to an errno value returned by efW's `bpf()`
/// (MSVC's errno numbers), so that `io::Error` prints and classifies it as
/// Windows would; `None` for the rest.
fn errno_to_win32(errno: i32) -> Option<u32> {
    Some(match errno {
        1 | 13 => ERROR_ACCESS_DENIED,    // EPERM, EACCES
        2 => ERROR_FILE_NOT_FOUND,        // ENOENT
        9 => ERROR_INVALID_HANDLE,        // EBADF
        12 => ERROR_NOT_ENOUGH_MEMORY,    // ENOMEM
        17 => ERROR_ALREADY_EXISTS,       // EEXIST
        22 => ERROR_INVALID_PARAMETER,    // EINVAL
        129 | 130 => ERROR_NOT_SUPPORTED, // ENOTSUP, EOPNOTSUPP (MSVC)
        _ => return None,
    })
}

/// The error for `errno` from `call`. A missing object keeps the code
/// `ERROR_FILE_NOT_FOUND` (2, as `ENOENT`), so a missing pin is
/// [`Error::PinNotFound`] as on Linux.
fn errno_error(call: &'static str, errno: i32) -> Error {
    let source = match errno_to_win32(errno) {
        Some(code) => io::Error::from_raw_os_error(code as i32),
        None => io::Error::other(format!("errno {errno}")),
    };
    if source.raw_os_error() == Some(ERROR_ACCESS_DENIED as i32) {
        return Error::PermissionDenied { call, source };
    }
    Error::Syscall { call, source }
}

/// efW's names for `ebpf_result_t` values (`ebpf_result.h`), in order.
const RESULT_NAMES: &[&str] = &[
    "EBPF_SUCCESS",
    "EBPF_VERIFICATION_FAILED",
    "EBPF_JIT_COMPILATION_FAILED",
    "EBPF_PROGRAM_LOAD_FAILED",
    "EBPF_INVALID_FD",
    "EBPF_INVALID_OBJECT",
    "EBPF_INVALID_ARGUMENT",
    "EBPF_OBJECT_NOT_FOUND",
    "EBPF_OBJECT_ALREADY_EXISTS",
    "EBPF_FILE_NOT_FOUND",
    "EBPF_ALREADY_PINNED",
    "EBPF_NOT_PINNED",
    "EBPF_NO_MEMORY",
    "EBPF_PROGRAM_TOO_LARGE",
    "EBPF_RPC_EXCEPTION",
    "EBPF_ALREADY_INITIALIZED",
    "EBPF_ELF_PARSING_FAILED",
    "EBPF_FAILED",
    "EBPF_OPERATION_NOT_SUPPORTED",
    "EBPF_KEY_NOT_FOUND",
    "EBPF_ACCESS_DENIED",
    "EBPF_BLOCKED_BY_POLICY",
    "EBPF_ARITHMETIC_OVERFLOW",
    "EBPF_EXTENSION_FAILED_TO_LOAD",
    "EBPF_INSUFFICIENT_BUFFER",
    "EBPF_NO_MORE_KEYS",
    "EBPF_KEY_ALREADY_EXISTS",
    "EBPF_NO_MORE_TAIL_CALLS",
    "EBPF_PENDING",
    "EBPF_OUT_OF_SPACE",
    "EBPF_CANCELED",
    "EBPF_INVALID_POINTER",
    "EBPF_TIMEOUT",
    "EBPF_STALE_ID",
    "EBPF_INVALID_STATE",
];

/// `EBPF_ACCESS_DENIED`.
const EBPF_ACCESS_DENIED: EbpfResult = 20;

/// `Ok` for `EBPF_SUCCESS`, else the error naming `call` and the result.
fn check(call: &'static str, r: EbpfResult) -> Result<(), Error> {
    if r == 0 {
        return Ok(());
    }
    let name = usize::try_from(r)
        .ok()
        .and_then(|i| RESULT_NAMES.get(i))
        .copied()
        .unwrap_or("unknown");
    let source = io::Error::other(format!("ebpf_result_t {r} ({name})"));
    if r == EBPF_ACCESS_DENIED {
        return Err(Error::PermissionDenied { call, source });
    }
    Err(Error::Syscall { call, source })
}

/// `bpf(cmd, attr, size)` from `ebpfapi.dll`: the Linux `bpf_attr` ABI;
/// a negative return is `-errno`.
///
/// # Safety
///
/// `attr` points to `size` writable bytes holding the `bpf_attr` member of
/// `cmd`, and any pointer inside it is valid for the call.
pub(crate) unsafe fn bpf(
    call: &'static str,
    cmd: u32,
    attr: *mut c_void,
    size: usize,
) -> Result<std::ffi::c_long, Error> {
    let api = api()?;
    // SAFETY: the caller's promise; `bpf` has efW's signature (module docs).
    let ret = unsafe { (api.bpf)(cmd as c_int, attr, size as c_uint) };
    if ret < 0 {
        return Err(errno_error(call, ret.saturating_neg()));
    }
    Ok(ret as std::ffi::c_long)
}

/// `ebpf_duplicate_fd(fd, &dup)`: a new efW descriptor of the same object.
pub(crate) fn dup(fd: BorrowedFd<'_>) -> Result<OwnedFd, Error> {
    let api = api()?;
    let mut out: RawFd = -1;
    // SAFETY: `out` is a writable fd_t; `fd` is a borrowed descriptor.
    check("ebpf_duplicate_fd", unsafe {
        (api.duplicate_fd)(fd.as_raw_fd(), &mut out)
    })?;
    // SAFETY: a fresh descriptor efW just returned, owned by nobody else.
    Ok(unsafe { <OwnedFd as fd::FromRawFd>::from_raw_fd(out) })
}

/// `ebpf_close_fd(fd)`. Errors are ignored (as `close` on drop is).
fn close_fd(fd: RawFd) {
    if let Ok(api) = api() {
        // SAFETY: the caller owns `fd` and gives it up here.
        let _ = unsafe { (api.close_fd)(fd) };
    }
}

/// An efW descriptor is open as far as this crate can tell without calling
/// into efW: `bpf()` reports a closed one (`EBADF`).
pub(crate) fn fd_is_open(fd: BorrowedFd<'_>) -> bool {
    fd.as_raw_fd() >= 0
}

/// What a descriptor refers to: efW has no `/proc/self/fd`, so unknown;
/// `bpf(BPF_OBJ_GET_INFO_BY_FD)` then decides.
pub(crate) fn fd_kind(_fd: BorrowedFd<'_>) -> Option<String> {
    None
}

/// `ebpf_map_set_wait_handle(fd, 0, event)`: efW signals `event` when a
/// record is committed to the ring (there is one such handle per map:
/// registering replaces the previous one).
pub(crate) fn set_wait_handle(fd: BorrowedFd<'_>, event: &event::Event) -> Result<(), Error> {
    let api = api()?;
    // SAFETY: `fd` is a borrowed, open descriptor and `event` an open event
    // handle, both valid for the call. efW takes its own reference to the
    // event object (`ObReferenceObjectByHandle` in ebpf_ring_buffer.c, kept
    // until it is replaced or the map goes), so closing our handle later
    // leaves nothing dangling.
    check("ebpf_map_set_wait_handle", unsafe {
        (api.set_wait_handle)(fd.as_raw_fd(), 0, event.raw() as isize)
    })
}

/// The consumer's view of a `BPF_MAP_TYPE_RINGBUF` map, from
/// `ebpf_ring_buffer_map_map_buffer`: the consumer page (read-write), the
/// producer page (read-only) and the data mapped twice back to back
/// (read-only; from efW v1.5 not adjacent to the producer page, so only the
/// returned `data` pointer is used). Unmapped on drop with the same three
/// pointers.
#[derive(Debug)]
pub(crate) struct RingMapping {
    /// A descriptor of the map, kept for the unmap call.
    fd: OwnedFd,
    consumer: NonNull<c_void>,
    producer: NonNull<c_void>,
    data: NonNull<u8>,
    size: usize,
}

// SAFETY: the views belong to the process, not to a thread; the pointers
// are only handed back to efW on drop.
unsafe impl Send for RingMapping {}

impl RingMapping {
    /// Maps the ring of `fd`, which must have `size` data bytes (from the
    /// map's `max_entries`); a different size, or views that are not
    /// 8-aligned, is an error (the views are unmapped again).
    pub(crate) fn map(fd: BorrowedFd<'_>, size: usize) -> Result<RingMapping, Error> {
        const CALL: &str = "ebpf_ring_buffer_map_map_buffer";
        let api = api()?;
        let fd = dup(fd)?;
        let mut consumer: *mut c_void = std::ptr::null_mut();
        let mut producer: *const c_void = std::ptr::null();
        let mut data: *const u8 = std::ptr::null();
        let mut data_size: usize = 0;
        // SAFETY: four writable out-pointers; `fd` is open.
        check(CALL, unsafe {
            (api.map_buffer)(
                fd.as_raw_fd(),
                &mut consumer,
                &mut producer,
                &mut data,
                &mut data_size,
            )
        })?;
        let (Some(c), Some(p), Some(d)) = (
            NonNull::new(consumer),
            NonNull::new(producer.cast_mut()),
            NonNull::new(data.cast_mut()),
        ) else {
            return Err(Error::Syscall {
                call: CALL,
                source: io::Error::other("efW returned a NULL view"),
            });
        };
        let m = RingMapping {
            fd,
            consumer: c,
            producer: p,
            data: d,
            size: data_size,
        };
        let aligned = [
            c.as_ptr() as usize,
            p.as_ptr() as usize,
            d.as_ptr() as usize,
        ]
        .iter()
        .all(|a| a % 8 == 0);
        if data_size != size || !aligned {
            // `m` drops here: unmapped.
            return Err(Error::Syscall {
                call: CALL,
                source: io::Error::other(format!(
                    "efW mapped {data_size} data bytes (8-aligned views: {aligned}), the map has {size}"
                )),
            });
        }
        Ok(m)
    }

    /// `consumer_pos`, at the start of the consumer page.
    pub(crate) fn consumer_pos(&self) -> NonNull<usize> {
        self.consumer.cast()
    }

    /// `producer_pos`, at the start of the producer page.
    pub(crate) fn producer_pos(&self) -> NonNull<usize> {
        self.producer.cast()
    }

    /// The `2 * size` data bytes (the data mapped twice).
    pub(crate) fn data(&self) -> NonNull<u8> {
        self.data
    }

    /// The data size in bytes.
    pub(crate) fn size(&self) -> usize {
        self.size
    }
}

impl Drop for RingMapping {
    fn drop(&mut self) {
        if let Ok(api) = api() {
            // SAFETY: the three pointers efW returned for this descriptor's
            // map; no reference into the views outlives `self` (the cursor
            // that reads them owns this mapping and drops it last).
            let _ = unsafe {
                (api.unmap_buffer)(
                    self.fd.as_raw_fd(),
                    self.consumer.as_ptr(),
                    self.producer.as_ptr(),
                    self.data.as_ptr().cast(),
                )
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// efW's `bpf()` errno values become the nearest Win32 errors, so that
    /// `io::Error` prints them as Windows would; the shared code's checks
    /// still work (a missing pin keeps the code `ENOENT` has).
    #[test]
    fn errno_values() {
        let e = errno_error("bpf(BPF_OBJ_GET)", 2);
        let source = e.os_error().unwrap();
        assert_eq!(source.raw_os_error(), Some(libc::ENOENT));
        assert_eq!(source.kind(), io::ErrorKind::NotFound);
        for eperm in [1, 13] {
            assert!(matches!(
                errno_error("bpf(BPF_MAP_CREATE)", eperm),
                Error::PermissionDenied {
                    call: "bpf(BPF_MAP_CREATE)",
                    ..
                }
            ));
        }
        let e = errno_error("bpf(BPF_MAP_CREATE)", 22);
        assert_eq!(e.os_error().unwrap().kind(), io::ErrorKind::InvalidInput);
        let e = errno_error("bpf(BPF_MAP_CREATE)", 9999);
        assert_eq!(e.os_error().unwrap().to_string(), "errno 9999");
    }

    #[test]
    fn ebpf_results() {
        assert!(check("ebpf_duplicate_fd", 0).is_ok());
        let e = check("ebpf_duplicate_fd", 4).unwrap_err();
        assert_eq!(
            e.os_error().unwrap().to_string(),
            "ebpf_result_t 4 (EBPF_INVALID_FD)"
        );
        assert!(matches!(
            check("ebpf_map_set_wait_handle", EBPF_ACCESS_DENIED),
            Err(Error::PermissionDenied { .. })
        ));
        assert!(check("x", 1000)
            .unwrap_err()
            .os_error()
            .unwrap()
            .to_string()
            .contains("unknown"));
        assert_eq!(
            RESULT_NAMES[EBPF_ACCESS_DENIED as usize],
            "EBPF_ACCESS_DENIED"
        );
    }
}
