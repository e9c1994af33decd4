//! `/` and `/models`: the registered models and probing sets, with a filter box.

use crate::api::{get_overview, FirstRunProgress, FirstRunStep, ModelSummary, ProbeSetSummary};
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
                            <FirstRun progress=o.progress />
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
                    let rejected = p.rejected_phrase().map(|phrase| {
                        let more = p.rejected_count - p.rejected.len() as i64;
                        view! {
                            <details class="rejected">
                                <summary>{phrase}</summary>
                                <ul>
                                    {p.rejected.iter().map(|f| view! {
                                        <li><code>{f.rel_path.clone()}</code> ": " {f.reason.clone()}</li>
                                    }).collect_view()}
                                    {(more > 0).then(|| view! { <li class="meta">{format!("… and {more} more")}</li> })}
                                </ul>
                            </details>
                        }
                    });
                    view! {
                        <li class="card" class:hidden=move || !shown()>
                            <strong>{p.name.clone()}</strong>
                            <span class="tag">{p.source.clone()}</span>
                            <p class="meta">{format!("{} images", p.image_count)}</p>
                            {rejected}
                        </li>
                    }
                })
                .collect_view()}
        </ul>
    }
    .into_any()
}

/// What to do first on a fresh install, each step with its browser and command-line way; gone
/// once a study exists.
#[component]
fn FirstRun(progress: FirstRunProgress) -> impl IntoView {
    progress.next_step().map(|next| first_run_steps(progress, next))
}

fn first_run_steps(progress: FirstRunProgress, next: FirstRunStep) -> impl IntoView {
    let steps = FirstRunStep::ALL.into_iter().map(|step| {
        let (title, how) = step_text(step);
        let state = if progress.done(step) {
            "done"
        } else if step == next {
            "next"
        } else {
            "later"
        };
        view! {
            <li class=format!("step {state}") data-step=format!("{step:?}").to_lowercase()>
                <strong>{title}</strong>
                {(state == "done").then(|| view! { <span class="tag">"done"</span> })}
                <p class="meta">{how}</p>
            </li>
        }
    });
    view! {
        <section class="first-run" id="first-run">
            <h2>"Getting started"</h2>
            <ol>{steps.collect_view()}</ol>
        </section>
    }
}

/// A step's title and how to do it (browser first, then the command after `. scripts/env.sh`).
fn step_text(step: FirstRunStep) -> (&'static str, AnyView) {
    match step {
        FirstRunStep::Record => (
            "Record a layer",
            view! {
                "Every neuron's activations over the probing set: "
                <code>"dnd record --layer stage6"</code>
                ", or start a dissection on the " <a href="/jobs">"Jobs page"</a> ", which records its layer first."
            }
            .into_any(),
        ),
        FirstRunStep::Describe => (
            "Describe some neurons",
            view! {
                "Log in at " <a href="/admin">"/admin"</a> " and start a dissection of a few neurons on the "
                <a href="/jobs">"Jobs page"</a> ", or run " <code>"dnd dissect --layer stage6 --neurons 0-9"</code>
                ". Each takes about half a minute per neuron on a CPU."
            }
            .into_any(),
        ),
        FirstRunStep::Compare => (
            "Compare labels",
            view! {
                "A DnD run also labels each neuron by each of the paper's four scoring functions (sources \"mean scoring\" … \"topk-squared-image-products scoring\"), side by side on the neuron page. Or label the same neurons a second way: " <code>"dnd import-labels --model efficientnet-lite0 labels.csv"</code>
                " (MILAN, CLIP-Dissect, NetDissect or a layer,unit,description file), or "
                <code>"dnd clip-dissect --layer stage6 --units 0-9"</code>
                " with a CLIP model configured. The layer page then shows the methods side by side."
            }
            .into_any(),
        ),
        FirstRunStep::Study => (
            "Run a rating study",
            view! {
                "At " <a href="/admin">"/admin"</a> ", create a study of the neurons two methods (or two label sources, "
                "such as DnD's mean and topk-squared-image-products scoring) labelled, open it and "
                "invite raters with their links; results fill in as they rate."
            }
            .into_any(),
        ),
    }
}
