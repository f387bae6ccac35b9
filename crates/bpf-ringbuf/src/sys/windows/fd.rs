//! eBPF for Windows descriptors (`fd_t`), Windows only.
//!
//! efW names its maps with its own integer descriptors (`fd_t`, an
//! `int32_t`), closed with `ebpf_close_fd` and duplicated with
//! `ebpf_duplicate_fd`. These types mirror `std::os::fd`'s for them, so the
//! crate's API reads the same on both systems: [`RingBuf`](crate::RingBuf)
//! implements [`AsFd`], and [`Reader::new`](crate::Reader::new) takes any
//! `impl AsFd`. A descriptor from your loader (efW's libbpf,
//! `bpf_map__fd`) is adopted with [`FromRawFd`] or borrowed with
//! [`BorrowedFd::borrow_raw`].
//!
//! ```no_run
//! # fn main() -> bpf_ringbuf::Result<()> {
//! use bpf_ringbuf::fd::BorrowedFd;
//! use bpf_ringbuf::Reader;
//! let raw: i32 = 3; // bpf_map__fd(map) from your loader
//! // SAFETY: the descriptor stays open while it is borrowed (the reader
//! // keeps a duplicate of its own).
//! let map = unsafe { BorrowedFd::borrow_raw(raw) };
//! let mut reader = Reader::new(map)?;
//! # Ok(()) }
//! ```

use std::marker::PhantomData;

/// An efW descriptor number (`fd_t`).
pub type RawFd = i32;

/// An owned efW descriptor, closed with `ebpf_close_fd` on drop.
#[derive(Debug)]
pub struct OwnedFd {
    fd: RawFd,
}

/// A borrowed efW descriptor, valid for `'fd`.
#[derive(Debug, Clone, Copy)]
pub struct BorrowedFd<'fd> {
    fd: RawFd,
    _owner: PhantomData<&'fd OwnedFd>,
}

impl BorrowedFd<'_> {
    /// Borrows a raw descriptor.
    ///
    /// # Safety
    ///
    /// `fd` stays open for the lifetime of the result.
    pub const unsafe fn borrow_raw(fd: RawFd) -> Self {
        BorrowedFd {
            fd,
            _owner: PhantomData,
        }
    }
}

impl OwnedFd {
    /// `ebpf_duplicate_fd`: another descriptor of the same object.
    pub fn try_clone(&self) -> crate::Result<OwnedFd> {
        super::dup(self.as_fd())
    }
}

impl Drop for OwnedFd {
    fn drop(&mut self) {
        super::close_fd(self.fd);
    }
}

/// Borrows an efW descriptor (as `std::os::fd::AsFd` does on Linux).
pub trait AsFd {
    /// The descriptor, borrowed.
    fn as_fd(&self) -> BorrowedFd<'_>;
}

/// The raw number of an efW descriptor.
pub trait AsRawFd {
    /// The descriptor number.
    fn as_raw_fd(&self) -> RawFd;
}

/// Adopts a raw efW descriptor.
pub trait FromRawFd {
    /// Takes ownership of `fd`.
    ///
    /// # Safety
    ///
    /// `fd` is an open efW descriptor that nothing else closes.
    unsafe fn from_raw_fd(fd: RawFd) -> Self;
}

/// Gives up ownership of an efW descriptor.
pub trait IntoRawFd {
    /// The descriptor number, no longer closed by `self`.
    fn into_raw_fd(self) -> RawFd;
}

impl AsFd for OwnedFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: `self` keeps the descriptor open while it is borrowed.
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }
}

impl AsFd for BorrowedFd<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        *self
    }
}

impl<T: AsFd + ?Sized> AsFd for &T {
    fn as_fd(&self) -> BorrowedFd<'_> {
        T::as_fd(self)
    }
}

impl<T: AsFd + ?Sized> AsFd for &mut T {
    fn as_fd(&self) -> BorrowedFd<'_> {
        T::as_fd(self)
    }
}

impl AsRawFd for OwnedFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl AsRawFd for BorrowedFd<'_> {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl FromRawFd for OwnedFd {
    unsafe fn from_raw_fd(fd: RawFd) -> OwnedFd {
        OwnedFd { fd }
    }
}

impl IntoRawFd for OwnedFd {
    fn into_raw_fd(self) -> RawFd {
        let fd = self.fd;
        std::mem::forget(self);
        fd
    }
}
