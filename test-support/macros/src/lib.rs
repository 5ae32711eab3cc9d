//! The `#[nsq_test_support::test]` attribute: an async test bounded in time.
//!
//! Every end-to-end test runs its body under a time bound; instead of each opening with
//! `within(async {` and closing with `}).await`, one indentation level deep, the attribute says
//! it once, above the test:
//!
//! ```ignore
//! #[nsq_test_support::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn publishes() {
//!     let nsqd = NsqdProcess::start(&[]);
//!     // ...
//! }
//! ```
//!
//! expands to `#[tokio::test(ARGS)]` on the same function with its body run by
//! `nsq_test_support::within` (which builds the binaries first, then bounds the test by
//! `TEST_TIMEOUT`). The arguments go to `tokio::test` unchanged.
//!
//! `#[nsq_test_support::in_process::test]` is the same for the daemons' own tests, whose nsqd
//! or nsqlookupd runs inside the test process (`nsq_test_support::in_process::within`).
//!
//! It works on tokens alone (the body is the function's last `{ ... }` group), so it needs no
//! parser crate, and the body keeps its spans: compile errors point at the test's own lines.

use proc_macro::{Delimiter, Group, TokenStream, TokenTree};

/// `#[tokio::test(ARGS)]` with the body bounded by `nsq_test_support::within`.
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    bounded(args, item, "::nsq_test_support::within")
}

/// `#[tokio::test(ARGS)]` with the body bounded by `nsq_test_support::in_process::within`
/// (which, unlike the other, builds no binaries: the daemons run inside the test).
#[proc_macro_attribute]
pub fn in_process_test(args: TokenStream, item: TokenStream) -> TokenStream {
    bounded(args, item, "::nsq_test_support::in_process::within")
}

/// `item` (an `async fn`) under `#[tokio::test(args)]`, its body run by the function at
/// `within`.
fn bounded(args: TokenStream, item: TokenStream, within: &str) -> TokenStream {
    let mut tokens: Vec<TokenTree> = item.into_iter().collect();
    let body = match tokens.pop() {
        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => g,
        _ => {
            return "compile_error!(\"#[nsq_test_support::test] goes on an `async fn` with a body\");"
                .parse()
                .expect("a valid compile_error! call")
        }
    };
    let inner: TokenStream = [
        "async move".parse::<TokenStream>().expect("valid tokens"),
        TokenStream::from(TokenTree::Group(body)),
    ]
    .into_iter()
    .collect();
    let call: TokenStream = [
        within.parse::<TokenStream>().expect("a valid path"),
        TokenStream::from(TokenTree::Group(Group::new(Delimiter::Parenthesis, inner))),
        ".await".parse().expect("valid tokens"),
    ]
    .into_iter()
    .collect();
    let attribute = if args.is_empty() {
        "#[::tokio::test]".to_string()
    } else {
        format!("#[::tokio::test({args})]")
    };
    let mut out: TokenStream = attribute
        .parse()
        .expect("the attribute's arguments re-parse");
    out.extend(tokens);
    out.extend([TokenTree::Group(Group::new(Delimiter::Brace, call))]);
    out
}
