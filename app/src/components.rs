//! Small pieces shared by several pages.

mod dnd_run;

pub use dnd_run::DndRunSection;
use leptos::prelude::*;
use leptos_router::components::A;

#[component]
pub fn TopBar() -> impl IntoView {
    view! {
        <header class="topbar">
            <A href="/" attr:class="brand">"DnD Studio"</A>
            <nav>
                <A href="/models">"Models"</A>
            </nav>
        </header>
    }
}

/// Shows a server-function error as a readable message instead of an empty page.
#[component]
pub fn ErrorNote(message: String) -> impl IntoView {
    view! { <p class="error" role="alert">{message}</p> }
}
