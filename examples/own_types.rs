//! Your own structs and enums as messages: `#[derive(multiproc::Shareable)]`
//! on an order and its status, sent to a child process, through a queue, a
//! pipe, a manager dict and a pool. No `rkyv` dependency, no other attribute.
//!
//! Run: `cargo run --example own_types`

use multiproc::{Connection, Manager, Pipe, Pool, Process, Queue, Shareable};

/// A struct with named fields: a message, a dict value, a pool task.
#[derive(Shareable, Debug, Clone, PartialEq)]
struct Order {
    id: u32,
    customer: String,
    lines: Vec<Line>,
    status: Status,
}

/// A tuple struct, nested inside `Order`.
#[derive(Shareable, Debug, Clone, PartialEq)]
struct Line(String, u32);

/// An enum with data.
#[derive(Shareable, Debug, Clone, PartialEq)]
enum Status {
    New,
    Packed { boxes: u32 },
    Shipped(String),
}

/// A generic struct: `Tagged<T>` travels when `T` does.
#[derive(Shareable, Debug, Clone, PartialEq)]
struct Tagged<T> {
    tag: String,
    value: T,
}

fn order(id: u32) -> Order {
    Order {
        id,
        customer: format!("customer-{id}"),
        lines: vec![Line("tea".into(), id), Line("cups".into(), 2)],
        status: Status::New,
    }
}

/// A process argument and result.
fn pack(mut o: Order) -> Order {
    let items: u32 = o.lines.iter().map(|l| l.1).sum();
    o.status = Status::Packed {
        boxes: items.div_ceil(4),
    };
    o
}

/// Takes orders from a queue until `None`, answers on a pipe.
fn shipper(args: (Queue<Option<Order>>, Connection<Tagged<Status>>)) {
    let (orders, replies) = args;
    while let Some(o) = orders.get().unwrap() {
        let status = Status::Shipped(format!("TRACK-{}", o.id));
        replies
            .send(Tagged {
                tag: o.customer,
                value: status,
            })
            .unwrap();
    }
}

/// A pool task.
fn weigh(o: Order) -> Tagged<u32> {
    Tagged {
        tag: o.customer,
        value: o.lines.iter().map(|l| l.1 * 250).sum(),
    }
}

fn main() -> multiproc::Result<()> {
    multiproc::init();

    // 1. An argument and a result.
    let mut p = Process::new(pack, order(1));
    p.start()?;
    let packed = p.join()?;
    println!("packed in a child: {:?}", packed.status);

    // 2. Through a queue and back through a pipe.
    let orders = Queue::new()?;
    let (replies, child_end) = Pipe::new()?;
    let mut p = Process::new(shipper, (orders.clone(), child_end));
    p.start()?;
    for id in 1..=3 {
        orders.put(Some(order(id)))?;
    }
    orders.put(None)?;
    for _ in 1..=3 {
        let Tagged { tag, value } = replies.recv()?;
        println!("shipped: {tag} -> {value:?}");
    }
    p.join()?;

    // 3. As values in a manager's dict.
    let manager = Manager::start()?;
    let book = manager.dict::<u32, Order>()?;
    book.insert(packed.id, packed.clone())?;
    let back = book.get(&packed.id)?.expect("stored");
    println!("the dict gives back the same order: {}", back == packed);
    manager.shutdown()?;

    // 4. As pool tasks and results.
    let pool = Pool::new(2)?;
    let weights = pool.map(weigh, (1..=3).map(order))?;
    let grams: Vec<u32> = weights.iter().map(|w| w.value).collect();
    println!("weighed by the pool (grams): {grams:?}");
    Ok(())
}
