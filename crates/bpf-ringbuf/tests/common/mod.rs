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
