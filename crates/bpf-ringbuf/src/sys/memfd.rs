//! `memfd_create` and `ftruncate`: anonymous shared memory for the fake ring.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::cvt;
use crate::error::Error;

/// `memfd_create(name, MFD_CLOEXEC)` then `ftruncate(fd, len)`: a fresh,
/// zero-filled anonymous file of `len` bytes that can be mapped shared.
pub(crate) fn memfd(name: &std::ffi::CStr, len: usize) -> Result<OwnedFd, Error> {
    // SAFETY: `name` is a NUL-terminated string that lives across the call.
    let ret = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    let fd = cvt("memfd_create", ret as libc::c_long)? as RawFd;
    // SAFETY: a fresh descriptor returned by the kernel, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = libc::off_t::try_from(len).map_err(|_| Error::Syscall {
        call: "ftruncate(memfd)",
        source: std::io::Error::from_raw_os_error(libc::EFBIG),
    })?;
    // SAFETY: ftruncate on a descriptor we own; no pointers.
    let ret = unsafe { libc::ftruncate(fd.as_raw_fd(), len) };
    cvt("ftruncate(memfd)", ret as libc::c_long)?;
    Ok(fd)
}
