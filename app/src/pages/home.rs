//! `/` and `/models`: the registered models and probing sets, with a filter box.

use crate::api::{get_overview, ModelSummary, ProbeSetSummary};
use crate::components::ErrorNote;
use leptos::prelude::*;

fn matches(filter: &str, fields: &[&str]) -> bool {
    let filter = filter.trim().to_lowercase();
    filter.is_empty() || fields.iter().any(|f| f.to_lowercase().contains(&filter))
}

#[component]
pub fn Home() -> impl IntoView {
    let overview = Resource::new(|| (), |_| get_overview());
    // Client-side filtering: needs no round trip, and proves the page hydrated.
    let (filter, set_filter) = signal(String::new());

    view! {
        <h1>"Neurons, described and checked"</h1>
        <p class="lead">
            "DnD Studio labels what the neurons of vision networks detect with Describe-and-Dissect, "
            "compares those labels with other methods, and runs rating studies to check them."
        </p>
        <label class="filter">
            "Filter "
            <input
                type="search"
                id="filter"
                placeholder="model or probing set name"
                prop:value=filter
                on:input=move |ev| set_filter.set(event_target_value(&ev))
            />
        </label>
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match overview.await {
                    Err(e) => view! { <ErrorNote message=e.to_string() /> }.into_any(),
                    Ok(o) => {
                        let models = o.models.clone();
                        let sets = o.probe_sets.clone();
                        view! {
                            <section>
                                <h2>"Models"</h2>
                                <ModelList models filter />
                            </section>
                            <section>
                                <h2>"Probing sets"</h2>
                                <ProbeSetList sets filter />
                            </section>
                        }
                            .into_any()
                    }
                }
            })}
        </Suspense>
    }
}

#[component]
fn ModelList(models: Vec<ModelSummary>, filter: ReadSignal<String>) -> impl IntoView {
    if models.is_empty() {
        return view! {
            <p class="empty">"No model is registered yet. Run " <code>"make run"</code> " after set-up to register the built-in one."</p>
        }
        .into_any();
    }
    view! {
        <ul class="cards" id="models">
            {models
                .into_iter()
                .map(|m| {
                    let shown = {
                        let (name, slug, desc) = (m.name.clone(), m.slug.clone(), m.description.clone());
                        move || matches(&filter.get(), &[&name, &slug, &desc])
                    };
                    view! {
                        <li class="card" class:hidden=move || !shown()>
                            <a href=format!("/m/{}", m.slug)>{m.name.clone()}</a>
                            <span class="tag">{m.source.clone()}</span>
                            <p>{m.description.clone()}</p>
                            <p class="meta">{format!("{} dissectable layers", m.layer_count)}</p>
                        </li>
                    }
                })
                .collect_view()}
        </ul>
    }
    .into_any()
}

#[component]
fn ProbeSetList(sets: Vec<ProbeSetSummary>, filter: ReadSignal<String>) -> impl IntoView {
    if sets.is_empty() {
        return view! { <p class="empty">"No probing set is registered yet."</p> }.into_any();
    }
    view! {
        <ul class="cards" id="probe-sets">
            {sets
                .into_iter()
                .map(|p| {
                    let shown = {
                        let (name, slug) = (p.name.clone(), p.slug.clone());
                        move || matches(&filter.get(), &[&name, &slug])
                    };
                    let rejected = (p.rejected_count > 0)
                        .then(|| format!(", {} files rejected", p.rejected_count));
                    view! {
                        <li class="card" class:hidden=move || !shown()>
                            <strong>{p.name.clone()}</strong>
                            <span class="tag">{p.source.clone()}</span>
                            <p class="meta">{format!("{} images", p.image_count)} {rejected}</p>
                        </li>
                    }
                })
                .collect_view()}
        </ul>
    }
    .into_any()
}
