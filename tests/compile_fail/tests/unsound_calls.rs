//! Unsound calls that safe code must not be able to make, and code the
//! crate refuses with a message of its own (a `#[derive(Shareable)]` field
//! that cannot travel): each file in `tests/compile_fail/cases/` fails to
//! compile, for the reason its `.stderr` snapshot shows. Regenerate the
//! snapshots with `TRYBUILD=overwrite` (on the toolchain CI uses, Rust
//! 1.95) and read every diff.

#[test]
fn unsound_calls_do_not_compile() {
    let t = trybuild::TestCases::new();
    t.compile_fail("cases/*.rs");
}
