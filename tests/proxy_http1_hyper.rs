//! The wire-level cases of `proxy_http1.rs` with `[runtime] fast_path = false`: every request
//! through hyper and hyper-util's client, the path https upstreams and handed-off requests
//! take.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

const RUNTIME: &str = "[runtime]\nfast_path = false\n";

include!("proxy_http1/cases.rs");
