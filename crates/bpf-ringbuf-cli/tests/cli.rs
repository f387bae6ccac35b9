//! The `bpf-ringbuf` binary, run as a user would (assert_cmd), against real
//! rings made here. Privileged tests skip loudly without CAP_BPF (and fail
//! under BPF_RINGBUF_REQUIRE_PRIVILEGED=1).

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command as StdCommand, Stdio};

use assert_cmd::Command;
use base64::Engine as _;
use bpf_ringbuf::testing::{
    check_payload, create_map, privileged_or_skip, temp_pin_path, KernelProducer, ProducerConfig,
};
use bpf_ringbuf::{LostCounter, Reader, RingBuf, Spectator, Start};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_bpf-ringbuf");

fn bin() -> Command {
    Command::new(BIN)
}

/// Runs the binary; returns (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let out = bin().args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A failure: exit code 1 and exactly one line on stderr containing `want`.
fn fails_with(args: &[&str], want: &str) {
    let (code, _, err) = run(args);
    assert_eq!(code, 1, "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
    assert!(
        err.starts_with("bpf-ringbuf: ") && err.contains(want),
        "{args:?}: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

macro_rules! privileged {
    () => {
        if !privileged_or_skip(module_path!()) {
            return;
        }
    };
}

/// A ring named `name` with `n` records of `size` bytes from the kernel
/// producer, pinned at a fresh path.
fn pinned_ring(name: &str, ring_size: usize, n: u64, size: usize) -> (RingBuf, PathBuf) {
    let ring = RingBuf::create_named(ring_size, name).unwrap();
    let path = temp_pin_path(name).unwrap();
    ring.pin(&path).unwrap();
    if n > 0 {
        let p = KernelProducer::new(&ring, ProducerConfig::fixed(size)).unwrap();
        assert_eq!(p.produce(n).unwrap().submitted, n);
    }
    (ring, path)
}

fn positions(ring: &RingBuf) -> (u64, u64) {
    let s = Spectator::new(ring, Start::Now).unwrap();
    (s.producer_position(), s.consumer_position())
}

fn spawn(args: &[&str]) -> Child {
    StdCommand::new(BIN)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// SIGINT, as Ctrl-C sends it (bash's builtin `kill`: no procps needed).
fn sigint(child: &Child) {
    let ok = StdCommand::new("bash")
        .args(["-c", &format!("kill -INT {}", child.id())])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn stderr_of(child: &mut Child) -> String {
    let mut s = String::new();
    child.stderr.take().unwrap().read_to_string(&mut s).unwrap();
    s
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["frobnicate"],
        &["list", "--bogus"],
        &["tail"],
        &["tail", "1", "--format", "xml"],
        &["tail", "1", "--layout", "u33 x"],
        &["tail", "1", "--layout", "u32 pid, u32"],
        &["tail", "1", "--force"],
        &["stat", "1", "--watch", "soon"],
        &["demo", "--producers", "3"],
    ] {
        let (code, _, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        let first = err.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("error: ") || args.is_empty(),
            "{args:?}: {err}"
        );
    }
    let (_, _, err) = run(&["tail", "1", "--layout", "u33 x"]);
    assert!(err
        .lines()
        .next()
        .unwrap()
        .contains("field 1 (\"u33 x\"): unknown type \"u33\""));
    // No command: the help, not the demo.
    let (_, _, err) = run(&[]);
    assert!(err.contains("Usage: bpf-ringbuf <COMMAND>"), "{err}");
}

#[test]
fn every_command_has_help_with_examples() {
    for cmd in [
        &["list"][..],
        &["stat"],
        &["tail"],
        &["trace", "exec"],
        &["demo"],
        &["bench"],
        &["completions"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let (code, out, _) = run(&args);
        assert_eq!(code, 0);
        assert!(out.contains("Examples:\n  bpf-ringbuf "), "{cmd:?}: {out}");
    }
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for cmd in [
        "list",
        "stat",
        "tail",
        "trace",
        "demo",
        "bench",
        "completions",
    ] {
        assert!(out.contains(&format!("\n  {cmd} ")), "{cmd}: {out}");
    }
}

#[test]
fn completions_for_bash() {
    let (code, out, _) = run(&["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("complete -F _bpf__ringbuf") && out.contains("tail"),
        "{out}"
    );
}

#[test]
fn list_finds_rings_with_their_fill() {
    privileged!();
    let (ring, path) = pinned_ring("cli_list", 1 << 16, 10, 24);
    let user = create_map(bpf_ringbuf::MapInfo::USER_RINGBUF, 0, 0, 1 << 14).unwrap();
    let user_id = bpf_ringbuf::MapInfo::of(&user).unwrap().id;
    let (code, out, err) = run(&["list", "--json"]);
    assert_eq!(code, 0, "{err}");
    let all: Value = serde_json::from_str(&out).unwrap();
    let me = all
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == ring.id())
        .unwrap_or_else(|| panic!("ring {} not listed: {out}", ring.id()));
    assert_eq!(me["name"], "cli_list");
    assert_eq!(me["kind"], "ring");
    assert_eq!(me["size"], 1 << 16);
    assert_eq!(me["producer_pos"], 10 * 32); // 24 bytes + 8 header each
    assert_eq!(me["consumer_pos"], 0);
    assert_eq!(me["fill"], 320.0 / 65536.0);
    let u = all
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == user_id)
        .unwrap_or_else(|| panic!("user ring {user_id} not listed: {out}"));
    assert_eq!(
        (&u["kind"], &u["size"], &u["producer_pos"]),
        (
            &Value::from("user ring"),
            &Value::from(1 << 14),
            &Value::Null
        )
    );
    let pid = std::process::id();
    assert!(
        me["holders"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["pid"] == pid),
        "{me}"
    );

    let (code, out, _) = run(&["list"]);
    assert_eq!(code, 0);
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{} ", ring.id())))
        .unwrap();
    assert!(
        line.contains("cli_list") && line.contains("64 KiB") && line.contains("0.5%"),
        "{line}"
    );
    assert!(line.contains(&format!("{pid} (")), "{line}");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn stat_shows_positions_lost_events_and_watches() {
    privileged!();
    let ring = RingBuf::create_named(4096, "cli_stat").unwrap();
    let path = temp_pin_path("cli_stat").unwrap();
    ring.pin(&path).unwrap();
    let lost = LostCounter::create(&LostCounter::name_for("cli_stat")).unwrap();
    let lost_path = LostCounter::pin_path_for(&path);
    lost.pin(&lost_path).unwrap();
    let p = KernelProducer::with_lost_counter(&ring, ProducerConfig::fixed(64), &lost).unwrap();
    let report = p.produce(100).unwrap();
    assert!(report.dropped > 0);
    let (prod, _) = positions(&ring);

    let (code, out, err) = run(&["stat", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("map id:             {}", ring.id())),
        "{out}"
    );
    assert!(
        out.contains("size:               4096 bytes (4 KiB)"),
        "{out}"
    );
    assert!(
        out.contains(&format!("producer position:  {prod}")),
        "{out}"
    );
    assert!(out.contains("consumer position:  0"), "{out}");
    assert!(
        out.contains(&format!("lost events:        {} (first", report.dropped)),
        "{out}"
    );
    // By id, the counter is found by its name.
    let (_, out, _) = run(&["stat", &ring.id().to_string()]);
    assert!(
        out.contains(&format!("lost events:        {} ", report.dropped)),
        "{out}"
    );

    // Piped: a header, then one line per sample.
    let (code, out, err) = run(&[
        "stat",
        &ring.id().to_string(),
        "--watch",
        "20ms",
        "--samples",
        "3",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].starts_with("# time_s produced_Bps"));
    for l in &lines[1..] {
        let cols: Vec<&str> = l.split(' ').collect();
        assert_eq!(cols.len(), 6, "{l}");
        assert_eq!(cols[3], prod.to_string(), "lag: {l}");
        assert_eq!(cols[5], report.dropped.to_string(), "lost: {l}");
    }
    // Ctrl-C ends a watch with exit code 0, after the lines so far.
    let mut watch = spawn(&["stat", &ring.id().to_string(), "--watch", "10ms"]);
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    lines.next().unwrap().unwrap(); // the header
    lines.next().unwrap().unwrap(); // a sample
    sigint(&watch);
    assert!(watch.wait().unwrap().success());

    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&lost_path).unwrap();
}

/// The records of `pinned_ring(.., n, 32)` as `tail --format json` prints them.
fn check_json_records(out: &str, n: u64) {
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, n, "{out}");
    for (seq, v) in lines.iter().enumerate() {
        assert_eq!(v["pos"], 40 * seq as u64);
        assert_eq!(v["len"], 32);
        let hex = v["data"].as_str().unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(check_payload(&bytes), Ok(seq as u64));
        assert_eq!(v["fields"]["seq"], seq as u64);
        assert_eq!(v["fields"]["len"], 32);
    }
}

#[test]
fn tail_watches_without_consuming_in_every_format() {
    privileged!();
    let (ring, path) = pinned_ring("cli_tail", 1 << 16, 5, 32);
    let id = ring.id().to_string();
    let layout = "u64 seq, u32 len, u32 hi, u8[16] rest";

    let (code, out, err) = run(&[
        "tail", &id, "-f", "json", "--layout", layout, "--count", "5",
    ]);
    assert_eq!(code, 0, "{err}");
    check_json_records(&out, 5);

    let (code, out, err) = run(&[
        "tail",
        path.to_str().unwrap(),
        "--layout",
        layout,
        "--timeout",
        "100ms",
    ]);
    assert_eq!(code, 0, "{err}");
    let headers: Vec<&str> = out.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(
        headers,
        [
            "#1 pos 0 len 32",
            "#2 pos 40 len 32",
            "#3 pos 80 len 32",
            "#4 pos 120 len 32",
            "#5 pos 160 len 32"
        ]
    );
    assert!(out.contains("\n  seq=2 len=32 hi="), "{out}");
    assert!(
        out.contains("\n  0000  02 00 00 00 00 00 00 00  20 00 00 00 "),
        "{out}"
    );
    assert!(
        err.contains("bpf-ringbuf tail: 5 records, 160 bytes, 0 lapped"),
        "{err}"
    );

    let out = bin()
        .args(["tail", &id, "-f", "raw", "-n", "5"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut raw = &out.stdout[..];
    for seq in 0..5 {
        let len = u32::from_le_bytes(raw[..4].try_into().unwrap()) as usize;
        assert_eq!(len, 32);
        assert_eq!(check_payload(&raw[4..4 + len]), Ok(seq));
        raw = &raw[4 + len..];
    }
    assert!(raw.is_empty());

    // json with the payload in base64.
    let (code, out, _) = run(&["tail", &id, "-f", "json", "--payload", "base64", "-n", "1"]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let b64 = v["data_base64"].as_str().unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    assert_eq!((bytes.len(), check_payload(&bytes)), (32, Ok(0)));
    assert!(v.get("data").is_none() && v.get("fields").is_none(), "{v}");

    // --since now: only what comes after the start.
    let (code, out, _) = run(&["tail", &id, "--since", "now", "--timeout", "50ms"]);
    assert_eq!((code, out.as_str()), (0, ""));

    // Nothing was consumed: the positions are untouched and a reader here
    // still gets every record.
    assert_eq!(positions(&ring), (200, 0));
    let mut reader = Reader::new(&ring).unwrap();
    reader.set_deadline(Some(std::time::Instant::now()));
    for seq in 0..5 {
        assert_eq!(check_payload(&reader.read().unwrap().data), Ok(seq));
    }
    assert!(reader.read().is_err());
    std::fs::remove_file(path).unwrap();
}

/// The spectator next to the ring's real consumer: a reader in this test
/// consumes every record while the producer writes more, and `tail` prints
/// every one of them too, in order; the consumer position is the reader's.
#[test]
fn tail_next_to_a_consuming_reader_takes_nothing_from_it() {
    privileged!();
    let (ring, path) = pinned_ring("cli_beside", 1 << 20, 0, 32);
    let producer = KernelProducer::new(&ring, ProducerConfig::fixed(32)).unwrap();
    producer.produce(100).unwrap();
    let mut tail = spawn(&[
        "tail",
        &ring.id().to_string(),
        "-f",
        "json",
        "-n",
        "1000",
        "--timeout",
        "60s",
    ]);
    let mut lines = BufReader::new(tail.stdout.take().unwrap()).lines();
    // Its spectator is open (at the oldest record) once it printed one.
    let first: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["pos"], 0);

    let mut reader = Reader::new(&ring).unwrap();
    let mut next = 0u64;
    for _ in 0..9 {
        producer.produce(100).unwrap();
        reader.set_deadline(Some(std::time::Instant::now()));
        while let Ok(rec) = reader.read() {
            assert_eq!(check_payload(&rec.data), Ok(next));
            next += 1;
        }
    }
    assert_eq!(next, 1000, "the reader got every record");
    assert_eq!(
        positions(&ring),
        (40_000, 40_000),
        "consumed by the reader only"
    );

    let mut seen = vec![0u64];
    for line in lines {
        let v: Value = serde_json::from_str(&line.unwrap()).unwrap();
        let data = v["data"].as_str().unwrap();
        seen.push(u64::from_str_radix(&data[..16], 16).unwrap().swap_bytes());
    }
    assert!(tail.wait().unwrap().success());
    assert_eq!(
        seen,
        (0..1000).collect::<Vec<u64>>(),
        "tail printed every record, in order"
    );
    std::fs::remove_file(path).unwrap();
}

#[test]
fn tail_consume_is_refused_while_held_unless_forced() {
    privileged!();
    let (ring, path) = pinned_ring("cli_consume", 1 << 16, 5, 32);
    let id = ring.id().to_string();
    fails_with(
        &["tail", &id, "--consume", "-n", "5"],
        &format!("is held by {} (", std::process::id()),
    );
    assert_eq!(positions(&ring), (200, 0));
    let (code, out, err) = run(&[
        "tail",
        &id,
        "--consume",
        "--force",
        "-f",
        "json",
        "--layout",
        "u64 seq, u32 len",
        "-n",
        "3",
    ]);
    assert_eq!(code, 0, "{err}");
    check_json_records(&out, 3);
    assert_eq!(positions(&ring), (200, 120), "three records consumed");
    std::fs::remove_file(path).unwrap();
}

#[test]
fn bad_input_fails_with_one_line() {
    privileged!();
    fails_with(
        &["tail", "/sys/fs/bpf/rb_cli_no_such_pin"],
        "no pinned BPF object at /sys/fs/bpf/rb_cli_no_such_pin",
    );
    fails_with(&["stat", "4000000000"], "no BPF map with id 4000000000");
    let array = create_map(2, 4, 8, 1).unwrap();
    let id = bpf_ringbuf::MapInfo::of(&array).unwrap().id.to_string();
    fails_with(
        &["tail", &id],
        &format!("map {id} is not a ring buffer: map is of type ARRAY (2)"),
    );
    fails_with(&["stat", &id], "is not a ring buffer");
}

#[test]
fn without_privileges_every_command_says_so() {
    privileged!();
    let ring = RingBuf::create(1 << 12).unwrap();
    // A copy of the binary that user 65534 can run wherever the tree is.
    let dir = std::env::temp_dir().join(format!("rb_cli_nobody_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let copy = dir.join("bpf-ringbuf");
    // Copied by `cp`, not here: a descriptor open for writing in this
    // process would be inherited by the children other tests fork at the
    // same time, and exec of the copy would fail with ETXTBSY.
    let cp = StdCommand::new("cp").arg(BIN).arg(&copy).status().unwrap();
    assert!(cp.success());
    let id = ring.id().to_string();
    for args in [
        &["list"][..],
        &["stat", &id],
        &["tail", &id],
        &["trace", "exec"],
    ] {
        let out = StdCommand::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&copy)
            .args(args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("permission denied"), "{args:?}: {err}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn tail_into_a_closed_pipe_exits_0_quietly() {
    privileged!();
    // Far more output than the pipe and tail's buffer hold.
    let (ring, path) = pinned_ring("cli_pipe", 1 << 16, 1000, 48);
    for consume in ["", "--consume --force"] {
        let out = StdCommand::new("bash")
            .args([
                "-c",
                &format!(
                    "set -o pipefail; '{BIN}' tail {} {consume} --timeout 30s | head -n 3",
                    ring.id()
                ),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{consume}: {err}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 3);
        assert_eq!(err, "", "{consume}: nothing on stderr, no panic");
    }
    // As the consumer, tail handed back only records it had written out:
    // the rest are still there for the next consumer, in order.
    let (prod, cons) = positions(&ring);
    assert_eq!(prod, 1000 * 56);
    assert!(cons < prod && cons % 56 == 0, "{cons}");
    let mut reader = Reader::new(&ring).unwrap();
    reader.set_deadline(Some(std::time::Instant::now()));
    for seq in cons / 56..1000 {
        assert_eq!(check_payload(&reader.read().unwrap().data), Ok(seq));
    }
    std::fs::remove_file(path).unwrap();
}

#[test]
fn sigint_ends_tail_with_a_summary() {
    privileged!();
    let (ring, path) = pinned_ring("cli_sigint", 1 << 16, 4, 32);
    let mut child = spawn(&[
        "tail",
        &ring.id().to_string(),
        "-f",
        "json",
        "--timeout",
        "60s",
    ]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..4 {
        lines.next().unwrap().unwrap();
    }
    sigint(&child);
    let status = child.wait().unwrap();
    let err = stderr_of(&mut child);
    assert!(status.success(), "{err}");
    assert_eq!(
        err,
        "bpf-ringbuf tail: 4 records, 128 bytes, 0 lapped (0 bytes), lost unknown (no lost-event counter) (interrupted)\n"
    );
    std::fs::remove_file(path).unwrap();
}

#[test]
fn tail_of_a_deleted_ring_fails() {
    privileged!();
    let (ring, path) = pinned_ring("cli_deleted", 1 << 16, 1, 32);
    let mut child = spawn(&["tail", path.to_str().unwrap(), "--timeout", "60s"]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "#1 pos 0 len 32");
    std::fs::remove_file(&path).unwrap();
    drop(ring);
    let status = child.wait().unwrap();
    let err = stderr_of(&mut child);
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        format!(
            "bpf-ringbuf: ring {} was deleted while tail ran (its pin is gone)\n",
            path.display()
        )
    );
}

#[test]
fn trace_exec_sees_a_spawned_child() {
    privileged!();
    let dir = std::env::temp_dir().join(format!("rb_cli_trace_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("rbcli_child");
    std::os::unix::fs::symlink("/bin/true", &link).unwrap();

    let mut tracer = spawn(&[
        "trace",
        "exec",
        "--json",
        "--comm",
        "rbcli_child",
        "--count",
        "1",
    ]);
    let mut err = BufReader::new(tracer.stderr.take().unwrap());
    let mut ready = String::new();
    err.read_line(&mut ready).unwrap();
    assert!(ready.starts_with("tracing exec into ring "), "{ready}");
    let mut child = StdCommand::new(&link).spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let mut out = String::new();
    tracer
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(tracer.wait().unwrap().success());
    let ev: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(ev["pid"], pid, "{out}");
    assert_eq!(ev["ppid"], std::process::id());
    assert_eq!(ev["comm"], "rbcli_child");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn demo_verifies_every_record_in_both_modes() {
    privileged!();
    // 50000 records of 48 ring bytes fit the 4 MiB ring: none is dropped,
    // whatever the pace of the reader, so every progress line is reached.
    let (code, out, err) = run(&["demo", "--records", "50000", "--size", "40", "--ring", "4M"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        out.matches("verified: sequence numbers 0..50000 each seen exactly once")
            .count(),
        2,
        "{out}"
    );
    assert!(out.contains("kernel wakeups") && out.contains("poll interval 200 µs"));
    for pct in [25, 50, 75] {
        assert_eq!(
            out.matches(&format!("\n  {pct}% read (")).count(),
            2,
            "plain progress lines when piped: {out}"
        );
    }
}

#[test]
fn bench_prints_a_table() {
    privileged!();
    let (code, out, err) = run(&["bench", "--records", "5000"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<&str> = out.lines().skip(2).collect();
    assert_eq!(rows.len(), 12, "4 modes x 3 policies: {out}");
    assert!(
        rows.iter().all(|r| r.split_whitespace().count() >= 7),
        "{out}"
    );
}
