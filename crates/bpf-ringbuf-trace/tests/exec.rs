//! The execsnoop on the real kernel: a child this test spawns shows up with
//! its pid, our pid as its parent, our uid and its command name.

use std::time::{Duration, Instant};

use bpf_ringbuf::testing::privileged_or_skip;
use bpf_ringbuf::{Error, Reader};
use bpf_ringbuf_trace::{ExecEvent, ExecTracer};

#[test]
fn sees_a_spawned_child() {
    if !privileged_or_skip("sees_a_spawned_child") {
        return;
    }
    let tracer = ExecTracer::new(1 << 16).unwrap();
    let mut reader = Reader::new(tracer.ring()).unwrap();
    // The command name is the basename of the path exec'd: a link named
    // for this test tells our child from every other exec on the host.
    let dir = std::env::temp_dir().join(format!("rb_trace_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("rbtrace_child");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/bin/true", &link).unwrap();
    let mut child = std::process::Command::new(&link).spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();

    // Generous: other execs on the machine are in the ring too.
    reader.set_deadline(Some(Instant::now() + Duration::from_secs(10)));
    let ev = loop {
        match reader.read() {
            Ok(rec) => {
                let ev = ExecEvent::parse(&rec.data).expect("32-byte events");
                if ev.pid == pid {
                    break ev;
                }
            }
            Err(Error::DeadlineExceeded) => panic!("no exec event for pid {pid}"),
            Err(e) => panic!("{e}"),
        }
    };
    std::fs::remove_dir_all(&dir).unwrap();
    let uid = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap();
    assert_eq!(
        ev,
        ExecEvent {
            pid,
            ppid: std::process::id(),
            uid,
            comm: "rbtrace_child".into()
        }
    );
}

/// With nobody reading, a small ring fills, and every exec after that is
/// counted in the lost-event counter (with its times), by the convention.
#[test]
fn a_full_ring_counts_lost_events() {
    if !privileged_or_skip("a_full_ring_counts_lost_events") {
        return;
    }
    let page = bpf_ringbuf::page_size();
    let tracer = ExecTracer::new(page).unwrap();
    assert_eq!(tracer.lost().read().unwrap().total, 0);
    // A ring of one page holds fewer than page / 40 events (header
    // included); this test's own children alone are more than that.
    let children = page / 40 + 50;
    for _ in 0..children {
        std::process::Command::new("/bin/true").status().unwrap();
    }
    let lost = tracer.lost().read().unwrap();
    let held = tracer.ring().size() / 40;
    assert!(
        lost.total >= (children - held) as u64,
        "{} lost of {children} execs, the ring holds {held}",
        lost.total
    );
    assert!(
        lost.first_ns.is_some() && lost.first_ns <= lost.last_ns,
        "{lost:?}"
    );
}
