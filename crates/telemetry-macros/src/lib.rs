//! `#[db_span("INSERT", "accounts")]`: the client span of one database query, named and
//! attributed by the OpenTelemetry database conventions (span name `{operation} {collection}`,
//! `db.system.name`, `db.operation.name`, `db.collection.name`, kind client). It stands for the
//! ten-line `#[tracing::instrument(...)]` every query function would otherwise carry, so that
//! the attributes are written once, here, and cannot drift apart between the services.
//!
//! Use it through `shop_telemetry::db_span`; the crate using it needs `tracing`.

use proc_macro::TokenStream;
use quote::quote;
use syn::parse::Parser as _;
use syn::punctuated::Punctuated;
use syn::{LitStr, Token};

/// `#[db_span(OPERATION, COLLECTION)]` on a function (usually `async`): its calls become spans
/// named `"OPERATION COLLECTION"` with the database attributes, arguments left out.
///
/// ```ignore
/// #[shop_telemetry::db_span("INSERT", "accounts")]
/// pub async fn insert_account(conn: &mut PgConnection, id: &str) -> sqlx::Result<()> { … }
/// ```
#[proc_macro_attribute]
pub fn db_span(args: TokenStream, item: TokenStream) -> TokenStream {
    let parsed = Punctuated::<LitStr, Token![,]>::parse_terminated.parse(args);
    let (operation, collection) = match parsed {
        Ok(args) if args.len() == 2 => (args[0].clone(), args[1].clone()),
        Ok(args) => {
            return syn::Error::new_spanned(
                args,
                "db_span takes two strings: the operation (\"SELECT\") and the collection (\"accounts\")",
            )
            .to_compile_error()
            .into();
        }
        Err(e) => return e.to_compile_error().into(),
    };
    let name = LitStr::new(
        &format!("{} {}", operation.value(), collection.value()),
        operation.span(),
    );
    let item = proc_macro2::TokenStream::from(item);
    quote! {
        #[::tracing::instrument(
            name = #name,
            skip_all,
            fields(
                otel.kind = "client",
                db.system.name = "postgresql",
                db.operation.name = #operation,
                db.collection.name = #collection,
            )
        )]
        #item
    }
    .into()
}
