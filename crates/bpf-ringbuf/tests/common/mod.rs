//! Helpers shared by the integration tests: `#[macro_use] mod common;` in
//! each test file that uses them (cargo does not build `tests/common/` as a
//! test of its own).

/// Returns from the calling test, after printing `SKIPPED` with the test's
/// name, when the process lacks CAP_BPF; under
/// `BPF_RINGBUF_REQUIRE_PRIVILEGED=1` it fails the test instead
/// (`testing::privileged_or_skip`). Needs the `testing` feature where used.
#[allow(
    unused_macros,
    reason = "each test binary compiles this module on its own; not every one uses every helper"
)]
macro_rules! privileged {
    () => {
        if !bpf_ringbuf::testing::privileged_or_skip(
            std::thread::current().name().unwrap_or(module_path!()),
        ) {
            return;
        }
    };
}

/// Reserves a record of 8 bytes holding `key` (little endian) on `ring`,
/// then runs `body` while another thread commits it (with the default
/// wakeup) 20 ms later: `body` finds the ring's head reserved, not
/// committed, for a while. Needs the `testing` feature where used.
#[allow(
    dead_code,
    reason = "each test binary compiles this module on its own; not every one uses every helper"
)]
pub fn with_a_record_committed_later<R>(
    ring: &bpf_ringbuf::testing::FakeRing,
    key: u64,
    body: impl FnOnce() -> R,
) -> R {
    let mut r = ring.reserve(8).expect("room in the ring");
    r.write(0, &key.to_le_bytes());
    std::thread::scope(|s| {
        s.spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(20));
            r.submit(bpf_ringbuf::testing::Wakeup::Default);
        });
        body()
    })
}
