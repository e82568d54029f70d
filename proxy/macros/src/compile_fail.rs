//! What the attribute refuses, compiled for real (each example must fail to
//! build; `tests.rs` checks the messages themselves), and what it accepts.
//!
//! A method without its number:
//! ```compile_fail
//! #[derive(Default)]
//! struct Counter { n: i64 }
//! #[multiproc::remote(proxy = CounterProxy)]
//! impl Counter {
//!     #[remote] fn get(&self) -> i64 { self.n }
//! }
//! ```
//! `self` by value:
//! ```compile_fail
//! #[derive(Default)]
//! struct Counter { n: i64 }
//! #[multiproc::remote(proxy = CounterProxy)]
//! impl Counter {
//!     #[remote(1)] fn into_n(self) -> i64 { self.n }
//! }
//! ```
//! An associated function (no receiver):
//! ```compile_fail
//! #[derive(Default)]
//! struct Counter { n: i64 }
//! #[multiproc::remote(proxy = CounterProxy)]
//! impl Counter {
//!     #[remote(1)] fn zero() -> i64 { 0 }
//! }
//! ```
//! A generic method:
//! ```compile_fail
//! #[derive(Default)]
//! struct Counter { n: i64 }
//! #[multiproc::remote(proxy = CounterProxy)]
//! impl Counter {
//!     #[remote(1)] fn add<T: Into<i64>>(&mut self, by: T) { self.n += by.into() }
//! }
//! ```
//! A pattern argument:
//! ```compile_fail
//! #[derive(Default)]
//! struct Counter { n: i64 }
//! #[multiproc::remote(proxy = CounterProxy)]
//! impl Counter {
//!     #[remote(1)] fn add(&mut self, (a, b): (i64, i64)) { self.n += a + b }
//! }
//! ```
//! A borrowed argument:
//! ```compile_fail
//! #[derive(Default)]
//! struct Names { all: Vec<String> }
//! #[multiproc::remote(proxy = NamesProxy)]
//! impl Names {
//!     #[remote(1)] fn add(&mut self, name: &str) { self.all.push(name.into()) }
//! }
//! ```
//! An argument that cannot be encoded:
//! ```compile_fail
//! struct NotShareable(std::rc::Rc<u8>);
//! #[derive(Default)]
//! struct Counter { n: i64 }
//! #[multiproc::remote(proxy = CounterProxy)]
//! impl Counter {
//!     #[remote(1)] fn take(&mut self, x: NotShareable) { self.n += *x.0 as i64 }
//! }
//! ```
//! A trait impl:
//! ```compile_fail
//! #[derive(Default)]
//! struct Counter { n: i64 }
//! #[multiproc::remote(proxy = CounterProxy)]
//! impl Clone for Counter {
//!     #[remote(1)] fn clone(&self) -> Self { Counter { n: self.n } }
//! }
//! ```
//! A generic type:
//! ```compile_fail
//! #[derive(Default)]
//! struct Cell<T> { v: T }
//! #[multiproc::remote(proxy = CellProxy)]
//! impl<T: Send + Default + 'static> Cell<T> {
//!     #[remote(1)] fn take(&mut self) -> T { std::mem::take(&mut self.v) }
//! }
//! ```
//! No proxy name:
//! ```compile_fail
//! #[derive(Default)]
//! struct Counter { n: i64 }
//! #[multiproc::remote]
//! impl Counter {
//!     #[remote(1)] fn get(&self) -> i64 { self.n }
//! }
//! ```
//! On a method instead of its impl block:
//! ```compile_fail
//! use multiproc::remote;
//! #[derive(Default)]
//! struct Counter { n: i64 }
//! impl Counter {
//!     #[remote(1)] fn get(&self) -> i64 { self.n }
//! }
//! ```
//!
//! Accepted, without a warning: arguments and results of any `Shareable`
//! type, no arguments, no result, `Self`, `mut` arguments, names the
//! generated code also uses, and a private type with a public proxy.
//! ```
//! #![deny(warnings)]
//! use multiproc::rkyv::{Archive, Deserialize, Serialize};
//! #[derive(Default, Archive, Serialize, Deserialize)]
//! #[rkyv(crate = multiproc::rkyv)]
//! struct Counter { n: i64 }
//! #[multiproc::remote(proxy = CounterProxy)]
//! impl Counter {
//!     #[remote(10)] fn set(&mut self, mut n: i64) { n += 0; self.n = n }
//!     #[remote(11)] fn args(&self, args: u32, method: u32, out: String) -> (u32, u32, String) {
//!         (args, method, out)
//!     }
//!     #[remote(12)] fn snapshot(&self) -> Self { Counter { n: self.n } }
//!     #[remote(13)] fn replace(&mut self, other: Self) -> Self { std::mem::replace(self, other) }
//! }
//! fn uses(p: &CounterProxy) -> multiproc::Result<i64> {
//!     p.set(1)?;
//!     let (_a, _m, _o) = p.args(1, 2, "three".into())?;
//!     Ok(p.replace(p.snapshot()?)?.n)
//! }
//! let _ = uses;
//! ```
//! Through `multiproc-proxy` without the facade:
//! ```
//! #[derive(Default)]
//! struct Counter { n: i64 }
//! #[multiproc_proxy::remote(proxy = CounterProxy, crate = ::multiproc_proxy)]
//! impl Counter {
//!     #[remote(1)] fn get(&self) -> i64 { self.n }
//! }
//! fn uses(p: &CounterProxy) -> multiproc_proxy::__private::Result<i64> { p.get() }
//! let _ = uses;
//! ```
