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

/// Shows a server-function error as a readable message instead of an empty page.
#[component]
pub fn ErrorNote(message: String) -> impl IntoView {
    view! { <p class="error" role="alert">{message}</p> }
}
