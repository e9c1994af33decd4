//! The rating study's pages: the admin area (`/admin`: log in, list and create studies;
//! `/admin/studies/{id}`: run one study and read its results) and the rater's page
//! (`/rate/{token}`), which never names a method so raters stay blind to who wrote what.

mod admin;
mod new_study;
mod rater;
mod rater_table;
mod results;
mod study_detail;
mod task;

pub use admin::AdminPage;
pub use rater::RatePage;
pub use study_detail::StudyPage;

use crate::api::{method_title, study::MethodRef};
use leptos::prelude::ServerFnError;

/// A failed server call as a sentence for people: the study's own message without server_fn's
/// "error running server function" prefix, or what went wrong on the way.
pub(crate) fn readable(e: &ServerFnError) -> String {
    match e {
        ServerFnError::ServerError(msg) => capitalised(msg),
        ServerFnError::Request(msg) => format!("The server could not be reached ({msg})."),
        other => other.to_string(),
    }
}

fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A study method as the admin sees it: its title, with the source when it has one.
pub(crate) fn method_name(m: &MethodRef) -> String {
    if m.source.is_empty() {
        method_title(&m.method).to_string()
    } else {
        format!("{} ({})", method_title(&m.method), m.source)
    }
}

/// A stable key of a method for ids and data attributes: `milan`, `milan--my-source`.
pub(crate) fn method_key(m: &MethodRef) -> String {
    if m.source.is_empty() {
        m.method.clone()
    } else {
        let source: String =
            m.source.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        format!("{}--{source}", m.method)
    }
}

/// What only the browser can tell (the clock, randomness, the page's origin). The server never
/// needs them: these pieces run in event handlers and effects, which only run in the browser.
mod browser {
    /// Milliseconds since the Unix epoch.
    pub fn now_ms() -> f64 {
        #[cfg(feature = "hydrate")]
        return leptos::web_sys::js_sys::Date::now();
        #[cfg(not(feature = "hydrate"))]
        return 0.0;
    }

    /// A random 32-bit number (Math.random: unpredictable enough to tell retries apart).
    pub fn random_u32() -> u32 {
        #[cfg(feature = "hydrate")]
        return (leptos::web_sys::js_sys::Math::random() * 4_294_967_296.0) as u32;
        #[cfg(not(feature = "hydrate"))]
        return 0;
    }

    /// `https://host:port` of the page, for links an admin hands out.
    pub fn origin() -> String {
        #[cfg(feature = "hydrate")]
        return leptos::prelude::window().location().origin().unwrap_or_default();
        #[cfg(not(feature = "hydrate"))]
        return String::new();
    }
}
