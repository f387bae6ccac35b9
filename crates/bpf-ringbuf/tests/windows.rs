//! Windows only: the backend for eBPF for Windows (efW).
//!
//! Without efW (`ebpfapi.dll` absent, as under Wine on this project's Linux
//! machines, where `scripts/windows-check.sh --run` sets
//! `BPF_RINGBUF_EXPECT_NO_EFW=1`) the program starts and every call that
//! needs efW returns `Error::PlatformNotInstalled`. With efW installed (run
//! elevated), the map and reader calls run against it; nobody has run that
//! part yet.
#![cfg(windows)]

use std::time::Instant;

use bpf_ringbuf::fd::BorrowedFd;
use bpf_ringbuf::{Error, Reader, RingBuf};

fn efw_expected_missing() -> bool {
    std::env::var_os("BPF_RINGBUF_EXPECT_NO_EFW").is_some_and(|v| v == "1")
}

fn is_not_installed(e: &Error) -> bool {
    matches!(
        e,
        Error::PlatformNotInstalled {
            missing: "ebpfapi.dll",
            ..
        }
    )
}

#[test]
fn without_efw_calls_are_a_typed_error() {
    let created = RingBuf::create(1 << 16);
    if !efw_expected_missing() && created.is_ok() {
        eprintln!("eBPF for Windows is installed: see with_efw_the_reader_works");
        return;
    }
    let e = created.unwrap_err();
    assert!(is_not_installed(&e), "{e:?}");
    assert_eq!(
        e.to_string(),
        "eBPF for Windows is not installed (or is older than v1.0): ebpfapi.dll not found"
    );
    assert_eq!(std::io::Error::from(e).kind(), std::io::ErrorKind::NotFound);
    // Every entry point, and again (the failed load is cached, not retried
    // into a different answer).
    for _ in 0..2 {
        assert!(is_not_installed(&RingBuf::from_id(1).unwrap_err()));
        assert!(is_not_installed(
            &RingBuf::open_pinned("/ebpf/global/none").unwrap_err()
        ));
        // SAFETY: never used as a descriptor: efW is not there to look at it.
        let fd = unsafe { BorrowedFd::borrow_raw(3) };
        assert!(is_not_installed(&Reader::new(fd).unwrap_err()));
    }
}

/// With efW installed and the test run elevated: create, pin and reopen,
/// open by id, read an empty ring to a deadline, flush and close, and one
/// consumer per map. There is no producer here (efW programs need a
/// compiler and an attach point), so no record is read.
#[test]
fn with_efw_the_reader_works() {
    if efw_expected_missing() {
        return;
    }
    let ring = match RingBuf::create(1 << 16) {
        Ok(ring) => ring,
        Err(e) if is_not_installed(&e) => {
            eprintln!("skipped: eBPF for Windows is not installed");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    assert_eq!(ring.size(), 1 << 16);
    assert!(matches!(RingBuf::create(5000), Err(Error::BadSize { .. })));
    let again = RingBuf::from_id(ring.id()).unwrap();
    assert_eq!((again.id(), again.size()), (ring.id(), ring.size()));

    let mut reader = Reader::new(&ring).unwrap();
    assert!(matches!(
        Reader::new(&again),
        Err(Error::ConsumerExists { map_id: Some(id) }) if id == ring.id()
    ));
    assert_eq!(reader.available_bytes(), 0);
    reader.set_deadline(Some(Instant::now()));
    assert!(matches!(
        reader.read_zero_copy(),
        Err(Error::DeadlineExceeded)
    ));
    reader.set_deadline(None);
    let handle = reader.handle();
    handle.flush();
    assert!(matches!(reader.read(), Err(Error::Flushed)));
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(20));
        handle.close();
    });
    assert!(matches!(reader.read(), Err(Error::Closed)));
    t.join().unwrap();
    drop(reader);
    Reader::new(&again).unwrap();
}
