//! The manager's list, dict and namespace beyond the basics: slices,
//! negative indices, `count`/`contains`, sorting in the server, `extend`
//! from another proxy, `copy` and `popitem`, a namespace's `Debug`
//! (CPython's `_TestContainers`).

mod util;

use std::collections::HashMap;

use std::time::Duration;

use multiproc::{DictProxy, Error, ListProxy, Manager, Process, RawValue, StartMethod};
use util::{PROMPTLY, eventually};

multiproc::init_before_main!();

const METHODS: [StartMethod; 3] = [
    StartMethod::Spawn,
    StartMethod::Fork,
    StartMethod::Forkserver,
];

/// CPython's `test_list`: slices read (`b[2:10]` clamps there; here a
/// range past the end is an error and `2..` reads to the end), `extend`,
/// `b *= 2` as `extend_from(&b)`, `in`, `count`, and a list of lists.
#[test]
fn test_list() {
    let manager = Manager::start().unwrap();
    let a = manager.list_from((0..10).collect::<Vec<i64>>()).unwrap();
    assert_eq!(a.get_range(..).unwrap(), (0..10).collect::<Vec<_>>());
    let b = manager.list::<i64>().unwrap();
    assert_eq!(b.get_range(..).unwrap(), Vec::<i64>::new());
    b.extend(0..5).unwrap();
    assert_eq!(b.get(2).unwrap(), 2);
    assert_eq!(b.get_range(2..).unwrap(), vec![2, 3, 4]);
    assert_eq!(b.get_range(2..=3).unwrap(), vec![2, 3]);
    b.extend_from(&b).unwrap();
    assert_eq!(b.to_vec().unwrap(), vec![0, 1, 2, 3, 4, 0, 1, 2, 3, 4]);
    assert!(b.contains(&3).unwrap());
    assert!(!b.contains(&7).unwrap());
    assert_eq!(b.count(&3).unwrap(), 2);
    assert_eq!(b.count(&9).unwrap(), 0);
    a.extend_from(&b).unwrap();
    assert_eq!(a.len().unwrap(), 20);
    assert_eq!(b.len().unwrap(), 10, "the source is unchanged");

    let e = manager.list_from(vec![a.clone(), b.clone()]).unwrap();
    a.push(100).unwrap();
    assert_eq!(e.get(0).unwrap().get_signed(-1).unwrap(), 100);
    manager.shutdown().unwrap();
}

/// Python's `a[2:5] = [...]` and `del a[2:5]` (`set_range` with fewer).
#[test]
fn test_list_slice_assignment() {
    let manager = Manager::start().unwrap();
    let a = manager.list_from((0..6).collect::<Vec<u8>>()).unwrap();
    a.set_range(2..4, [20, 30, 40]).unwrap();
    assert_eq!(a.to_vec().unwrap(), vec![0, 1, 20, 30, 40, 4, 5]);
    a.set_range(..2, []).unwrap();
    assert_eq!(a.to_vec().unwrap(), vec![20, 30, 40, 4, 5]);
    a.set_range(5.., [6, 7]).unwrap();
    assert_eq!(a.to_vec().unwrap(), vec![20, 30, 40, 4, 5, 6, 7]);
    a.set_range(.., [1]).unwrap();
    assert_eq!(a.to_vec().unwrap(), vec![1]);
    manager.shutdown().unwrap();
}

/// Bad slices and indices are typed errors and change nothing.
#[test]
fn bad_ranges_and_indices_are_typed_errors() {
    let manager = Manager::start().unwrap();
    let a = manager.list_from(vec![1u32, 2, 3]).unwrap();
    assert!(matches!(
        a.get_range(1..5),
        Err(Error::IndexOutOfRange { index: 5, len: 3 })
    ));
    assert!(matches!(
        a.get_range(4..),
        Err(Error::IndexOutOfRange { index: 4, len: 3 })
    ));
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = a.get_range(2..1);
    assert!(matches!(reversed, Err(Error::InvalidArgument(_))));
    assert!(matches!(
        a.set_range(2..9, [0]),
        Err(Error::IndexOutOfRange { index: 9, len: 3 })
    ));
    assert!(matches!(
        a.get_range(..=usize::MAX),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(a.to_vec().unwrap(), vec![1, 2, 3], "nothing changed");
    assert!(matches!(
        a.get_signed(-4),
        Err(Error::IndexOutOfRange { len: 3, .. })
    ));
    assert!(matches!(
        a.get_signed(3),
        Err(Error::IndexOutOfRange { index: 3, len: 3 })
    ));
    let empty = manager.list::<u32>().unwrap();
    assert!(matches!(
        empty.pop_signed(-1),
        Err(Error::IndexOutOfRange { len: 0, .. })
    ));
    manager.shutdown().unwrap();
}

/// CPython's `test_list_proxy_in_list`: `a[0][-1] = 55`, `a[1].pop()`.
#[test]
fn test_list_proxy_in_list() {
    let manager = Manager::start().unwrap();
    let inner: Vec<ListProxy<u32>> = (0..3)
        .map(|_| manager.list_from(vec![0, 1, 2]).unwrap())
        .collect();
    let a = manager.list_from(inner).unwrap();
    a.get(0).unwrap().set_signed(-1, 55).unwrap();
    assert_eq!(a.get(0).unwrap().to_vec().unwrap(), vec![0, 1, 55]);
    for i in 1..3 {
        assert_eq!(a.get(i).unwrap().to_vec().unwrap(), vec![0, 1, 2]);
    }
    assert_eq!(a.get(1).unwrap().pop_signed(-1).unwrap(), 2);
    assert_eq!(a.get_signed(-2).unwrap().len().unwrap(), 2);
    assert_eq!(a.get(0).unwrap().pop_signed(-3).unwrap(), 0);
    assert_eq!(a.get(0).unwrap().to_vec().unwrap(), vec![1, 55]);
    manager.shutdown().unwrap();
}

#[test]
fn sort_sort_by_key_and_sort_by_are_stable() {
    let manager = Manager::start().unwrap();
    let words = ["pear", "fig", "apple", "kiwi", "banana", "date"].map(String::from);
    let l = manager.list_from(words.to_vec()).unwrap();
    l.sort().unwrap();
    assert_eq!(
        l.to_vec().unwrap(),
        ["apple", "banana", "date", "fig", "kiwi", "pear"]
    );
    l.sort_by_key(|w| w.len()).unwrap();
    assert_eq!(
        l.to_vec().unwrap(),
        ["fig", "date", "kiwi", "pear", "apple", "banana"],
        "stable: equal lengths keep their order"
    );
    l.sort_by(|a, b| b.cmp(a)).unwrap();
    assert_eq!(
        l.to_vec().unwrap(),
        ["pear", "kiwi", "fig", "date", "banana", "apple"]
    );
    let empty = manager.list::<u8>().unwrap();
    empty.sort().unwrap();
    assert!(empty.is_empty().unwrap());
    manager.shutdown().unwrap();
}

/// Sorting keeps the managed objects the values refer to.
#[test]
fn sorting_a_list_of_proxies_keeps_them() {
    let manager = Manager::start().unwrap();
    let lists: Vec<ListProxy<u32>> = [3u32, 1, 2]
        .iter()
        .map(|&n| manager.list_from(vec![n; n as usize]).unwrap())
        .collect();
    let outer = manager.list_from(lists).unwrap();
    outer.sort_by_key(|l| l.len().unwrap()).unwrap();
    let lens: Vec<usize> = outer.iter().unwrap().map(|l| l.len().unwrap()).collect();
    assert_eq!(lens, vec![1, 2, 3]);
    assert_eq!(outer.get(2).unwrap().to_vec().unwrap(), vec![3, 3, 3]);
    manager.shutdown().unwrap();
}

fn push_and_sort(args: (ListProxy<u32>, u32)) {
    let (l, base) = args;
    for i in 0..20 {
        l.push(base * 100 + (19 - i)).unwrap();
        l.sort().unwrap();
    }
}

/// Children push and sort at once: every sort applies to the list it was
/// computed from (or is redone), so nothing is lost and the end is sorted.
#[test]
fn concurrent_sorts_lose_nothing() {
    for m in METHODS {
        let manager = Manager::start_with(m).unwrap();
        let l = manager.list::<u32>().unwrap();
        util::run_each(m, push_and_sort, (0..3).map(|b| (l.clone(), b)));
        let got = l.to_vec().unwrap();
        let mut expected: Vec<u32> = (0..3)
            .flat_map(|b| (0..20).map(move |i| b * 100 + i))
            .collect();
        expected.sort();
        // The last sort ran after the last push of its child, but another
        // child may have pushed after it: sort once more to compare sets.
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, expected, "{m:?}");
        l.sort().unwrap();
        assert_eq!(l.to_vec().unwrap(), expected, "{m:?}");
        manager.shutdown().unwrap();
    }
}

/// CPython's `test_dict`: `d.copy()` is a plain dict equal to the proxy's.
#[test]
fn test_dict() {
    let manager = Manager::start().unwrap();
    let d = manager.dict::<u32, char>().unwrap();
    for i in 65..70 {
        d.insert(i, char::from_u32(i).unwrap()).unwrap();
    }
    let copy: HashMap<u32, char> = d.copy().unwrap();
    let expected: HashMap<u32, char> = (65..70).map(|i| (i, char::from_u32(i).unwrap())).collect();
    assert_eq!(copy, expected);
    d.clear().unwrap();
    assert_eq!(copy.len(), 5, "a copy, not a view");
    manager.shutdown().unwrap();
}

fn pop_all(d: DictProxy<u32, u32>) -> Vec<(u32, u32)> {
    let mut got = Vec::new();
    loop {
        match d.popitem() {
            Ok(kv) => got.push(kv),
            Err(Error::KeyNotFound(_)) => return got,
            Err(e) => panic!("{e}"),
        }
    }
}

/// `popitem` from several processes at once: each entry goes to exactly
/// one of them, and an empty dict is `KeyNotFound`.
#[test]
fn test_dict_popitem() {
    for m in METHODS {
        let manager = Manager::start_with(m).unwrap();
        let d = manager.dict_from((0..200).map(|i| (i, i * 2))).unwrap();
        let mut all: Vec<(u32, u32)> = util::run_each(m, pop_all, (0..3).map(|_| d.clone()))
            .into_iter()
            .flatten()
            .collect();
        all.sort();
        assert_eq!(
            all,
            (0..200).map(|i| (i, i * 2)).collect::<Vec<_>>(),
            "{m:?}"
        );
        assert!(d.is_empty().unwrap());
        match d.popitem() {
            Err(Error::KeyNotFound(what)) => assert!(what.contains("empty"), "{what}"),
            other => panic!("{other:?}"),
        }
        manager.shutdown().unwrap();
    }
}

/// A popped entry's proxies come with it, and the server frees the
/// objects once the popped proxy goes.
#[test]
fn popitem_hands_over_the_proxies_it_held() {
    let manager = Manager::start().unwrap();
    let d = manager.dict::<u8, ListProxy<u8>>().unwrap();
    d.insert(1, manager.list_from(vec![7u8]).unwrap()).unwrap();
    let (k, l) = d.popitem().unwrap();
    assert_eq!((k, l.to_vec().unwrap()), (1, vec![7]));
    drop(l);
    drop(d);
    assert!(eventually(PROMPTLY, || manager
        .number_of_objects()
        .unwrap()
        == 0));
    manager.shutdown().unwrap();
}

/// CPython's `test_namespace`: the repr lists the attributes but not the
/// underscored ones (values stay encoded in the server, so types show).
#[test]
fn test_namespace() {
    let manager = Manager::start().unwrap();
    let n = manager.namespace().unwrap();
    n.set("name", "Bob".to_string()).unwrap();
    n.set("job", "Builder".to_string()).unwrap();
    n.set("_hidden", "hidden".to_string()).unwrap();
    assert_eq!(
        (
            n.get::<String>("name").unwrap(),
            n.get::<String>("job").unwrap()
        ),
        ("Bob".to_string(), "Builder".to_string())
    );
    n.delete("job").unwrap();
    assert_eq!(
        format!("{n:?}"),
        "Namespace { name: alloc::string::String }"
    );
    assert!(n.contains("name").unwrap());
    assert!(!n.contains("job").unwrap());
    n.set("age", 42u8).unwrap();
    assert_eq!(
        format!("{n:?}"),
        "Namespace { age: u8, name: alloc::string::String }"
    );
    assert_eq!(
        n.attributes().unwrap().len(),
        3,
        "underscored ones included"
    );
    manager.shutdown().unwrap();
}

/// Regression: `extend`, `list_from`, `update` and `dict_from` dropped each
/// value once encoded, so a proxy moved in released its object before the
/// server took the container's reference ("no longer exists").
#[test]
fn proxies_moved_into_a_container_stay_alive() {
    let manager = Manager::start().unwrap();
    let d = manager
        .dict_from([(1u8, manager.list_from(vec![5u8]).unwrap())])
        .unwrap();
    assert_eq!(d.get(&1).unwrap().unwrap().to_vec().unwrap(), vec![5]);
    let l = manager.list::<ListProxy<u8>>().unwrap();
    l.extend([manager.list_from(vec![6u8]).unwrap()]).unwrap();
    l.set_range(1.., [manager.list_from(vec![7u8]).unwrap()])
        .unwrap();
    let inner: Vec<Vec<u8>> = l.iter().unwrap().map(|p| p.to_vec().unwrap()).collect();
    assert_eq!(inner, vec![vec![6], vec![7]]);
    manager.shutdown().unwrap();
}

/// A client that lies (a range end that is not 8 bytes, a start past its
/// end, an order that is no permutation, a stale digest) gets an error
/// or `false`, and the list is unchanged.
#[test]
fn lying_range_and_order_requests_change_nothing() {
    use multiproc::Shareable;
    use multiproc::manager::protocol::{
        ArchivedRemoteError, ArchivedResponse, Blob, Call, Method, Request, access_response,
        encode_request, list_digest, u64_arg,
    };
    use multiproc::rkyv::util::AlignedVec;
    let manager = Manager::start().unwrap();
    let l = manager.list_from(vec![3u8, 1, 2]).unwrap();
    let id = multiproc_proxy::ProxyRepr::decode(&l.encode().unwrap())
        .unwrap()
        .object;
    let mut conn = multiproc::manager::server::connect(manager.address()).unwrap();
    let mut resp = AlignedVec::new();
    let mut ask = |method: Method,
                   index: i64,
                   key: Option<&[u8]>,
                   expected: Option<&[u8]>,
                   batch: &[[u8; 8]]| {
        let req = Request::Call(Call {
            object: id,
            method: method as u32,
            index,
            key: key.map(Blob::plain),
            value: None,
            expected: expected.map(Blob::plain),
            batch: batch.iter().map(|b| Blob::plain(b)).collect(),
            fingerprint: 0,
            type_name: "",
            wait_us: 0,
        });
        conn.end
            .round_trip(&encode_request(&req, AlignedVec::new()).unwrap(), &mut resp)
            .unwrap();
        match access_response(&resp).unwrap() {
            ArchivedResponse::Error(ArchivedRemoteError::Malformed(_)) => "malformed",
            ArchivedResponse::Error(ArchivedRemoteError::IndexOutOfRange { .. }) => "range",
            ArchivedResponse::Bool(false) => "stale",
            ArchivedResponse::Bool(true) => "applied",
            _ => "other",
        }
    };
    assert_eq!(
        ask(Method::ListGetRange, 0, Some(b"short"), None, &[]),
        "malformed"
    );
    assert_eq!(ask(Method::ListGetRange, 0, None, None, &[]), "malformed");
    assert_eq!(
        ask(Method::ListGetRange, 2, Some(&u64_arg(1)), None, &[]),
        "range"
    );
    assert_eq!(
        ask(Method::ListGetRange, -1, Some(&u64_arg(1)), None, &[]),
        "range"
    );
    assert_eq!(
        ask(Method::ListSetRange, 0, Some(&u64_arg(4)), None, &[]),
        "range"
    );
    let items: Vec<Vec<u8>> = [3u8, 1, 2]
        .iter()
        .map(|v| v.encode().unwrap().to_vec())
        .collect();
    let digest = list_digest(items.iter().map(|v| &v[..]));
    let order = |o: &[u64]| o.iter().map(|&i| u64_arg(i)).collect::<Vec<_>>();
    assert_eq!(
        ask(
            Method::ListApplyOrder,
            0,
            None,
            Some(&[0; 32]),
            &order(&[1, 2, 0])
        ),
        "stale"
    );
    assert_eq!(
        ask(Method::ListApplyOrder, 0, None, None, &order(&[1, 2, 0])),
        "malformed"
    );
    assert_eq!(
        ask(
            Method::ListApplyOrder,
            0,
            None,
            Some(&digest),
            &order(&[1, 1, 0])
        ),
        "malformed"
    );
    assert_eq!(
        ask(
            Method::ListApplyOrder,
            0,
            None,
            Some(&digest),
            &order(&[1, 2])
        ),
        "malformed"
    );
    assert_eq!(
        ask(
            Method::ListApplyOrder,
            0,
            None,
            Some(&digest),
            &order(&[1, 2, 3])
        ),
        "malformed"
    );
    assert_eq!(l.to_vec().unwrap(), vec![3, 1, 2], "nothing changed");
    assert_eq!(
        ask(
            Method::ListApplyOrder,
            0,
            None,
            Some(&digest),
            &order(&[1, 2, 0])
        ),
        "applied"
    );
    assert_eq!(l.to_vec().unwrap(), vec![1, 2, 3]);
    drop(conn);
    manager.shutdown().unwrap();
}

/// Overwrites the list's first element with a new, large value until told
/// to stop (a writer that never stops on its own), counting its writes.
fn overwrite_until_stopped(args: (ListProxy<u64>, RawValue<u64>, RawValue<u32>)) {
    let (l, written, stop) = args;
    let mut n: u64 = 0;
    let give_up = std::time::Instant::now() + PROMPTLY * 30;
    while stop.load() == 0 && std::time::Instant::now() < give_up {
        n += 1;
        l.set(0, 1_000_000 + n).unwrap();
        written.store(n);
    }
}

/// `sort` while another client never stops changing the list: each attempt
/// finds its snapshot gone, so `sort_timeout` gives up with `Timeout`
/// instead of retrying forever, and leaves the writer's changes in place.
/// Once the writer stops, a sort succeeds.
#[test]
fn sort_gives_up_against_a_writer_that_never_stops() {
    for m in METHODS {
        let manager = Manager::start_with(m).unwrap();
        // Never sorted while the writer runs: its first element is the largest.
        let l = manager.list_from(vec![5u64, 1, 2]).unwrap();
        let written = RawValue::new(0u64).unwrap();
        let stop = RawValue::new(0u32).unwrap();
        let mut writer = Process::new(
            overwrite_until_stopped,
            (l.clone(), written.clone(), stop.clone()),
        )
        .start_method(m);
        writer.start().unwrap();
        assert!(eventually(PROMPTLY, || written.load() > 0), "{m:?}");
        // Each attempt compares after its snapshot; waiting there for two
        // more writes makes sure the list changed before it is applied.
        let mut attempts_raced = 0u32;
        let r = l.sort_by_timeout(Duration::from_millis(200), |a, b| {
            let seen = written.load();
            assert!(
                eventually(PROMPTLY, || written.load() >= seen + 2),
                "{m:?}: the writer stalled"
            );
            attempts_raced += 1;
            a.cmp(b)
        });
        assert!(matches!(r, Err(Error::Timeout(_))), "{m:?}: {r:?}");
        assert!(attempts_raced > 0);
        assert_eq!(l.len().unwrap(), 3, "{m:?}");
        assert!(
            l.get(0).unwrap() > 1_000_000,
            "{m:?}: the writer's value stays"
        );
        stop.store(1);
        writer.join_timeout(PROMPTLY * 6).unwrap();
        l.sort_timeout(PROMPTLY).unwrap();
        let got = l.to_vec().unwrap();
        assert_eq!(&got[..2], &[1, 2], "{m:?}");
        assert!(got[2] > 1_000_000, "{m:?}");
        manager.shutdown().unwrap();
    }
}
