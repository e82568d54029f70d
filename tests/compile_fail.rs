//! Unsound calls that safe code must not be able to make, and code the
//! crate refuses with a message of its own (a `#[derive(Shareable)]` field
//! that cannot travel): each file in `tests/compile_fail/` fails to
//! compile, for the reason its `.stderr` snapshot shows. Regenerate the snapshots with `TRYBUILD=overwrite`
//! (on the toolchain CI uses, Rust 1.95) and read every diff.

multiproc::init_before_main!();

#[test]
fn unsound_calls_do_not_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/compile_fail/*.rs");
}
