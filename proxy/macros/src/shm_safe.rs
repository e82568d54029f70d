//! `#[derive(ShmSafe)]`: the promise that a plain struct may live in shared
//! memory, checked instead of taken on trust.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Error, Fields, Path, parse_quote};

/// The derive's expansion, or its errors.
pub(crate) fn derive(input: TokenStream) -> TokenStream {
    match expand(input) {
        Ok(tokens) => tokens,
        Err(e) => e.into_compile_error(),
    }
}

fn expand(input: TokenStream) -> syn::Result<TokenStream> {
    let input: DeriveInput = syn::parse2(input)?;
    let name = &input.ident;
    let krate = crate_path(&input)?;
    if !input.generics.params.is_empty() {
        return Err(Error::new_spanned(
            &input.generics,
            "#[derive(ShmSafe)] takes no generic type: implement `ShmSafe` by hand \
             (`unsafe impl`) for each concrete type",
        ));
    }
    let fields = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(f) => f.named.iter().map(|f| &f.ty).collect::<Vec<_>>(),
            Fields::Unnamed(f) => f.unnamed.iter().map(|f| &f.ty).collect(),
            Fields::Unit => Vec::new(),
        },
        _ => {
            return Err(Error::new_spanned(
                name,
                "#[derive(ShmSafe)] goes on a struct: an enum's tag may hold a value \
                 another process wrote that is no variant, and a union's fields \
                 cannot be checked",
            ));
        }
    };
    check_repr(&input)?;
    let padding = format!(
        "#[derive(ShmSafe)]: `{name}` has padding bytes (its size is more than its fields'): \
         add explicit fields for them (`_pad: [u8; N]`), so that every byte is a field's"
    );
    Ok(quote! {
        // SAFETY: checked below at compile time: `#[repr(C)]` (or
        // transparent), every field `ShmSafe` (so no pointers, no `Drop`,
        // every bit pattern valid), and no padding byte.
        unsafe impl #krate::ShmSafe for #name {}
        const _: () = {
            fn __field_is_shm_safe<__T: #krate::ShmSafe>() {}
            #[allow(dead_code)]
            fn __fields_are_shm_safe() {
                #( __field_is_shm_safe::<#fields>(); )*
            }
            assert!(
                ::core::mem::size_of::<#name>() == 0 #( + ::core::mem::size_of::<#fields>() )*,
                #padding
            );
        };
    })
}

/// Where the `multiproc` items are: `#[shm_safe(crate = path)]`, else `::multiproc`.
fn crate_path(input: &DeriveInput) -> syn::Result<Path> {
    let mut krate = None;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("shm_safe")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") && krate.is_none() {
                krate = Some(meta.value()?.parse::<Path>()?);
                Ok(())
            } else {
                Err(meta.error("#[shm_safe(crate = path)] is the one argument, given once"))
            }
        })?;
    }
    Ok(krate.unwrap_or_else(|| parse_quote!(::multiproc)))
}

/// `#[repr(C)]` or `#[repr(transparent)]`, and not packed (a packed field
/// may be unaligned, and the runtime reads fields with aligned loads).
fn check_repr(input: &DeriveInput) -> syn::Result<()> {
    let mut laid_out = false;
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("repr")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("C") || meta.path.is_ident("transparent") {
                laid_out = true;
            } else if meta.path.is_ident("packed") {
                return Err(meta.error(
                    "#[derive(ShmSafe)] refuses a packed struct: its fields may be unaligned",
                ));
            } else if meta.input.peek(syn::token::Paren) {
                // `align(N)`: allowed; its argument is skipped.
                let content;
                syn::parenthesized!(content in meta.input);
                let _: TokenStream = content.parse()?;
            }
            Ok(())
        })?;
    }
    if laid_out {
        Ok(())
    } else {
        Err(Error::new_spanned(
            &input.ident,
            "#[derive(ShmSafe)] needs `#[repr(C)]` on the struct: Rust's own layout \
             may differ between builds, and another process (or Python) reads the fields \
             where C puts them",
        ))
    }
}
