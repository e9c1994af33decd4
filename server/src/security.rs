//! Headers every answer carries, and the per-answer script nonce of the Content-Security-Policy.
//!
//! The nonce is made here, before the page renders, and handed to Leptos (which puts it on its
//! inline hydration scripts) through a request extension; the page cache swaps a cached page's
//! nonce for the current answer's (server/src/page_cache.rs). The client's address is passed on
//! the same way, for the admin login's rate limit.

use app::state::ClientAddr;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use leptos::nonce::Nonce;
use std::net::SocketAddr;
use std::sync::Arc;

/// This answer's script nonce (a request extension).
#[derive(Clone, Debug)]
pub struct CspNonce(pub Arc<str>);

/// Pages run only their own nonce-carrying inline scripts and scripts, styles, images and
/// connections from this server; wasm may compile; no other site may frame them. Style
/// attributes stay allowed: the crop boxes on neuron pages are positioned with them.
pub fn content_security_policy(nonce: &str) -> String {
    format!(
        "default-src 'self'; script-src 'self' 'nonce-{nonce}' 'wasm-unsafe-eval'; style-src 'self'; \
         style-src-attr 'unsafe-inline'; img-src 'self'; connect-src 'self'; object-src 'none'; \
         base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// The middleware (`axum::middleware::from_fn(security::headers)`), outermost.
pub async fn headers(mut req: Request, next: Next) -> Response {
    let nonce: Arc<str> = Nonce::new().as_inner().clone();
    req.extensions_mut().insert(CspNonce(nonce.clone()));
    if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>().cloned() {
        req.extensions_mut().insert(ClientAddr(addr.ip().to_string()));
    }
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    // Rater links carry their token in the URL: no page sends it on as a Referer.
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    let is_html = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|t| t.starts_with("text/html"));
    if is_html {
        if let Ok(v) = HeaderValue::from_str(&content_security_policy(&nonce)) {
            h.insert(header::CONTENT_SECURITY_POLICY, v);
        }
    }
    res
}

/// For Leptos's render context: this answer's nonce, in place of the one Leptos would make
/// itself (which no header would name).
pub fn provide_request_nonce() {
    use leptos::prelude::{provide_context, use_context};
    if let Some(parts) = use_context::<axum::http::request::Parts>() {
        if let Some(CspNonce(n)) = parts.extensions.get::<CspNonce>() {
            provide_context(Nonce::from_value(n.clone()));
        }
    }
}
