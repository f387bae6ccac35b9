//! The `bpf-ringbuf` binary, run as a user would.

use std::process::Command;

use bpf_ringbuf::testing::{privileged_or_skip, temp_pin_path, KernelProducer, ProducerConfig};
use bpf_ringbuf::RingBuf;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bpf-ringbuf"))
}

#[test]
fn bad_arguments_fail_with_usage() {
    for args in [
        &["demo", "--bogus"][..],
        &["demo", "--size"],
        &["frobnicate"],
        &["info"],
    ] {
        let out = bin().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("bpf-ringbuf: "), "{args:?}: {err}");
    }
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("usage:"));
}

#[test]
fn demo_verifies_every_record_in_both_modes() {
    if !privileged_or_skip("demo_verifies_every_record_in_both_modes") {
        return;
    }
    let out = bin()
        .args(["demo", "--records", "50000", "--size", "40", "--ring", "1M"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.matches("verified: sequence numbers 0..").count(),
        2,
        "{stdout}"
    );
    assert!(stdout.contains("kernel wakeups") && stdout.contains("poll interval 200 µs"));
}

#[test]
fn info_and_read_a_pinned_ring() {
    if !privileged_or_skip("info_and_read_a_pinned_ring") {
        return;
    }
    let path = temp_pin_path("cli").unwrap();
    let ring = RingBuf::create(64 * 1024).unwrap();
    ring.pin(&path).unwrap();
    KernelProducer::new(&ring, ProducerConfig::fixed(24))
        .unwrap()
        .produce(5)
        .unwrap();

    let out = bin().args(["info", "--pin"]).arg(&path).output().unwrap();
    let info = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{info}");
    assert!(info.contains("size:              65536 bytes"), "{info}");
    assert!(info.contains("unconsumed:        160 bytes"), "{info}"); // 5 x (24 + 8)

    let out = bin()
        .args(["read", "--hex", "--timeout-ms", "10", "--pin"])
        .arg(&path)
        .output()
        .unwrap();
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    assert!(out.status.success());
    assert_eq!(lines.len(), 5);
    // Each line: length, then the payload in hex; it starts with the LE sequence number.
    for (seq, line) in lines.iter().enumerate() {
        let (len, hex) = line.split_once(' ').unwrap();
        assert_eq!(len, "24");
        assert_eq!(&hex[..16], format!("{:016x}", (seq as u64).swap_bytes()));
    }
    // `read` consumed them.
    assert!(RingBuf::open_pinned(&path).is_ok());
    let out = bin().args(["info", "--pin"]).arg(&path).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("unconsumed:        0 bytes"));
    std::fs::remove_file(&path).unwrap();

    let out = bin().args(["info", "--pin"]).arg(&path).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pinned BPF object"));
}
