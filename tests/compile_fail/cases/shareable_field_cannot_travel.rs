//! `#[derive(Shareable)]` on a type with a field that cannot travel to
//! another process (an open file, an `Rc`): one error at each such field,
//! saying so, and nothing from the generated code.

use std::fs::File;
use std::rc::Rc;

#[derive(multiproc::Shareable)]
struct Job {
    id: u64,
    log: File,
}

#[derive(multiproc::Shareable)]
enum Event {
    Started { id: u64 },
    Shared(Rc<String>),
}

fn main() {}
