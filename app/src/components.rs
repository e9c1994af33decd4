//! Small pieces shared by several pages.

mod dnd_run;

pub use dnd_run::DndRunSection;
use leptos::prelude::*;
use leptos_router::components::A;
use leptos_router::hooks::use_location;

#[component]
pub fn TopBar() -> impl IntoView {
    // A rater's page links nowhere: the gallery would show which method wrote which description,
    // and the admin area is none of a rater's business.
    let location = use_location();
    let rater_page = move || location.pathname.read().starts_with("/rate/");
    view! {
        <header class="topbar">
            <Show when=move || !rater_page() fallback=|| view! { <span class="brand">"DnD Studio"</span> }>
                <A href="/" attr:class="brand">"DnD Studio"</A>
                <nav>
                    <A href="/models">"Models"</A>
                    <A href="/jobs">"Jobs"</A>
                    <A href="/admin">"Studies"</A>
                </nav>
            </Show>
        </header>
    }
}

/// A "log in" link to `/admin` that brings the admin back to this page once logged in.
#[component]
pub fn LoginLink(#[prop(into)] text: String) -> impl IntoView {
    let location = use_location();
    let here = move || {
        let search = location.search.get();
        let query = if search.is_empty() { String::new() } else { format!("?{search}") };
        location.pathname.get() + &query
    };
    let href = move || format!("/admin?next={}", urlencode(&here()));
    view! { <a href=href class="login-link">{text}</a> }
}

/// Where `/admin` goes after a login: `next` when it is a path on this site, never another site
/// (`//host`, `/\host` and schemes are refused, so the link cannot be used to send an admin away).
pub fn local_next(next: Option<String>) -> Option<String> {
    next.filter(|p| p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') && !p.contains(':'))
}

/// Minimal query-string escaping (filter texts in pager links, label sources, `next` paths).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A stored UTC timestamp (`2026-12-07T06:10:02.123Z`). The server renders it in UTC to the
/// minute; once the page is interactive it reads as how long ago and the reader's local time
/// ("5 min ago · 07/12/2026, 07:10:02"), with the exact stored time on hover.
#[component]
pub fn Timestamp(#[prop(into)] iso: String) -> impl IntoView {
    let text = RwSignal::new(utc_minutes(&iso));
    // Effects run only in the browser, after hydration: the server's HTML and the first client
    // render agree, then the text is localised.
    #[cfg(feature = "hydrate")]
    {
        let iso = iso.clone();
        Effect::new(move |_| {
            if let Some(local) = browser_time::local_and_relative(&iso) {
                text.set(local);
            }
        });
    }
    view! { <time datetime=iso.clone() title=iso>{move || text.get()}</time> }
}

/// `2026-12-07 06:10 UTC` from an ISO-8601 UTC timestamp; anything else as it is.
pub fn utc_minutes(iso: &str) -> String {
    let well_formed = iso.len() >= 16 && iso.is_char_boundary(16) && iso.as_bytes()[10] == b'T';
    if well_formed {
        format!("{} {} UTC", &iso[..10], &iso[11..16])
    } else {
        iso.to_string()
    }
}

/// How long ago, at a glance: `just now`, `5 min ago`, `3 h ago`, `2 days ago`.
#[cfg_attr(not(any(feature = "hydrate", test)), allow(dead_code))]
pub fn ago(secs: f64) -> String {
    match secs {
        s if s < 60.0 => "just now".into(),
        s if s < 3600.0 => format!("{:.0} min ago", (s / 60.0).floor()),
        s if s < 86_400.0 => format!("{:.0} h ago", (s / 3600.0).floor()),
        s if s < 2.0 * 86_400.0 => "1 day ago".into(),
        s => format!("{:.0} days ago", (s / 86_400.0).floor()),
    }
}

#[cfg(feature = "hydrate")]
mod browser_time {
    use leptos::web_sys::js_sys::Date;

    pub fn local_and_relative(iso: &str) -> Option<String> {
        let date = Date::new(&iso.into());
        let ms = date.get_time();
        if ms.is_nan() {
            return None;
        }
        let local: String = date.to_locale_string("default", &wasm_bindgen::JsValue::UNDEFINED).into();
        Some(format!("{} · {local}", super::ago((Date::now() - ms) / 1000.0)))
    }
}

/// Shows a server-function error as a readable message instead of an empty page.
#[component]
pub fn ErrorNote(message: String) -> impl IntoView {
    view! { <p class="error" role="alert">{message}</p> }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_on_this_site_are_followed_after_login() {
        assert_eq!(local_next(Some("/jobs".into())).as_deref(), Some("/jobs"));
        assert_eq!(local_next(Some("/study/3?tab=raters".into())).as_deref(), Some("/study/3?tab=raters"));
        for away in ["//evil.example", "/\\evil.example", "https://evil.example", "jobs", "/x:y", ""] {
            assert_eq!(local_next(Some(away.into())), None, "{away}");
        }
        assert_eq!(local_next(None), None);
        assert_eq!(urlencode("/jobs?a=b c"), "%2Fjobs%3Fa%3Db%20c");
    }

    #[test]
    fn timestamps_read_at_a_glance() {
        assert_eq!(utc_minutes("2026-12-07T06:10:02.123Z"), "2026-12-07 06:10 UTC");
        assert_eq!(utc_minutes("yesterday"), "yesterday");
        assert_eq!(utc_minutes("2026-12-07 06:10:02"), "2026-12-07 06:10:02");
        assert_eq!(ago(5.0), "just now");
        assert_eq!(ago(-5.0), "just now");
        assert_eq!(ago(150.0), "2 min ago");
        assert_eq!(ago(3.0 * 3600.0 + 5.0), "3 h ago");
        assert_eq!(ago(86_400.0 * 1.5), "1 day ago");
        assert_eq!(ago(86_400.0 * 9.2), "9 days ago");
    }
}
