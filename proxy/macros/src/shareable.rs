//! `#[derive(Shareable)]`: rkyv's encoding for a user's struct or enum, with
//! no rkyv attribute and no rkyv dependency in the user's crate.
//!
//! A derive cannot add derives to the item it is on, and rkyv's own derive
//! names `::rkyv` unless told otherwise. So this derive writes, inside an
//! unnameable `const _: () = { … };` beside the item:
//!
//! - a *shadow*: a copy of the item's fields (or variants) carrying rkyv's
//!   derives as a remote derive (`#[rkyv(remote = Item, as = Archived…)]`,
//!   through the facade's `rkyv`), which generates the resolver and how to
//!   serialize, resolve and deserialize the item's fields;
//! - the archived type (`repr(C)` struct or `repr(u8)` enum, the layout
//!   rkyv's derive gives), with bytecheck's `CheckBytes` derive, and its
//!   `Portable` impl;
//! - `Archive`, `Serialize` and `Deserialize` for the item, each one call to
//!   the shadow's remote impl, and `From<shadow>` for the item (how a remote
//!   derive deserializes);
//! - a check per field whose type names no generic parameter: the field's
//!   type must be `Shareable`, or the build fails *at that field* with a
//!   message saying the type cannot travel.
//!
//! The bounds on field types that name no generic parameter carry an
//! unused `for<'__shareable>` binder. A plain `File: Archive` bound that
//! does not hold is an error wherever it is written (rustc rejects false
//! bounds without parameters), so one field that cannot travel would give
//! a dozen errors from the generated items; with the binder the items are
//! well-formed either way, and the field check above is the one error.

use proc_macro2::{Ident, Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::spanned::Spanned;
use syn::{
    Data, DeriveInput, Error, Fields, GenericParam, Generics, Path, Token, Type, WherePredicate,
    parse_quote,
};

use crate::model::Errors;

/// The derive's expansion, or the errors that refuse the item.
pub fn derive(input: TokenStream) -> TokenStream {
    let input = match syn::parse2::<DeriveInput>(input) {
        Ok(input) => input,
        Err(e) => return e.into_compile_error(),
    };
    match expand(&input) {
        Ok(tokens) => tokens,
        Err(e) => e.into_compile_error(),
    }
}

/// `#[shareable(crate = path)]`: where the `multiproc` items are.
struct Args {
    krate: Option<Path>,
}

impl Parse for Args {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let mut krate = None;
        while !input.is_empty() {
            let key = Ident::parse_any(input)?;
            if key != "crate" {
                return Err(Error::new(
                    key.span(),
                    format!(
                        "unknown argument `{key}`: #[shareable(crate = path)] is the one \
                         argument (where the `multiproc` items are, if not `::multiproc`)"
                    ),
                ));
            }
            if krate.is_some() {
                return Err(Error::new(key.span(), "`crate` is given twice"));
            }
            input.parse::<Token![=]>()?;
            krate = Some(input.call(Path::parse_mod_style)?);
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(Args { krate })
    }
}

/// One field of the item (of a struct, or of one variant).
struct Field<'a> {
    ty: &'a Type,
    /// Whether its type names a generic parameter of the item.
    generic: bool,
    /// Whether its type names the item itself (`Vec<Tree>` in `Tree`).
    recursive: bool,
}

fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let input = &self_spelled_out(input);
    let mut errors = Errors::default();
    let mut krate = None;
    for attr in input
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("shareable"))
    {
        match attr.parse_args::<Args>() {
            Ok(Args { krate: Some(k) }) if krate.is_none() => krate = Some(k),
            Ok(Args { krate: Some(k) }) => errors.at(k, "`crate` is given twice"),
            Ok(Args { krate: None }) => {}
            Err(e) => errors.push(e),
        }
    }
    let k: Path = krate.unwrap_or_else(|| parse_quote!(::multiproc));
    check_generics(&input.generics, &mut errors);
    match &input.data {
        Data::Union(u) => errors.at(
            u.union_token,
            "#[derive(Shareable)] goes on a struct or an enum: a union's bytes \
             cannot be checked when they arrive",
        ),
        Data::Enum(e) if e.variants.is_empty() => errors.at(
            &input.ident,
            "#[derive(Shareable)] needs an enum with at least one variant \
             (there is no value of this type to send)",
        ),
        Data::Enum(e) if e.variants.len() > 256 => errors.at(
            &input.ident,
            "#[derive(Shareable)] supports enums of up to 256 variants",
        ),
        _ => {}
    }
    errors.into_result()?;

    let name = &input.ident;
    let vis = &input.vis;
    let params = param_names(&input.generics);
    let shadow = format_ident!("__Shareable{}", name.unraw());
    let archived = format_ident!("Archived{}", shadow);
    let resolver = format_ident!("{}Resolver", shadow);
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let generics = &input.generics;
    let user_where: Vec<&WherePredicate> = where_clause
        .map(|w| w.predicates.iter().collect())
        .unwrap_or_default();

    let all_fields: Vec<&syn::Field> = match &input.data {
        Data::Struct(s) => s.fields.iter().collect(),
        Data::Enum(e) => e.variants.iter().flat_map(|v| v.fields.iter()).collect(),
        // Refused above.
        Data::Union(_) => Vec::new(),
    };
    let mut fields: Vec<Field> = Vec::new();
    for f in &all_fields {
        let seen = fields
            .iter()
            .any(|g| g.ty.to_token_stream().to_string() == f.ty.to_token_stream().to_string());
        if !seen {
            fields.push(Field {
                ty: &f.ty,
                generic: mentions(f.ty.to_token_stream(), &params),
                recursive: mentions(f.ty.to_token_stream(), std::slice::from_ref(name)),
            });
        }
    }

    let rkyv = quote!(#k::rkyv);
    // An unused binder keeps a bound on a parameterless type from being an
    // error where it is written (see the module docs).
    let binder = |generic: bool| (!generic).then(|| quote!(for<'__shareable>));
    // A recursive field gets no bound of its own (`Vec<Tree>: Archive` in
    // `Tree`'s impls would be a cycle): what its container needs of the
    // serializer, deserializer and validator is bound instead, as rkyv
    // advises for recursive types.
    let bounded: Vec<&Field> = fields.iter().filter(|f| !f.recursive).collect();
    let recursive = fields.iter().any(|f| f.recursive);
    let archive_bounds: Vec<TokenStream> = bounded
        .iter()
        .map(|Field { ty, generic, .. }| {
            let b = binder(*generic);
            quote!(#b #ty: #rkyv::Archive)
        })
        .collect();
    let mut serialize_bounds: Vec<TokenStream> = bounded
        .iter()
        .map(|Field { ty, generic, .. }| {
            let b = binder(*generic);
            quote!(#b #ty: #rkyv::Serialize<__S>)
        })
        .collect();
    let mut deserialize_bounds: Vec<TokenStream> = bounded
        .iter()
        .map(|Field { ty, generic, .. }| {
            let b = binder(*generic);
            quote!(#b <#ty as #rkyv::Archive>::Archived: #rkyv::Deserialize<#ty, __D>)
        })
        .collect();
    let mut check_bytes_bounds: Vec<TokenStream> = bounded
        .iter()
        .map(|Field { ty, generic, .. }| {
            let b = binder(*generic);
            quote!(#b <#ty as #rkyv::Archive>::Archived: #rkyv::bytecheck::CheckBytes<__C>)
        })
        .collect();
    if recursive {
        serialize_bounds.push(quote! {
            __S: #rkyv::ser::Writer + #rkyv::ser::Allocator + #rkyv::ser::Sharing
        });
        serialize_bounds
            .push(quote!(<__S as #rkyv::rancor::Fallible>::Error: #rkyv::rancor::Source));
        deserialize_bounds.push(quote!(__D: #rkyv::de::Pooling));
        deserialize_bounds
            .push(quote!(<__D as #rkyv::rancor::Fallible>::Error: #rkyv::rancor::Source));
        check_bytes_bounds.push(quote! {
            __C: #rkyv::validation::ArchiveContext + #rkyv::validation::SharedContext
        });
        check_bytes_bounds
            .push(quote!(<__C as #rkyv::rancor::Fallible>::Error: #rkyv::rancor::Source));
    }

    let omit = quote!(#[rkyv(omit_bounds)]);
    let omit_check = quote!(#[bytecheck(omit_bounds)]);
    // The generated code's locals, which the user's names cannot meet.
    let local = Ident::new("shadow", Span::mixed_site());
    let archived_ty = |ty: &Type| quote!(<#ty as #rkyv::Archive>::Archived);
    let (shadow_def, archived_def, from_body) = match &input.data {
        Data::Struct(s) => {
            let shadow_body = fields_body(&s.fields, where_clause.to_token_stream(), &omit, |f| {
                f.ty.to_token_stream()
            });
            let archived_where = archived_where(where_clause, &archive_bounds);
            let archived_body = fields_body(&s.fields, archived_where, &omit_check, |f| {
                archived_ty(&f.ty)
            });
            let from = match &s.fields {
                Fields::Named(named) => {
                    let members = named.named.iter().map(|f| &f.ident);
                    let members2 = members.clone();
                    quote!(#name { #(#members: #local.#members2,)* })
                }
                Fields::Unnamed(unnamed) => {
                    let index = (0..unnamed.unnamed.len()).map(syn::Index::from);
                    quote!(#name(#(#local.#index,)*))
                }
                Fields::Unit => quote!(#name),
            };
            (
                quote!(#vis struct #shadow #generics #shadow_body),
                quote! {
                    #[repr(C)]
                    #vis struct #archived #generics #archived_body
                },
                from,
            )
        }
        Data::Enum(e) => {
            let shadow_variants = e.variants.iter().map(|v| {
                let ident = &v.ident;
                let body = variant_body(&v.fields, &omit, |f| f.ty.to_token_stream());
                quote!(#ident #body)
            });
            let archived_variants = e.variants.iter().map(|v| {
                let ident = &v.ident;
                let body = variant_body(&v.fields, &omit_check, |f| archived_ty(&f.ty));
                quote!(#ident #body)
            });
            let arms = e.variants.iter().map(|v| {
                let ident = &v.ident;
                let bound: Vec<Ident> = (0..v.fields.len())
                    .map(|i| format_ident!("field{}", i, span = Span::mixed_site()))
                    .collect();
                match &v.fields {
                    Fields::Named(named) => {
                        let members: Vec<_> = named.named.iter().map(|f| &f.ident).collect();
                        quote! {
                            #shadow::#ident { #(#members: #bound,)* } =>
                                #name::#ident { #(#members: #bound,)* }
                        }
                    }
                    Fields::Unnamed(_) => {
                        quote!(#shadow::#ident(#(#bound,)*) => #name::#ident(#(#bound,)*))
                    }
                    Fields::Unit => quote!(#shadow::#ident => #name::#ident),
                }
            });
            let archived_where = archived_where(where_clause, &archive_bounds);
            (
                quote!(#vis enum #shadow #generics #where_clause { #(#shadow_variants,)* }),
                quote! {
                    #[repr(u8)]
                    #vis enum #archived #generics #archived_where { #(#archived_variants,)* }
                },
                quote!(match #local { #(#arms,)* }),
            )
        }
        Data::Union(u) => return Err(Error::new_spanned(u.union_token, "unions are refused")),
    };

    let with_param = |param: GenericParam| {
        let mut g = generics.clone();
        g.params.insert(0, param);
        g
    };
    let ser_generics = with_param(parse_quote!(__S: #rkyv::rancor::Fallible + ?Sized));
    let (ser_impl, _, _) = ser_generics.split_for_impl();
    let de_generics = with_param(parse_quote!(__D: #rkyv::rancor::Fallible + ?Sized));
    let (de_impl, _, _) = de_generics.split_for_impl();

    let checks = bounded
        .iter()
        .filter(|f| !f.generic)
        .map(|Field { ty, .. }| {
            // The check's tokens carry the field type's span, so a type that
            // cannot travel is reported at the field.
            quote_spanned!(ty.span()=> let _: fn() = #k::__private::field_travels::<#ty>;)
        });
    let shadow = &shadow;
    let shadow_ty = quote!(#shadow #ty_generics);
    let archived_self = quote!(#archived #ty_generics);
    let item_ty = quote!(#name #ty_generics);

    Ok(quote! {
        #[allow(
            non_camel_case_types,
            non_snake_case,
            dead_code,
            missing_docs,
            unused_qualifications,
            private_interfaces,
            private_bounds,
            clippy::all,
            clippy::pedantic,
            clippy::undocumented_unsafe_blocks
        )]
        const _: () = {
            #[derive(#rkyv::Archive, #rkyv::Serialize, #rkyv::Deserialize)]
            #[rkyv(
                crate = #rkyv,
                remote = #item_ty,
                as = #archived_self,
                resolver = #resolver,
                archive_bounds(#(#archive_bounds),*),
                serialize_bounds(#(#serialize_bounds),*),
                deserialize_bounds(#(#deserialize_bounds),*),
            )]
            #shadow_def

            #[derive(#rkyv::bytecheck::CheckBytes)]
            #[bytecheck(crate = #rkyv::bytecheck, bounds(#(#check_bytes_bounds),*))]
            #archived_def

            // SAFETY: the archived type is `repr(C)` (a struct) or `repr(u8)`
            // (an enum) and every field is an `Archive::Archived` type, which
            // is `Portable`: the impl rkyv's derive writes for its own types.
            unsafe impl #impl_generics #rkyv::Portable for #archived_self
            where #(#user_where,)* #(#archive_bounds,)*
            {}

            impl #impl_generics ::core::convert::From<#shadow_ty> for #item_ty
            where #(#user_where,)*
            {
                fn from(#local: #shadow_ty) -> Self {
                    #from_body
                }
            }

            impl #impl_generics #rkyv::Archive for #item_ty
            where #(#user_where,)* #(#archive_bounds,)*
            {
                type Archived = #archived_self;
                type Resolver = #resolver #ty_generics;

                fn resolve(&self, resolver: Self::Resolver, out: #rkyv::Place<Self::Archived>) {
                    <#shadow_ty as #rkyv::with::ArchiveWith<#item_ty>>::resolve_with(
                        self, resolver, out,
                    )
                }
            }

            impl #ser_impl #rkyv::Serialize<__S> for #item_ty
            where
                #(#user_where,)*
                #(#archive_bounds,)*
                #(#serialize_bounds,)*
            {
                fn serialize(
                    &self,
                    serializer: &mut __S,
                ) -> ::core::result::Result<
                    <Self as #rkyv::Archive>::Resolver,
                    <__S as #rkyv::rancor::Fallible>::Error,
                > {
                    <#shadow_ty as #rkyv::with::SerializeWith<#item_ty, __S>>::serialize_with(
                        self, serializer,
                    )
                }
            }

            impl #de_impl #rkyv::Deserialize<#item_ty, __D> for #archived_self
            where
                #(#user_where,)*
                #(#archive_bounds,)*
                #(#deserialize_bounds,)*
            {
                fn deserialize(
                    &self,
                    deserializer: &mut __D,
                ) -> ::core::result::Result<#item_ty, <__D as #rkyv::rancor::Fallible>::Error> {
                    <#shadow_ty as #rkyv::with::DeserializeWith<
                        #archived_self,
                        #item_ty,
                        __D,
                    >>::deserialize_with(self, deserializer)
                }
            }

            fn fields_travel() {
                #(#checks)*
            }
        };
    })
}

/// `input` with `Self` in its field types replaced by the item's type: the
/// fields are copied into other types, where `Self` would mean those.
fn self_spelled_out(input: &DeriveInput) -> DeriveInput {
    let mut input = input.clone();
    let name = &input.ident;
    let (_, ty_generics, _) = input.generics.split_for_impl();
    let item_ty = quote!(#name #ty_generics);
    let fields: Vec<&mut syn::Field> = match &mut input.data {
        Data::Struct(s) => s.fields.iter_mut().collect(),
        Data::Enum(e) => e
            .variants
            .iter_mut()
            .flat_map(|v| v.fields.iter_mut())
            .collect(),
        Data::Union(u) => u.fields.named.iter_mut().collect(),
    };
    for f in fields {
        if let Ok(ty) = syn::parse2(replace_self(f.ty.to_token_stream(), &item_ty)) {
            f.ty = ty;
        }
    }
    input
}

/// `tokens` with every `Self` replaced by `item_ty`.
fn replace_self(tokens: TokenStream, item_ty: &TokenStream) -> TokenStream {
    tokens
        .into_iter()
        .flat_map(|t| match t {
            TokenTree::Ident(i) if i == "Self" => item_ty.clone(),
            TokenTree::Group(g) => {
                let mut inner =
                    proc_macro2::Group::new(g.delimiter(), replace_self(g.stream(), item_ty));
                inner.set_span(g.span());
                TokenTree::Group(inner).into_token_stream()
            }
            other => other.into_token_stream(),
        })
        .collect()
}

/// Refuses what cannot be `Shareable` whatever its fields: a type that
/// borrows (it must be `'static` to travel).
fn check_generics(generics: &Generics, errors: &mut Errors) {
    for param in &generics.params {
        if let GenericParam::Lifetime(l) = param {
            errors.at(
                l,
                "a Shareable type cannot borrow: it travels to another process, so it \
                 must own its data (`String` for `&str`, `Vec<T>` for `&[T]`)",
            );
        }
    }
}

/// The names of the item's type and const parameters.
fn param_names(generics: &Generics) -> Vec<Ident> {
    generics
        .params
        .iter()
        .filter_map(|p| match p {
            GenericParam::Type(t) => Some(t.ident.clone()),
            GenericParam::Const(c) => Some(c.ident.clone()),
            GenericParam::Lifetime(_) => None,
        })
        .collect()
}

/// Whether `tokens` name one of `params`.
fn mentions(tokens: TokenStream, params: &[Ident]) -> bool {
    tokens.into_iter().any(|t| match t {
        TokenTree::Ident(i) => params.contains(&i),
        TokenTree::Group(g) => mentions(g.stream(), params),
        _ => false,
    })
}

/// The where clause of the archived type: the item's own, and the fields'
/// `Archive` bounds (its field types are their archived types).
fn archived_where(where_clause: Option<&syn::WhereClause>, bounds: &[TokenStream]) -> TokenStream {
    let user = where_clause.into_iter().flat_map(|w| w.predicates.iter());
    quote!(where #(#user,)* #(#bounds,)*)
}

/// A struct body (`{ … }`, `( … );` or `;`) with each field's type made by `ty`.
fn fields_body(
    fields: &Fields,
    where_clause: TokenStream,
    attrs: &TokenStream,
    ty: impl Fn(&syn::Field) -> TokenStream,
) -> TokenStream {
    let field = |f: &syn::Field| {
        let vis = &f.vis;
        let ident = &f.ident;
        let colon = f.ident.as_ref().map(|_| quote!(:));
        let ty = ty(f);
        quote!(#attrs #vis #ident #colon #ty)
    };
    match fields {
        Fields::Named(named) => {
            let fs = named.named.iter().map(field);
            quote!(#where_clause { #(#fs,)* })
        }
        Fields::Unnamed(unnamed) => {
            let fs = unnamed.unnamed.iter().map(field);
            quote!((#(#fs,)*) #where_clause;)
        }
        Fields::Unit => quote!(#where_clause;),
    }
}

/// A variant's fields (`{ … }`, `( … )` or nothing), each type made by `ty`.
fn variant_body(
    fields: &Fields,
    attrs: &TokenStream,
    ty: impl Fn(&syn::Field) -> TokenStream,
) -> TokenStream {
    let field = |f: &syn::Field| {
        let ident = &f.ident;
        let colon = f.ident.as_ref().map(|_| quote!(:));
        let ty = ty(f);
        quote!(#attrs #ident #colon #ty)
    };
    match fields {
        Fields::Named(named) => {
            let fs = named.named.iter().map(field);
            quote!({ #(#fs,)* })
        }
        Fields::Unnamed(unnamed) => {
            let fs = unnamed.unnamed.iter().map(field);
            quote!((#(#fs,)*))
        }
        Fields::Unit => TokenStream::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::expand;

    fn expansion(item: &str) -> String {
        let input = syn::parse_str(item).expect("test input is an item");
        match expand(&input) {
            Ok(out) => out.to_string(),
            Err(e) => panic!("refused: {e}"),
        }
    }

    fn refusal(item: &str) -> Vec<String> {
        let input = syn::parse_str(item).expect("test input is an item");
        match expand(&input) {
            Ok(out) => panic!("accepted: {out}"),
            Err(e) => e.into_iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn refuses_unions_borrowing_types_empty_enums_and_unknown_arguments() {
        let e = refusal("union U { a: u32, b: f32 }");
        assert!(e[0].contains("struct or an enum"), "{e:?}");
        let e = refusal("struct S<'a, 'b> { s: &'a str, t: &'b str }");
        assert_eq!(e.len(), 2, "one error per lifetime: {e:?}");
        assert!(e[0].contains("cannot borrow"), "{e:?}");
        let e = refusal("enum Never {}");
        assert!(e[0].contains("at least one variant"), "{e:?}");
        let e = refusal("#[shareable(krate = x)] struct S;");
        assert!(e[0].contains("unknown argument `krate`"), "{e:?}");
        let e = refusal("#[shareable(crate = a, crate = b)] struct S;");
        assert!(e[0].contains("given twice"), "{e:?}");
    }

    #[test]
    fn each_field_of_a_concrete_type_is_checked_at_the_field() {
        let out = expansion("struct S<T> { a: u32, b: Vec<T>, c: String, d: u32 }");
        assert!(out.contains("field_travels :: < u32 >"), "{out}");
        assert!(out.contains("field_travels :: < String >"), "{out}");
        // A field naming a parameter is checked where the type is used.
        assert!(!out.contains("field_travels :: < Vec < T > >"), "{out}");
        // One check per distinct type.
        assert_eq!(out.matches("field_travels :: < u32 >").count(), 1, "{out}");
        // Bounds on concrete types carry the binder; on generic ones not.
        assert!(out.contains("for < '__shareable > u32 : :: multiproc :: rkyv :: Archive"));
        assert!(
            out.contains(", Vec < T > : :: multiproc :: rkyv :: Archive"),
            "{out}"
        );
    }

    #[test]
    fn the_crate_path_can_be_given() {
        let out = expansion("#[shareable(crate = ::renamed)] enum E { A(u8), B }");
        assert!(out.contains(":: renamed :: rkyv :: Archive"), "{out}");
        assert!(!out.contains(":: multiproc ::"), "{out}");
    }

    #[test]
    fn a_recursive_field_has_no_bound_of_its_own() {
        let out = expansion("enum Tree { Leaf(i64), Node(Vec<Self>) }");
        // `Self` is spelled out in the copies of the fields.
        assert!(!out.contains("Self >"), "{out}");
        assert!(
            !out.contains("Vec < Tree > : :: multiproc :: rkyv :: Archive"),
            "{out}"
        );
        assert!(
            out.contains("__S : :: multiproc :: rkyv :: ser :: Writer"),
            "{out}"
        );
        assert!(!out.contains("field_travels :: < Vec < Tree > >"), "{out}");
    }
}
