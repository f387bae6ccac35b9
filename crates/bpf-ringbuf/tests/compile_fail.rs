//! The borrow checker proves the zero-copy contract: these programs must not
//! compile. Each `.stderr` file pins the reason (a borrow conflict).
//! Run on Linux (the `.stderr` files are Linux's).
#![cfg(target_os = "linux")]

#[test]
fn zero_copy_slices_cannot_outlive_commit() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui-pass/*.rs");
}
