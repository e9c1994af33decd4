//! DnD Studio's Leptos application: the HTML shell, the router, the pages and the server
//! functions they call. Compiled twice: with `ssr` into the server, with `hydrate` into wasm.

pub mod api;
mod components;
mod pages;
#[cfg(feature = "ssr")]
pub mod state;

use leptos::prelude::*;
use leptos_meta::{provide_meta_context, MetaTags, Stylesheet, Title};
use leptos_router::{
    components::{Route, Router, Routes},
    path, SsrMode,
};

/// Name of the generated JS/wasm/CSS bundle under `/pkg/` (see scripts/build-site.sh).
pub const BUNDLE_NAME: &str = "dnd_studio";

/// The HTML document around the app, rendered on the server only.
pub fn shell(options: LeptosOptions) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8" />
                <meta name="viewport" content="width=device-width, initial-scale=1" />
                <link rel="icon" href="/favicon.svg" type="image/svg+xml" />
                <HydrationScripts options />
                <MetaTags />
            </head>
            <body>
                <App />
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    view! {
        <Stylesheet id="leptos" href=format!("/pkg/{BUNDLE_NAME}.css") />
        <Title text="DnD Studio" />
        // Data pages render in async mode: the whole page waits for its query, so an unknown
        // model, layer or unit can still answer with a 404 status.
        <Router>
            <components::TopBar />
            <main class="page">
                <Routes fallback=pages::NotFound>
                    <Route path=path!("/") view=pages::Home />
                    <Route path=path!("/models") view=pages::Home />
                    <Route path=path!("/m/:model") view=pages::ModelPage ssr=SsrMode::Async />
                    <Route path=path!("/m/:model/:layer") view=pages::LayerPage ssr=SsrMode::Async />
                    <Route path=path!("/m/:model/:layer/:unit") view=pages::NeuronPage ssr=SsrMode::Async />
                    // The rating study: admin pages answer 403 without a session; a rater's
                    // page 404 for an unknown link and 403 for a revoked one.
                    <Route path=path!("/jobs") view=pages::JobsPage ssr=SsrMode::Async />
                    <Route path=path!("/jobs/:id") view=pages::JobPage ssr=SsrMode::Async />
                    <Route path=path!("/admin") view=pages::AdminPage ssr=SsrMode::Async />
                    <Route path=path!("/admin/studies/:id") view=pages::StudyPage ssr=SsrMode::Async />
                    <Route path=path!("/rate/:token") view=pages::RatePage ssr=SsrMode::Async />
                </Routes>
            </main>
        </Router>
    }
}
