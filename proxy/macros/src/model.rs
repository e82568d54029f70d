//! Reads `#[remote(proxy = …)] impl T { … }` into the served [`Method`]s,
//! checking everything the generated code relies on; every refusal points
//! at the tokens to change.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{
    Attribute, Error, Expr, FnArg, Generics, Ident, ImplItem, ImplItemFn, ItemImpl, LitInt, Pat,
    Path, ReturnType, Token, Type,
};

/// The name of the marker on served methods: `#[remote(N)]`.
pub const MARKER: &str = "remote";

/// The attribute's arguments: `proxy = Name, name = "…", crate = path`.
pub struct Args {
    /// The generated proxy type.
    pub proxy: Ident,
    /// The type name both sides check, if not the default.
    pub name: Option<Expr>,
    /// Where the runtime's items are (`::multiproc` unless told).
    pub krate: Path,
}

impl Parse for Args {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut proxy: Option<Ident> = None;
        let mut name: Option<Expr> = None;
        let mut krate: Option<Path> = None;
        while !input.is_empty() {
            let key = Ident::parse_any(input)?;
            input.parse::<Token![=]>()?;
            let duplicate = || Error::new(key.span(), format!("`{key}` is given twice"));
            match key.to_string().as_str() {
                "proxy" if proxy.is_some() => return Err(duplicate()),
                "proxy" => proxy = Some(input.parse()?),
                "name" if name.is_some() => return Err(duplicate()),
                "name" => name = Some(input.parse()?),
                "crate" if krate.is_some() => return Err(duplicate()),
                "crate" => krate = Some(input.call(Path::parse_mod_style)?),
                _ => {
                    return Err(Error::new(
                        key.span(),
                        format!(
                            "unknown argument `{key}`: expected `proxy = Name`, \
                             and optionally `name = \"…\"` or `crate = path`"
                        ),
                    ));
                }
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        let proxy = proxy.ok_or_else(|| {
            Error::new(
                Span::call_site(),
                "name the proxy type to generate: #[multiproc::remote(proxy = CounterProxy)]",
            )
        })?;
        Ok(Args {
            proxy,
            name,
            krate: krate.unwrap_or_else(|| syn::parse_quote!(::multiproc)),
        })
    }
}

/// One served method.
pub struct Method {
    /// Its number: what a call carries on the wire.
    pub number: u32,
    pub name: Ident,
    /// Argument names and types, in order.
    pub args: Vec<(Ident, Type)>,
    /// Its result type (`()` when it has none).
    pub ret: Type,
    /// Its `#[doc]` attributes (copied onto the proxy method).
    pub docs: Vec<Attribute>,
    /// Its `#[cfg]` attributes (copied onto everything generated for it).
    pub cfgs: Vec<Attribute>,
}

/// Collects every refusal, so one build reports them all.
#[derive(Default)]
pub struct Errors(Option<Error>);

impl Errors {
    pub fn push(&mut self, e: Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub fn at(&mut self, tokens: impl quote::ToTokens, msg: impl std::fmt::Display) {
        self.push(Error::new_spanned(tokens, msg));
    }

    pub fn into_result(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Reads and checks the impl block; the markers are removed from `item`
/// even when it is refused, so the block can be re-emitted either way.
pub fn read(item: &mut ItemImpl, errors: &mut Errors) -> Vec<Method> {
    if let Some((_, path, _)) = &item.trait_ {
        errors.at(
            path,
            "#[multiproc::remote] goes on an inherent impl block (`impl Counter { … }`), \
             not on a trait impl",
        );
        // Its methods are the trait's: there is nothing more to say about them.
        for impl_item in &mut item.items {
            if let Some(attrs) = impl_item_attrs(impl_item) {
                take_markers(attrs);
            }
        }
        return Vec::new();
    }
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        errors.at(
            generics_tokens(&item.generics),
            "a generic type cannot be served: the server makes one concrete type \
             with `Default::default()`",
        );
    }
    let mut methods: Vec<Method> = Vec::new();
    let mut marked = false;
    for impl_item in &mut item.items {
        let ImplItem::Fn(f) = impl_item else {
            if let Some(attrs) = impl_item_attrs(impl_item)
                && let Some(marker) = take_markers(attrs).first()
            {
                errors.at(marker, "only methods can be served");
            }
            continue;
        };
        let markers = take_markers(&mut f.attrs);
        let Some(first) = markers.first() else {
            continue;
        };
        marked = true;
        for extra in &markers[1..] {
            errors.at(extra, "a method has one number: remove this #[remote]");
        }
        let Some((number, literal)) = method_number(first, errors) else {
            continue;
        };
        if let Some(other) = methods.iter().find(|m| m.number == number) {
            errors.at(
                &literal,
                format!(
                    "method number {number} is already `{}`'s: each served method \
                     needs its own number",
                    other.name
                ),
            );
            continue;
        }
        if let Some(m) = method(f, number, errors) {
            methods.push(m);
        }
    }
    if !marked {
        errors.at(
            &item.self_ty,
            "no method is marked #[remote(N)]: mark the methods clients may call, \
             e.g. `#[remote(1)] fn incr(&mut self, by: i64) -> i64`",
        );
    }
    methods
}

/// Generic parameters and where clause (`Generics` prints only the former).
fn generics_tokens(generics: &Generics) -> proc_macro2::TokenStream {
    let where_clause = &generics.where_clause;
    quote::quote!(#generics #where_clause)
}

/// The attributes of an impl item other than a method (none for verbatim tokens).
fn impl_item_attrs(item: &mut ImplItem) -> Option<&mut Vec<Attribute>> {
    match item {
        ImplItem::Const(c) => Some(&mut c.attrs),
        ImplItem::Fn(f) => Some(&mut f.attrs),
        ImplItem::Type(t) => Some(&mut t.attrs),
        ImplItem::Macro(m) => Some(&mut m.attrs),
        _ => None,
    }
}

/// Removes the `#[remote…]` attributes from `attrs` and returns them.
fn take_markers(attrs: &mut Vec<Attribute>) -> Vec<Attribute> {
    let (markers, rest) = std::mem::take(attrs)
        .into_iter()
        .partition(|a| a.path().is_ident(MARKER));
    *attrs = rest;
    markers
}

/// The `N` of `#[remote(N)]`.
fn method_number(marker: &Attribute, errors: &mut Errors) -> Option<(u32, LitInt)> {
    const HOW: &str = "give the method its number: #[remote(1)]. The number is what \
                       a call carries on the wire, so a method keeps its number when \
                       methods are renamed, reordered or added";
    let syn::Meta::List(list) = &marker.meta else {
        errors.at(marker, HOW);
        return None;
    };
    let literal: LitInt = match list.parse_args() {
        Ok(l) => l,
        Err(_) => {
            errors.at(marker, HOW);
            return None;
        }
    };
    match literal.base10_parse::<u32>() {
        Ok(n) if literal.suffix().is_empty() || literal.suffix() == "u32" => Some((n, literal)),
        _ => {
            errors.at(
                &literal,
                "a method number is a `u32` literal, e.g. #[remote(1)]",
            );
            None
        }
    }
}

/// Checks one marked method's signature.
fn method(f: &ImplItemFn, number: u32, errors: &mut Errors) -> Option<Method> {
    let sig = &f.sig;
    let mut mine = Errors::default();
    if let Some(t) = &sig.asyncness {
        mine.at(
            t,
            "an async fn cannot be served: the server calls methods to completion",
        );
    }
    if let Some(t) = &sig.unsafety {
        mine.at(
            t,
            "an unsafe fn cannot be served: any client could call it with any arguments",
        );
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        mine.at(
            generics_tokens(&sig.generics),
            "a generic method cannot be served: its argument and result types are \
             the wire format, so they must be concrete",
        );
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.colon_token.is_none() && r.reference.is_some() => {}
        Some(FnArg::Receiver(r)) if r.colon_token.is_none() => mine.at(
            r,
            "`self` by value would consume the server's object: take `&self` or `&mut self`",
        ),
        Some(FnArg::Receiver(r)) => mine.at(r, "write the receiver as `&self` or `&mut self`"),
        _ => mine.at(
            &sig.ident,
            "a served method takes `&self` or `&mut self` (an associated function \
             has no object to call)",
        ),
    }
    let mut args = Vec::new();
    for input in inputs {
        let FnArg::Typed(arg) = input else { continue };
        match &*arg.pat {
            Pat::Ident(p) if p.by_ref.is_none() && p.subpat.is_none() => {
                args.push((p.ident.clone(), (*arg.ty).clone()));
            }
            pat => mine.at(
                pat,
                "name this argument (`by: i64`): the proxy method takes it by name, \
                 so it cannot be a pattern",
            ),
        }
        if let Some(why) = not_encodable(&arg.ty) {
            mine.at(&arg.ty, format!("arguments travel encoded: {why}"));
        }
    }
    let ret = match &sig.output {
        ReturnType::Default => syn::parse_quote!(()),
        ReturnType::Type(_, ty) => {
            if let Some(why) = not_encodable(ty) {
                mine.at(ty, format!("the result travels encoded: {why}"));
            }
            (**ty).clone()
        }
    };
    if let Err(e) = mine.into_result() {
        errors.push(e);
        return None;
    }
    Some(Method {
        number,
        name: sig.ident.clone(),
        args,
        ret,
        docs: attrs_named(&f.attrs, "doc"),
        cfgs: attrs_named(&f.attrs, "cfg"),
    })
}

/// Why values of `ty` cannot be encoded and decoded, if that shows in its form.
fn not_encodable(ty: &Type) -> Option<&'static str> {
    match ty {
        Type::Reference(_) => {
            Some("take an owned type (`String`, not `&str`; `Vec<T>`, not `&[T]`)")
        }
        Type::ImplTrait(_) => Some("name a concrete type, not `impl Trait`"),
        Type::TraitObject(_) => Some("name a concrete type, not `dyn Trait`"),
        Type::Ptr(_) => Some("a pointer means nothing in another process"),
        Type::Paren(p) => not_encodable(&p.elem),
        Type::Group(g) => not_encodable(&g.elem),
        _ => None,
    }
}

fn attrs_named(attrs: &[Attribute], name: &str) -> Vec<Attribute> {
    attrs
        .iter()
        .filter(|a| a.path().is_ident(name))
        .cloned()
        .collect()
}
