//! `#[derive(Shareable)]`: a user's own structs and enums travel as process
//! arguments and results, Queue and Pipe messages, manager dict values and
//! pool tasks, under both start methods, with no rkyv attribute anywhere.

mod util;

use std::collections::BTreeMap;

use multiproc::{
    Connection, DictProxy, Manager, Pipe, Pool, Process, Queue, Shareable, StartMethod, Value,
};
use util::PROMPTLY;

multiproc::init_before_main!();

const METHODS: [StartMethod; 2] = [StartMethod::Spawn, StartMethod::Fork];

/// A struct with named fields (one of them private to nobody but this file).
#[derive(Shareable, Debug, Clone, PartialEq)]
struct Point {
    x: i32,
    y: i32,
    label: String,
}

/// An enum with every kind of variant.
#[derive(Shareable, Debug, Clone, PartialEq)]
enum Shape {
    Empty,
    Circle { center: Point, radius: f64 },
    Polygon(Vec<Point>),
    Tagged(u8, Option<String>),
}

/// A generic struct.
#[derive(Shareable, Debug, Clone, PartialEq)]
struct Pair<T> {
    first: T,
    second: T,
}

/// A tuple struct and a unit struct.
#[derive(Shareable, Debug, Clone, Copy, PartialEq, PartialOrd)]
struct Id(u64);

#[derive(Shareable, Debug, Clone, PartialEq)]
struct Done;

/// Nested: derived types inside derived types, a generic one, std containers.
#[derive(Shareable, Debug, Clone, PartialEq)]
struct Drawing {
    id: Id,
    shapes: Vec<Shape>,
    corners: Pair<Point>,
    layers: BTreeMap<String, Pair<u32>>,
    done: Option<Done>,
}

/// A type that refers to itself.
#[derive(Shareable, Debug, Clone, PartialEq)]
enum Tree {
    Leaf(i64),
    Node(Vec<Tree>),
}

/// A derived type holding the crate's handles.
#[derive(Shareable)]
struct Workspace {
    results: Queue<Shape>,
    counter: Value<u64>,
}

fn point(x: i32, y: i32) -> Point {
    Point {
        x,
        y,
        label: format!("({x}, {y})"),
    }
}

fn drawing(n: u64) -> Drawing {
    Drawing {
        id: Id(n),
        shapes: vec![
            Shape::Empty,
            Shape::Circle {
                center: point(1, 2),
                radius: 0.5,
            },
            Shape::Polygon(vec![point(0, 0), point(3, 0), point(0, 4)]),
            Shape::Tagged(7, Some("seven".into())),
            Shape::Tagged(8, None),
        ],
        corners: Pair {
            first: point(-1, -1),
            second: point(1, 1),
        },
        layers: [(
            "base".to_string(),
            Pair {
                first: 1,
                second: 2,
            },
        )]
        .into(),
        done: Some(Done),
    }
}

fn tree() -> Tree {
    Tree::Node(vec![
        Tree::Leaf(1),
        Tree::Node(vec![Tree::Leaf(2), Tree::Node(vec![])]),
    ])
}

/// What the children do to a drawing: move every point by one.
fn moved(mut d: Drawing) -> Drawing {
    let shift = |p: &mut Point| {
        p.x += 1;
        p.y += 1;
    };
    for s in &mut d.shapes {
        match s {
            Shape::Circle { center, .. } => shift(center),
            Shape::Polygon(points) => points.iter_mut().for_each(shift),
            Shape::Empty | Shape::Tagged(..) => {}
        }
    }
    shift(&mut d.corners.first);
    shift(&mut d.corners.second);
    d.id = Id(d.id.0 + 100);
    d
}

#[test]
fn derived_types_encode_and_decode_in_process() {
    let d = drawing(1);
    assert_eq!(Drawing::decode(&d.encode().unwrap()).unwrap(), d);
    assert_eq!(Tree::decode(&tree().encode().unwrap()).unwrap(), tree());
    let many = Shape::encode_many(&d.shapes).unwrap();
    assert_eq!(Shape::decode_many(&many).unwrap(), d.shapes);
    assert_eq!(Done::decode(&Done.encode().unwrap()).unwrap(), Done);
}

#[test]
fn a_corrupt_message_is_an_error_not_a_value() {
    let mut bytes = Shape::Tagged(7, Some("seven".into())).encode().unwrap();
    // The enum's tag is the last byte's neighbourhood: set every byte to
    // something no Shape can be made of.
    for b in bytes.iter_mut() {
        *b = 0xff;
    }
    assert!(Shape::decode(&bytes).is_err());
}

fn process_moves(d: Drawing) -> (Drawing, Tree) {
    (moved(d), Tree::Node(vec![tree(), Tree::Leaf(3)]))
}

#[test]
fn derived_types_are_process_arguments_and_results() {
    for m in METHODS {
        let mut p = Process::new(process_moves, drawing(1)).start_method(m);
        p.start().unwrap();
        let (d, t) = p.join_timeout(PROMPTLY).unwrap();
        assert_eq!(d, moved(drawing(1)), "{m:?}");
        assert_eq!(t, Tree::Node(vec![tree(), Tree::Leaf(3)]), "{m:?}");
    }
}

fn queue_echo(args: (Queue<Option<Drawing>>, Queue<Pair<Shape>>)) {
    let (inbox, outbox) = args;
    while let Some(d) = inbox.get().unwrap() {
        let d = moved(d);
        let mut shapes = d.shapes.into_iter();
        let pair = Pair {
            first: shapes.next().unwrap(),
            second: shapes.next().unwrap(),
        };
        outbox.put(pair).unwrap();
    }
}

#[test]
fn derived_types_are_queue_messages() {
    for m in METHODS {
        let inbox = Queue::new().unwrap();
        let outbox = Queue::new().unwrap();
        let mut p = Process::new(queue_echo, (inbox.clone(), outbox.clone())).start_method(m);
        p.start().unwrap();
        for n in 0..3 {
            inbox.put(Some(drawing(n))).unwrap();
        }
        inbox.put(None).unwrap();
        for _ in 0..3 {
            let pair = outbox.get_timeout(PROMPTLY).unwrap();
            assert_eq!(pair.first, Shape::Empty, "{m:?}");
            assert_eq!(pair.second, moved(drawing(0)).shapes[1], "{m:?}");
        }
        p.join_timeout(PROMPTLY).unwrap();
    }
}

/// What goes over the pipe: an enum whose variants carry derived types.
#[derive(Shareable, Debug, PartialEq)]
enum Message {
    Draw(Drawing),
    Leaves(Tree),
    Bye,
}

fn pipe_echo(end: Connection<Message>) {
    loop {
        match end.recv().unwrap() {
            Message::Draw(d) => {
                let leaves = d.shapes.len() as i64;
                let reply = Message::Leaves(Tree::Node((0..leaves).map(Tree::Leaf).collect()));
                end.send(reply).unwrap();
            }
            Message::Leaves(_) | Message::Bye => return,
        }
    }
}

#[test]
fn derived_types_are_pipe_messages() {
    for m in METHODS {
        let (here, there) = Pipe::new().unwrap();
        let mut p = Process::new(pipe_echo, there).start_method(m);
        p.start().unwrap();
        here.send(Message::Draw(drawing(1))).unwrap();
        let reply = here.recv_timeout(PROMPTLY).unwrap();
        assert_eq!(
            reply,
            Message::Leaves(Tree::Node((0..5).map(Tree::Leaf).collect())),
            "{m:?}"
        );
        here.send(Message::Bye).unwrap();
        p.join_timeout(PROMPTLY).unwrap();
    }
}

fn dict_writer(args: (u64, DictProxy<Id, Drawing>)) {
    let (n, d) = args;
    d.insert(Id(n), moved(drawing(n))).unwrap();
    d.update_with(Id(0), drawing(0), |mut shared| {
        shared.shapes.push(Shape::Tagged(n as u8, None));
        shared
    })
    .unwrap();
}

#[test]
fn derived_types_are_dict_proxy_keys_and_values() {
    for m in METHODS {
        let manager = Manager::start_with(m).unwrap();
        let d = manager.dict::<Id, Drawing>().unwrap();
        util::run_each(m, dict_writer, (1..=3).map(|n| (n, d.clone())));
        for n in 1..=3 {
            assert_eq!(d.get(&Id(n)).unwrap(), Some(moved(drawing(n))), "{m:?}");
        }
        let shared = d.get(&Id(0)).unwrap().unwrap();
        let mut tags: Vec<_> = shared.shapes[5..].to_vec();
        tags.sort_by_key(|s| format!("{s:?}"));
        assert_eq!(
            tags,
            (1..=3).map(|n| Shape::Tagged(n, None)).collect::<Vec<_>>(),
            "{m:?}"
        );
        manager.shutdown().unwrap();
    }
}

fn area(s: Shape) -> Pair<f64> {
    let a = match s {
        Shape::Empty | Shape::Tagged(..) => 0.0,
        Shape::Circle { radius, .. } => std::f64::consts::PI * radius * radius,
        Shape::Polygon(p) => p.len() as f64,
    };
    Pair {
        first: a,
        second: -a,
    }
}

fn depth(t: Tree) -> usize {
    match t {
        Tree::Leaf(_) => 0,
        Tree::Node(children) => 1 + children.into_iter().map(depth).max().unwrap_or(0),
    }
}

#[test]
fn derived_types_are_pool_tasks_and_results() {
    for m in METHODS {
        let pool = Pool::builder()
            .processes(2)
            .start_method(m)
            .build()
            .unwrap();
        let shapes = drawing(1).shapes;
        let areas = pool.map(area, shapes.clone()).unwrap();
        let expected: Vec<_> = shapes.into_iter().map(area).collect();
        assert_eq!(areas, expected, "{m:?}");
        let r = pool.apply_async(depth, tree()).unwrap();
        assert_eq!(r.get().unwrap(), 3, "{m:?}");
        let moved_all = pool.chunksize(2).map(moved, (0..4).map(drawing)).unwrap();
        assert_eq!(
            moved_all,
            (0..4).map(|n| moved(drawing(n))).collect::<Vec<_>>()
        );
    }
}

fn use_workspace(w: Workspace) {
    *w.counter.lock().unwrap() += 1;
    w.results
        .put(Shape::Tagged(1, Some("from child".into())))
        .unwrap();
}

#[test]
fn derived_types_carry_the_crates_handles() {
    for m in METHODS {
        let w = Workspace {
            results: Queue::new().unwrap(),
            counter: Value::new(0).unwrap(),
        };
        let (results, counter) = (w.results.clone(), w.counter.clone());
        let mut p = Process::new(use_workspace, w).start_method(m);
        p.start().unwrap();
        assert_eq!(
            results.get_timeout(PROMPTLY).unwrap(),
            Shape::Tagged(1, Some("from child".into())),
            "{m:?}"
        );
        p.join_timeout(PROMPTLY).unwrap();
        assert_eq!(counter.get(), 1, "{m:?}");
    }
}

fn widths(v: (usize, isize, std::num::NonZeroUsize)) -> (usize, isize, std::num::NonZeroUsize) {
    v
}

fn sizes(n: usize) -> usize {
    n + (1 << 32)
}

/// A `usize` or `isize` travels whole: rkyv's default stores them in 32
/// bits and cut a larger value with no error (a file size of 6 GiB came
/// back as 2 GiB, from a newcomer's program).
#[test]
fn usize_and_isize_travel_whole() {
    let big = (
        usize::MAX,
        isize::MIN,
        std::num::NonZeroUsize::new(1 << 40).unwrap(),
    );
    for m in METHODS {
        let mut p = Process::new(widths, big).start_method(m);
        p.start().unwrap();
        assert_eq!(p.join_timeout(PROMPTLY).unwrap(), big, "{m:?}");
        let pool = Pool::builder()
            .processes(1)
            .start_method(m)
            .build()
            .unwrap();
        assert_eq!(
            pool.map(sizes, [0usize, 5 << 32]).unwrap(),
            [1 << 32, 6 << 32],
            "{m:?}"
        );
    }
    let q = Queue::<usize>::new().unwrap();
    q.put(5_000_000_000).unwrap();
    assert_eq!(q.get_timeout(PROMPTLY).unwrap(), 5_000_000_000);
    let manager = Manager::start().unwrap();
    let d: DictProxy<usize, isize> = manager.dict().unwrap();
    d.insert(1 << 33, -(1 << 34)).unwrap();
    d.insert(1, 1).unwrap();
    assert_eq!(d.get(&(1 << 33)).unwrap(), Some(-(1 << 34)));
    assert_eq!(d.get(&1).unwrap(), Some(1));
}
