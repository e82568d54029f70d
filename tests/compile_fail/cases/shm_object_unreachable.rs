//! A typed view of any segment as any `T` (`ShmObject`) is crate-private:
//! it would read zero bytes as a `String`.

fn main() {
    let _ = multiproc_runtime::shm::ShmObject::<String>::create(
        multiproc_runtime::shm::Kind::Other,
        0,
        0,
        |_, _| {},
    );
}
