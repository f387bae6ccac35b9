//! Win32 events: the object efW signals when a record is committed, and the
//! one `flush()`/`close()` set; `WaitForMultipleObjects` over both.

use std::time::Duration;

use windows_sys::Win32::Foundation::{
    CloseHandle, HANDLE, WAIT_FAILED, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::System::Threading::{
    CreateEventW, ResetEvent, SetEvent, WaitForMultipleObjects, INFINITE,
};

use crate::error::Error;

/// A manual-reset Win32 event, created unsignalled: it stays signalled from
/// [`notify`](Self::notify) (or efW's signal) until [`drain`](Self::drain).
#[derive(Debug)]
pub(crate) struct Event {
    handle: HANDLE,
}

// SAFETY: an event handle names a kernel object that any thread may signal,
// reset or wait on; the handle value itself is never changed after creation.
unsafe impl Send for Event {}
// SAFETY: as above: SetEvent, ResetEvent and waits are thread-safe.
unsafe impl Sync for Event {}

impl Event {
    /// `CreateEventW(NULL, TRUE, FALSE, NULL)`: a manual-reset, unsignalled,
    /// unnamed event.
    pub(crate) fn new() -> Result<Event, Error> {
        // SAFETY: no security attributes and no name (both NULL).
        let handle = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
        if handle.is_null() {
            return Err(Error::Syscall {
                call: "CreateEventW",
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Event { handle })
    }

    /// `SetEvent`: signals the event (wakes a waiter). Cannot fail on an
    /// open event.
    pub(crate) fn notify(&self) {
        // SAFETY: `handle` is an open event handle owned by `self`.
        unsafe { SetEvent(self.handle) };
    }

    /// `ResetEvent`: unsignals the event.
    pub(crate) fn drain(&self) {
        // SAFETY: `handle` is an open event handle owned by `self`.
        unsafe { ResetEvent(self.handle) };
    }

    /// The raw handle, for `ebpf_map_set_wait_handle`.
    pub(crate) fn raw(&self) -> HANDLE {
        self.handle
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: `handle` is open and owned by `self`, closed once here.
        unsafe { CloseHandle(self.handle) };
    }
}

/// `WaitForMultipleObjects(2, events, FALSE, ms)`: the index of a signalled
/// event (the lowest, if both are), or `None` when `timeout` passed. The
/// timeout is rounded **up** to whole milliseconds, so the call never returns
/// before it; `None` waits forever.
pub(crate) fn wait_any(
    events: [&Event; 2],
    timeout: Option<Duration>,
) -> Result<Option<usize>, Error> {
    let ms = match timeout {
        None => INFINITE,
        Some(d) => d
            .as_nanos()
            .div_ceil(1_000_000)
            .min(u128::from(INFINITE - 1)) as u32,
    };
    let handles = [events[0].handle, events[1].handle];
    // SAFETY: two open event handles, borrowed for the call.
    let r = unsafe { WaitForMultipleObjects(2, handles.as_ptr(), 0, ms) };
    match r {
        WAIT_TIMEOUT => Ok(None),
        WAIT_FAILED => Err(Error::Syscall {
            call: "WaitForMultipleObjects",
            source: std::io::Error::last_os_error(),
        }),
        r if r.wrapping_sub(WAIT_OBJECT_0) < 2 => Ok(Some((r - WAIT_OBJECT_0) as usize)),
        r => Err(Error::Syscall {
            call: "WaitForMultipleObjects",
            source: std::io::Error::other(format!("unexpected wait result {r:#x}")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs wherever the Windows tests run (under Wine here): a manual-reset
    /// event stays signalled until drained, the wait reports the lowest
    /// signalled index, and a timeout is `None`.
    #[test]
    fn events_and_waits() {
        let (a, b) = (Event::new().unwrap(), Event::new().unwrap());
        assert_eq!(wait_any([&a, &b], Some(Duration::ZERO)).unwrap(), None);
        b.notify();
        assert_eq!(wait_any([&a, &b], Some(Duration::ZERO)).unwrap(), Some(1));
        // Manual reset: still signalled.
        assert_eq!(wait_any([&a, &b], None).unwrap(), Some(1));
        a.notify();
        assert_eq!(wait_any([&a, &b], None).unwrap(), Some(0));
        a.drain();
        b.drain();
        assert_eq!(
            wait_any([&a, &b], Some(Duration::from_millis(1))).unwrap(),
            None
        );
        // Another thread's signal wakes a blocked wait.
        let b = std::sync::Arc::new(b);
        let b2 = b.clone();
        let t = std::thread::spawn(move || b2.notify());
        assert_eq!(wait_any([&a, &b], None).unwrap(), Some(1));
        t.join().unwrap();
    }
}
