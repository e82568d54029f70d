//! Named shared memory between two programs that are not parent and child
//! of each other in the multiproc sense: the second one is started as a
//! plain program and finds the segment by its name alone, as Python's
//! `SharedMemory(name)` would.
//!
//! Run: `cargo run --example shared_memory`

use std::process::Command;

use multiproc::shared_memory::{Item, ShareableList, SharedMemory};

fn main() {
    multiproc::init();
    let args: Vec<String> = std::env::args().collect();
    if let [_, cmd, name] = args.as_slice()
        && cmd == "attach"
    {
        other_program(name);
        return;
    }

    let shm = SharedMemory::create(None, 64).unwrap();
    shm.write(0, b"hello").unwrap();
    let list_name = format!("{}_list", shm.name());
    let list = ShareableList::create(Some(&list_name), &[Item::Int(0), "pending".into()]).unwrap();
    println!(
        "created segment {} ({} bytes) and ShareableList {list_name}",
        shm.name(),
        shm.size()
    );

    // Any program of this user can attach by name; here, this one again,
    // started as an ordinary program.
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["attach", shm.name()])
        .status()
        .unwrap();
    assert!(status.success());

    let mut buf = [0u8; 5];
    shm.read(0, &mut buf).unwrap();
    println!("segment now holds {:?}", String::from_utf8_lossy(&buf));
    println!("list now holds {:?}", list.to_vec().unwrap());

    // Unlinking removes the name; had we been killed instead, our tracker
    // would have unlinked both names.
    shm.unlink().unwrap();
    list.shm().unlink().unwrap();
    match SharedMemory::attach(shm.name()) {
        Err(e) => println!("after unlink, attaching again: {e}"),
        Ok(_) => unreachable!("the name was unlinked"),
    }
}

fn other_program(name: &str) {
    let shm = SharedMemory::attach(name).unwrap();
    let mut buf = [0u8; 5];
    shm.read(0, &mut buf).unwrap();
    println!(
        "[other program] read {:?} from {name}",
        String::from_utf8_lossy(&buf)
    );
    shm.write(0, b"HELLO").unwrap();
    let list = ShareableList::attach(&format!("{name}_list")).unwrap();
    list.set(0, 42i64).unwrap();
    list.set(1, "done").unwrap();
    println!("[other program] updated the list");
}
