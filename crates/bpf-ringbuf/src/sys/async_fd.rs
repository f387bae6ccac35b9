//! Registering a descriptor with tokio's reactor (feature `tokio`).
//!
//! tokio's `AsyncFd::register_with_interest` is `unsafe`: the descriptor must
//! stay open, and be the same one, for as long as it is registered. An
//! [`OwnedFd`] held by the `AsyncFd` itself meets that by construction, so
//! this is the one registration the crate does.

use std::io;
use std::os::fd::OwnedFd;

use ::tokio::io::unix::AsyncFd;
use ::tokio::io::Interest;

/// `epoll_ctl(EPOLL_CTL_ADD)` on the current runtime's reactor
/// (edge-triggered, as tokio always registers): `fd` moves into the
/// returned `AsyncFd`, which deregisters it before closing it on drop.
/// Panics outside a tokio runtime with IO enabled.
pub(crate) fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: an `OwnedFd` is an open descriptor that only its drop closes,
    // and its `as_raw_fd` always returns that descriptor. The `AsyncFd` owns
    // it for the whole registration and gives out only shared or mutable
    // references (it cannot be replaced through them: `OwnedFd` has no
    // setter), so it stays the same open descriptor until the `AsyncFd`
    // drops (deregistering first) or `into_inner` ends the registration.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(io::Error::from)
}
