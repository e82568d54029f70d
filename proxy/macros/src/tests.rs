//! What the attribute accepts, generates and refuses (the messages users see).

use proc_macro2::TokenStream;

use super::served;

const ARGS: &str = "proxy = CounterProxy";

fn tokens(s: &str) -> TokenStream {
    s.parse().expect("test input is valid tokens")
}

/// The expansion of an accepted block.
fn accepted(attr: &str, item: &str) -> String {
    match served(tokens(attr), tokens(item)) {
        Ok(out) => out.to_string(),
        Err((_, e)) => panic!("refused: {:?}", messages(e)),
    }
}

fn messages(e: syn::Error) -> Vec<String> {
    e.into_iter().map(|e| e.to_string()).collect()
}

/// The errors for a refused block, and what is re-emitted.
fn refused(attr: &str, item: &str) -> (Vec<String>, String) {
    match served(tokens(attr), tokens(item)) {
        Ok(out) => panic!("accepted: {out}"),
        Err((kept, e)) => (messages(e), kept.to_string()),
    }
}

/// Asserts the one error for `item` mentions `needle`.
fn refuses(item: &str, needle: &str) {
    let (errors, _) = refused(ARGS, item);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains(needle), "{needle:?} not in {errors:?}");
}

const COUNTER: &str = "impl Counter {
    /// Adds.
    #[remote(1)] fn incr(&mut self, mut by: i64) -> i64 { self.n += by; self.n }
    #[remote(2)] fn get(&self) -> i64 { self.n }
    #[remote(7)] fn reset(&mut self) { self.n = 0 }
    #[remote(3)] fn swap(&mut self, other: Self) -> Self { std::mem::replace(self, other) }
    fn private_helper(&self) {}
}";

#[test]
fn the_block_is_kept_without_its_markers() {
    let out = accepted(ARGS, COUNTER);
    assert!(!out.contains("# [remote"), "{out}");
    assert!(out.contains("fn private_helper"), "{out}");
    assert!(out.contains("fn incr (& mut self , mut by : i64)"), "{out}");
}

#[test]
fn methods_dispatch_by_their_numbers_and_the_proxy_has_one_fn_each() {
    let out = accepted(ARGS, COUNTER);
    for arm in ["1 =>", "2 =>", "7 =>", "3 =>"] {
        assert!(out.contains(arm), "{arm} in {out}");
    }
    assert!(!out.contains("private_helper (self"), "{out}");
    assert!(out.contains("pub struct CounterProxy"), "{out}");
    assert!(
        out.contains(
            "pub fn incr (& self , by : i64) -> :: multiproc :: __private :: Result < i64 >"
        ),
        "{out}"
    );
    assert!(out.contains("self . handle . call (1 , & (by ,))"), "{out}");
    // A unit method returns `()`; no arguments travel as `()`.
    assert!(
        out.contains("pub fn reset (& self) -> :: multiproc :: __private :: Result < () >"),
        "{out}"
    );
    assert!(out.contains("self . handle . call (7 , & ())"), "{out}");
    // `Self` in the proxy would be the proxy: it is spelled out.
    assert!(
        out.contains("pub fn swap (& self , other : Counter) -> :: multiproc :: __private :: Result < Counter >"),
        "{out}"
    );
    // The served method's docs are the proxy method's.
    assert!(
        out.contains("impl CounterProxy { # [doc = \" Adds.\"]"),
        "{out}"
    );
}

#[test]
fn the_type_name_and_crate_path_can_be_given() {
    let out = accepted(
        "proxy = CounterProxy, name = \"demo::Counter\", crate = ::multiproc_proxy",
        COUNTER,
    );
    assert!(
        out.contains("const TYPE_NAME : & 'static str = \"demo::Counter\""),
        "{out}"
    );
    assert!(
        out.contains(":: multiproc_proxy :: __private :: ServedObject"),
        "{out}"
    );
    assert!(!out.contains(":: multiproc ::"), "{out}");
    let default = accepted(ARGS, COUNTER);
    assert!(
        default.contains("concat ! (module_path ! () , \"::\" , stringify ! (Counter))"),
        "{default}"
    );
}

#[test]
fn cfg_attributes_follow_the_method_into_the_generated_code() {
    let out = accepted(
        ARGS,
        "impl Counter { #[cfg(unix)] #[remote(1)] fn get(&self) -> i64 { 0 } }",
    );
    // The method itself, its dispatch arm, its name's arm and its proxy method.
    assert_eq!(out.matches("# [cfg (unix)]").count(), 4, "{out}");
}

#[test]
fn the_arguments_are_checked() {
    let (errors, kept) = refused("", COUNTER);
    assert!(errors[0].contains("proxy = CounterProxy"), "{errors:?}");
    assert!(!kept.contains("# [remote"), "{kept}");
    let (errors, _) = refused("proxy = A, proxy = B", COUNTER);
    assert!(errors[0].contains("`proxy` is given twice"), "{errors:?}");
    let (errors, _) = refused("proxy = A, wire = 2", COUNTER);
    assert!(errors[0].contains("unknown argument `wire`"), "{errors:?}");
}

#[test]
fn method_numbers_are_required_and_unique() {
    refuses(
        "impl C { #[remote] fn get(&self) -> i64 { 0 } }",
        "give the method its number: #[remote(1)]",
    );
    refuses(
        "impl C { #[remote(one)] fn get(&self) -> i64 { 0 } }",
        "give the method its number",
    );
    refuses(
        "impl C { #[remote(-1)] fn get(&self) -> i64 { 0 } }",
        "a `u32` literal",
    );
    refuses(
        "impl C { #[remote(4294967296)] fn get(&self) -> i64 { 0 } }",
        "a `u32` literal",
    );
    refuses(
        "impl C { #[remote(1)] fn a(&self) {} #[remote(1)] fn b(&self) {} }",
        "method number 1 is already `a`'s",
    );
    refuses(
        "impl C { #[remote(1)] #[remote(2)] fn a(&self) {} }",
        "a method has one number",
    );
}

#[test]
fn receivers_must_be_shared_or_mutable_references() {
    refuses(
        "impl C { #[remote(1)] fn take(self) -> i64 { 0 } }",
        "`self` by value would consume the server's object",
    );
    refuses(
        "impl C { #[remote(1)] fn boxed(self: Box<Self>) {} }",
        "write the receiver as `&self` or `&mut self`",
    );
    refuses(
        "impl C { #[remote(1)] fn new(n: i64) -> i64 { n } }",
        "a served method takes `&self` or `&mut self`",
    );
}

#[test]
fn signatures_must_be_concrete_and_encodable() {
    refuses(
        "impl C { #[remote(1)] fn g<T>(&self, t: T) {} }",
        "a generic method cannot be served",
    );
    refuses(
        "impl C { #[remote(1)] fn g(&self) where Self: Sized {} }",
        "a generic method cannot be served",
    );
    refuses(
        "impl C { #[remote(1)] fn p(&self, (a, b): (i32, i32)) {} }",
        "name this argument",
    );
    refuses(
        "impl C { #[remote(1)] fn p(&self, _: i32) {} }",
        "name this argument",
    );
    refuses(
        "impl C { #[remote(1)] fn s(&self, s: &str) {} }",
        "arguments travel encoded: take an owned type",
    );
    refuses(
        "impl C { #[remote(1)] fn s(&self) -> &str { \"\" } }",
        "the result travels encoded: take an owned type",
    );
    refuses(
        "impl C { #[remote(1)] fn s(&self) -> impl Copy { 0 } }",
        "not `impl Trait`",
    );
    refuses(
        "impl C { #[remote(1)] async fn s(&self) {} }",
        "an async fn cannot be served",
    );
    refuses(
        "impl C { #[remote(1)] unsafe fn s(&self) {} }",
        "an unsafe fn cannot be served",
    );
}

#[test]
fn only_inherent_concrete_impl_blocks_with_served_methods() {
    let (errors, kept) = refused(
        ARGS,
        "impl Default for C { #[remote(1)] fn default() -> Self { C } }",
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("not on a trait impl"), "{errors:?}");
    assert!(!kept.contains("# [remote"), "{kept}");
    let (errors, _) = refused(ARGS, "impl<T> W<T> { #[remote(1)] fn get(&self) {} }");
    assert!(
        errors[0].contains("a generic type cannot be served"),
        "{errors:?}"
    );
    refuses(
        "impl C { fn helper(&self) {} }",
        "no method is marked #[remote(N)]",
    );
    refuses(
        "impl C { #[remote(2)] const N: u32 = 1; #[remote(1)] fn get(&self) {} }",
        "only methods can be served",
    );
    let (errors, kept) = refused(ARGS, "fn incr(&mut self) {}");
    assert!(
        errors[0].contains("goes on an inherent impl block"),
        "{errors:?}"
    );
    assert_eq!(kept, "fn incr (& mut self) { }");
}

#[test]
fn every_refusal_in_a_block_is_reported_at_once() {
    let (errors, _) = refused(
        ARGS,
        "impl C {
            #[remote] fn a(&self) {}
            #[remote(2)] fn b(self) {}
            #[remote(3)] fn c<T>(&self) {}
        }",
    );
    assert_eq!(errors.len(), 3, "{errors:?}");
}
