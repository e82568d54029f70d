//! The `#[multiproc::remote]` attribute and `#[derive(multiproc::Shareable)]`
//! (use them through the `multiproc` crate).
//!
//! See [`macro@remote`] and [`macro@Shareable`].

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote};
use syn::ItemImpl;

mod emit;
mod model;
mod shareable;
mod shm_safe;

/// Declares which methods of a type a remote manager serves, and generates
/// the typed proxy clients call them through.
///
/// Put it on an inherent impl block, name the proxy type, and mark each
/// method clients may call with `#[remote(N)]`; unmarked methods stay
/// private to the server:
///
/// ```
/// #[derive(Default)]
/// struct Counter {
///     n: i64,
/// }
///
/// #[multiproc::remote(proxy = CounterProxy)]
/// impl Counter {
///     /// Adds `by`; returns the new count.
///     #[remote(1)]
///     fn incr(&mut self, by: i64) -> i64 {
///         self.n += by;
///         self.n
///     }
///     #[remote(2)]
///     fn get(&self) -> i64 {
///         self.n
///     }
///     #[remote(3)]
///     fn reset(&mut self) {
///         self.n = 0;
///     }
///     fn not_served(&self) -> bool {
///         self.n == 0
///     }
/// }
///
/// multiproc::init();
/// let m = multiproc::BaseManager::new()
///     .authkey(b"k")
///     .register_object::<Counter>("counter")
///     .start()
///     .unwrap();
/// // In any process that reaches the server (a worker on another host too):
/// let counter: CounterProxy = m.get_object("counter").unwrap();
/// assert_eq!(counter.incr(5).unwrap(), 5);
/// assert_eq!(counter.get().unwrap(), 5);
/// counter.reset().unwrap();
/// assert_eq!(counter.get().unwrap(), 0);
/// m.shutdown().unwrap();
/// ```
///
/// The server makes the object with `Default::default()` when it starts
/// ([`BaseManager::register_object`]), and runs one call at a time on it.
/// A method that panics is `Error::Remote` carrying the panic message for
/// its caller (as Python re-raises a served method's exception); what the
/// method changed before it panicked stays changed, and the server and the
/// object serve on.
/// The type must be `Default + Send + 'static`; each served method takes
/// `&self` or `&mut self`, then any number of named arguments, and returns
/// a value or nothing (`()`); argument and result types must be
/// `Shareable` (they travel encoded).
///
/// The attribute is `multiproc::remote` (also `multiproc_proxy::remote`);
/// the `#[remote(N)]` markers need no import, the attribute reads and
/// removes them. One impl block per type carries the attribute (a second
/// would implement the served traits twice); other impl blocks of the type
/// are ordinary.
///
/// The impl block is kept as written (without the `#[remote(N)]` markers).
/// Beside it the attribute generates:
///
/// - `impl ServedObject for Counter`: the server's dispatch, which decodes
///   the arguments of method `N` (checked: a bad frame is an error for that
///   caller, never a panic) and encodes the result;
/// - `impl RemoteObject for Counter`, whose `TYPE_NAME` both sides compare
///   when a client asks for the object;
/// - `pub struct CounterProxy` ([`UserProxy`]), with one `pub fn` per
///   served method: same name and arguments, taking `&self`, returning
///   `multiproc::Result<R>` (`counter.incr(5)?`). The served method's docs
///   are copied onto it. It stays in the process that made it (neither
///   `Shareable` nor `Clone`, unlike a Python proxy): another process gets
///   its own, from the manager's address and the object's name.
///
/// # Method numbers are the wire format
///
/// A call carries its method's number, not its name. The numbers are
/// required, and must differ within the type: keep each method's number
/// when you rename, reorder or add methods, and give a method whose
/// arguments or result change a new number (retiring the old one), so a
/// client built from older code gets `Error::Protocol` (an unknown method)
/// instead of arguments that may decode as something else and a wrong
/// answer. Numbers are not taken from declaration order, because moving a
/// method would silently change what old clients call.
///
/// # Arguments
///
/// - `proxy = Name` (required): the proxy type to generate.
/// - `name = "…"` (optional; any `&'static str` constant expression): the
///   `TYPE_NAME` both sides compare. By default
///   it is the type's module path and name (`my_crate::jobs::Counter`), the
///   same as [`remote_object!`] gives, so a master and a worker built from
///   different binaries (whose module paths differ) must agree on one here.
/// - `crate = path` (optional): where the `multiproc` items are, if the
///   crate is not a dependency named `multiproc` (e.g. `crate = ::multiproc_proxy`).
///
/// # Refused at compile time
///
/// Each with an error pointing at what to change: trait impls and generic
/// impl blocks; a marked method that is generic, `async` or `unsafe`, takes
/// `self` by value or has no receiver, takes a pattern argument
/// (`(a, b): (i32, i32)`), or takes or returns a reference, `impl Trait`
/// or `dyn Trait`; `#[remote]` without a number, a number used twice, two
/// numbers on one method; `#[remote(N)]` on anything but a method; a block
/// without any marked method.
///
/// ```compile_fail
/// #[derive(Default)]
/// struct Counter { n: i64 }
/// #[multiproc::remote(proxy = CounterProxy)]
/// impl Counter {
///     #[remote(1)] fn incr(&mut self, by: i64) -> i64 { self.n += by; self.n }
///     #[remote(1)] fn get(&self) -> i64 { self.n } // error: number 1 is `incr`'s
/// }
/// ```
///
/// # `remote_object!`
///
/// [`remote_object!`] declares the same things in a macro of its own
/// (`1 => fn incr(by: i64) -> i64;`), repeating each signature; both
/// generate the same code and speak the same wire format. The attribute is
/// the recommended form: the compiler checks the served methods where they
/// are written.
///
/// [`BaseManager::register_object`]: ../multiproc/struct.BaseManager.html#method.register_object
/// [`UserProxy`]: ../multiproc/trait.UserProxy.html
/// [`remote_object!`]: ../multiproc/macro.remote_object.html
#[proc_macro_attribute]
pub fn remote(
    attr: proc_macro::TokenStream,
    item: proc_macro::TokenStream,
) -> proc_macro::TokenStream {
    expand(attr.into(), item.into()).into()
}

/// Makes a struct or enum of yours [`Shareable`]: it can then be a process's
/// argument or result, a `Queue` or `Pipe` message, a manager's dict or
/// list value, a pool task or its result, in a child started by spawn or
/// by fork. No other attribute and no `rkyv` dependency are needed.
///
/// ```
/// use multiproc::{Process, Shareable};
///
/// #[derive(Shareable, Debug, PartialEq)]
/// struct Order {
///     id: u64,
///     items: Vec<String>,
///     status: Status,
/// }
///
/// #[derive(Shareable, Debug, PartialEq)]
/// enum Status {
///     Open,
///     Shipped { tracking: String },
///     Cancelled(Option<String>),
/// }
///
/// fn ship(mut order: Order) -> Order {
///     order.status = Status::Shipped { tracking: format!("T-{}", order.id) };
///     order
/// }
///
/// multiproc::init();
/// let order = Order { id: 7, items: vec!["tea".into()], status: Status::Open };
/// let mut p = Process::new(ship, order);
/// p.start().unwrap();
/// let shipped = p.join().unwrap();
/// assert_eq!(shipped.status, Status::Shipped { tracking: "T-7".into() });
/// ```
///
/// Structs with named fields, tuple structs, unit structs and enums (with
/// data or without) are accepted; so are generic ones (`Pair<T>` is
/// `Shareable` when `T` is), recursive ones (`enum Tree { Leaf(i64),
/// Node(Vec<Tree>) }`) and ones whose fields are other derived types, the
/// crate's handles (`Queue`, `Value`, `Lock`, proxies …) or anything else
/// `Shareable`. A type that borrows (has a lifetime parameter), an enum
/// without variants and a union are refused.
///
/// A field whose type cannot travel (a `File`, an `Rc`, a reference …) is
/// an error at that field:
///
/// ```compile_fail
/// #[derive(multiproc::Shareable)]
/// struct Job {
///     id: u64,
///     log: std::fs::File, // error: `File` cannot travel to another process
/// }
/// ```
///
/// A generic parameter's type is checked where the type is used:
/// `Process::new(f, Pair { first: Rc::new(1), second: Rc::new(2) })` does
/// not compile, because `Rc<i32>` is not `Send`.
///
/// The encoding is [rkyv](https://docs.rs/rkyv)'s, checked on arrival: the
/// derive generates rkyv's `Archive`, `Serialize` and `Deserialize` for the
/// type, through the `multiproc::rkyv` re-export. If the `multiproc` crate
/// is not a dependency under that name, say where it is:
/// `#[shareable(crate = ::my_renamed_multiproc)]`.
///
/// [`Shareable`]: ../multiproc/trait.Shareable.html
#[proc_macro_derive(Shareable, attributes(shareable))]
pub fn derive_shareable(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    shareable::derive(input.into()).into()
}

/// Implements `multiproc::ShmSafe` for a `#[repr(C)]` struct of `ShmSafe`
/// fields (numbers, arrays of them, other such structs) with no padding
/// byte, and checks all three at compile time: the checked way to put your
/// own struct in a `Value`, `Array` or `RawValue` (a ctypes `Structure`).
///
/// ```
/// #[derive(Clone, Copy, multiproc::ShmSafe)]
/// #[repr(C)]
/// struct Point {
///     x: f64,
///     y: f64,
/// }
/// let p = multiproc::Value::new(Point { x: 1.0, y: 2.0 }).unwrap();
/// assert_eq!(p.get().y, 2.0);
/// ```
///
/// Padding is refused (add explicit fields for it); so are a field that is
/// not `ShmSafe` (`bool`, a reference, a `String`), a struct without
/// `#[repr(C)]`, a packed one, an enum and a generic struct:
///
/// ```compile_fail
/// #[derive(Clone, Copy, multiproc::ShmSafe)]
/// #[repr(C)]
/// struct Padded {
///     tag: u8, // 7 padding bytes follow
///     value: u64,
/// }
/// ```
///
/// If the `multiproc` crate is not a dependency under that name, say where
/// it is: `#[shm_safe(crate = ::my_renamed_multiproc)]`.
#[proc_macro_derive(ShmSafe, attributes(shm_safe))]
pub fn derive_shm_safe(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    shm_safe::derive(input.into()).into()
}

/// The attribute's expansion: the impl block (markers removed) and the
/// generated items, or the errors and the block alone.
fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    match served(attr, item) {
        Ok(tokens) => tokens,
        Err((kept, e)) => {
            let e = e.into_compile_error();
            quote!(#e #kept)
        }
    }
}

/// Checks and generates; on refusal, all the errors and what to keep (the
/// block without markers, so its own code is still checked and used).
fn served(attr: TokenStream, item: TokenStream) -> Result<TokenStream, (TokenStream, syn::Error)> {
    let mut block = match syn::parse2::<ItemImpl>(item.clone()) {
        Ok(block) => block,
        Err(_) => {
            let e = syn::Error::new(
                Span::call_site(),
                "#[multiproc::remote(proxy = …)] goes on an inherent impl block \
                 (`impl Counter { … }`); inside it, mark the served methods #[remote(N)]",
            );
            return Err((item, e));
        }
    };
    let args = syn::parse2::<model::Args>(attr);
    let mut errors = model::Errors::default();
    if let Err(e) = &args {
        errors.push(e.clone());
    }
    let methods = model::read(&mut block, &mut errors);
    let refused = |e| (block.to_token_stream(), e);
    errors.into_result().map_err(refused)?;
    let args = args.map_err(refused)?;
    let generated = emit::served(&args, &block.self_ty, &methods);
    Ok(quote!(#block #generated))
}

#[cfg(doctest)]
mod compile_fail;
#[cfg(test)]
mod tests;
