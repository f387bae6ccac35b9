//! The two `bpf(2)` commands the tracer needs that the library does not
//! offer (it never loads or attaches programs): `BPF_PROG_LOAD` of a raw
//! tracepoint program and `BPF_RAW_TRACEPOINT_OPEN`.
//!
//! # Safety
//!
//! The only `unsafe` of this crate. Each call passes a `#[repr(C)]` prefix
//! of `union bpf_attr` (checked by the layout test below) whose pointers
//! refer to memory that outlives the call.

use std::ffi::CStr;
use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::TraceError;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
/// `BPF_PROG_TYPE_RAW_TRACEPOINT`.
const PROG_TYPE_RAW_TRACEPOINT: u32 = 17;

/// The `BPF_PROG_LOAD` member of `union bpf_attr`, up to `prog_name`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

/// The `raw_tracepoint` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct RawTracepointAttr {
    name: u64,
    prog_fd: u32,
    _pad: u32,
    cookie: u64,
}

/// `bpf(cmd, attr, sizeof(*attr))`, returning the new descriptor.
fn bpf_fd<T>(call: &'static str, cmd: libc::c_long, attr: &mut T) -> Result<OwnedFd, TraceError> {
    // SAFETY: `attr` is a live, exclusively borrowed `#[repr(C)]` prefix of
    // `union bpf_attr` of `size_of::<T>()` bytes (the kernel zero-extends the
    // rest); the pointers in it were set by our callers to buffers that live
    // until they return, after this call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as libc::c_long,
        )
    };
    if ret < 0 {
        return Err(TraceError::from_os(call, io::Error::last_os_error()));
    }
    // SAFETY: on success these commands return a new descriptor, owned by
    // nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as i32) })
}

/// `bpf(BPF_PROG_LOAD)` of a raw tracepoint program with license "GPL". On
/// a refusal the load is repeated with a log, and the end of the verifier's
/// log is returned in the error.
pub(crate) fn load_raw_tracepoint(insns: &[u64], name: &str) -> Result<OwnedFd, TraceError> {
    const CALL: &str = "bpf(BPF_PROG_LOAD)";
    let license: &CStr = c"GPL";
    let mut prog_name = [0u8; 16];
    for (d, s) in prog_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    let mut attr = ProgLoadAttr {
        prog_type: PROG_TYPE_RAW_TRACEPOINT,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_name,
        ..Default::default()
    };
    match bpf_fd(CALL, BPF_PROG_LOAD, &mut attr) {
        Err(TraceError::Syscall { source, .. })
            if source.raw_os_error() == Some(libc::EINVAL)
                || source.raw_os_error() == Some(libc::EACCES) =>
        {
            let mut log = vec![0u8; 1 << 16];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let err = match bpf_fd(CALL, BPF_PROG_LOAD, &mut attr) {
                Ok(fd) => return Ok(fd),
                Err(e) => e,
            };
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: Vec<&str> = text.lines().rev().take(8).collect();
            Err(TraceError::Rejected {
                source: Box::new(err),
                log: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
            })
        }
        other => other,
    }
}

/// `bpf(BPF_RAW_TRACEPOINT_OPEN)`: attaches `prog` to the raw tracepoint
/// `name`. Closing the returned descriptor detaches it.
pub(crate) fn raw_tracepoint_open(
    prog: BorrowedFd<'_>,
    name: &CStr,
) -> Result<OwnedFd, TraceError> {
    let mut attr = RawTracepointAttr {
        name: name.as_ptr() as u64,
        prog_fd: prog.as_raw_fd() as u32,
        ..Default::default()
    };
    bpf_fd(
        "bpf(BPF_RAW_TRACEPOINT_OPEN)",
        BPF_RAW_TRACEPOINT_OPEN,
        &mut attr,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    #[test]
    fn attr_layouts() {
        assert_eq!(offset_of!(ProgLoadAttr, license), 16);
        assert_eq!(offset_of!(ProgLoadAttr, log_buf), 32);
        assert_eq!(offset_of!(ProgLoadAttr, prog_name), 48);
        assert_eq!(size_of::<ProgLoadAttr>(), 64);
        assert_eq!(offset_of!(RawTracepointAttr, prog_fd), 8);
        assert_eq!(offset_of!(RawTracepointAttr, cookie), 16);
    }
}
