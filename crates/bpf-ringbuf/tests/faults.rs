//! Fault tests: descriptors that are not ring buffers (closed, a regular
//! file) and a process without privileges. They run with the ordinary suite
//! (`scripts/test.sh`); the load tests are in `stress.rs`.
//!
//! The descriptor tests need neither privileges nor the `testing` feature.
//! The privilege test needs both: it skips loudly without CAP_BPF, and fails
//! instead under `BPF_RINGBUF_REQUIRE_PRIVILEGED=1`. Linux only (they use
//! Linux descriptors).
#![cfg(target_os = "linux")]

#[cfg(feature = "testing")]
#[macro_use]
mod common;

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use bpf_ringbuf::{Error, Reader, RingBuf};

/// A descriptor number that is closed now and that no other thread of this
/// process will be handed while the test runs.
///
/// Descriptors are allocated lowest-free first (open, socket, dup, epoll,
/// eventfd, ...; POSIX requires it). So we take the highest number the
/// process may use, `RLIMIT_NOFILE`'s soft limit minus one:
/// `fcntl(F_DUPFD_CLOEXEC, limit - 1)` succeeds only if that number is free
/// (there is no higher one to fall back to), and we close it again at once.
/// Another thread gets that number only if every descriptor below it is
/// taken, i.e. the process is one short of its limit, which no test does;
/// or by naming it (`dup2`, `F_DUPFD` with a high minimum), which no other
/// test does. The old version closed a freshly opened `/dev/null`, whose low
/// number the next `open` in a parallel test reused.
fn closed_descriptor() -> RawFd {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit for the call.
    let r = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    assert_eq!(r, 0, "getrlimit: {}", std::io::Error::last_os_error());
    let top = RawFd::try_from(lim.rlim_cur.min(RawFd::MAX as libc::rlim_t)).unwrap() - 1;
    let file = std::fs::File::open("/dev/null").unwrap();
    // SAFETY: no pointers; on success the new descriptor is ours alone and
    // is closed below.
    let fd = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_DUPFD_CLOEXEC, top) };
    assert_eq!(
        fd,
        top,
        "F_DUPFD_CLOEXEC onto {top}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `fd` was just created above and nothing else refers to it.
    assert_eq!(unsafe { libc::close(fd) }, 0);
    fd
}

#[test]
fn closed_descriptor_is_bad_fd() {
    let raw = closed_descriptor();
    // SAFETY: `borrow_raw` asks for a descriptor that stays open while
    // borrowed; this one is closed on purpose, which is what the test checks.
    // What that rule protects holds: no resource of someone else is touched.
    // The library only asks `fcntl(raw, F_GETFD)` whether the number is open,
    // gets EBADF and returns `Error::BadFd`; and no other thread can open a
    // descriptor under that number meanwhile (see `closed_descriptor`).
    let borrowed = unsafe { BorrowedFd::borrow_raw(raw) };
    let e = Reader::new(borrowed).unwrap_err();
    assert!(matches!(e, Error::BadFd { fd } if fd == raw), "{e:?}");
}

#[test]
fn regular_file_is_not_a_map() {
    let file = std::fs::File::open("/proc/self/exe").unwrap();
    let e = Reader::new(&file).unwrap_err();
    assert!(matches!(e, Error::NotAMap { .. }), "{e:?}");
    let e = RingBuf::from_fd(OwnedFd::from(file)).unwrap_err();
    assert!(matches!(e, Error::NotAMap { .. }), "{e:?}");
}

#[cfg(feature = "testing")]
const UNPRIV_ENV: &str = "BPF_RINGBUF_UNPRIVILEGED_CHILD";

/// Runs `unprivileged_child` in a child process as user `nobody` with every
/// capability dropped (`setpriv --reuid=65534 ... --bounding-set=-all`), and
/// checks what it reports. (Root with its capabilities dropped is not enough
/// here: exec gives uid 0 its capabilities back unless securebits say no.)
#[cfg(feature = "testing")]
#[test]
fn no_privileges_gives_permission_denied() {
    use bpf_ringbuf::testing::temp_pin_path;
    privileged!();
    let path = temp_pin_path("unpriv").unwrap();
    let ring = RingBuf::create(bpf_ringbuf::page_size()).unwrap();
    ring.pin(&path).unwrap();
    // A copy of this test binary that `nobody` can execute wherever the
    // build tree lives.
    let exe = std::env::temp_dir().join(format!("bpf_ringbuf_unpriv_{}", std::process::id()));
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--no-new-privs",
        ])
        .arg(&exe)
        .args([
            "--exact",
            "unprivileged_child",
            "--include-ignored",
            "--nocapture",
        ])
        .env(UNPRIV_ENV, &path)
        .env_remove("BPF_RINGBUF_REQUIRE_PRIVILEGED")
        .current_dir("/")
        .output();
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&exe);
    let out = out.expect("setpriv (util-linux) must be installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("UNPRIVILEGED-CHECKS-PASSED"), "{text}");
}

/// The child half of `no_privileges_gives_permission_denied`.
#[cfg(feature = "testing")]
#[test]
#[ignore = "run only as a child without capabilities"]
fn unprivileged_child() {
    use bpf_ringbuf::testing::{privileged_or_skip, FakeRing, Wakeup};
    use std::time::Instant;
    let Ok(path) = std::env::var(UNPRIV_ENV) else {
        return;
    };
    let e = RingBuf::create(bpf_ringbuf::page_size()).unwrap_err();
    assert!(
        matches!(e, Error::PermissionDenied { call, .. } if call.contains("MAP_CREATE")),
        "{e:?}"
    );
    let e = RingBuf::open_pinned(&path).unwrap_err();
    assert!(matches!(e, Error::PermissionDenied { .. }), "{e:?}");
    // The skip helper skips (loudly) instead of failing.
    assert!(!privileged_or_skip("unprivileged_child"));
    // The fake ring needs no privileges.
    let fake = FakeRing::new(bpf_ringbuf::page_size()).unwrap();
    fake.output(b"ok", Wakeup::Default).unwrap();
    let mut r = fake.reader().unwrap();
    r.set_deadline(Some(Instant::now()));
    assert_eq!(r.read().unwrap().data, b"ok");
    println!("UNPRIVILEGED-CHECKS-PASSED");
}
