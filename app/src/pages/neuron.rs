//! `/m/{model}/{layer}/{unit}`: one neuron, every method's labels side by side, previous/next
//! unit (also with the ← and → keys once the page is interactive), and below them the neuron's
//! latest DnD run (components, D_top, candidate concepts).

use crate::api::{get_neuron, get_neuron_run};
use crate::components::{DndRunSection, ErrorNote};
use leptos::prelude::*;
use leptos_router::hooks::{use_location, use_navigate, use_params_map};

#[component]
pub fn NeuronPage() -> impl IntoView {
    let params = use_params_map();
    let key = move || {
        let p = params.read();
        (
            p.get("model").unwrap_or_default(),
            p.get("layer").unwrap_or_default(),
            p.get("unit").and_then(|u| u.parse::<i64>().ok()).unwrap_or(-1),
        )
    };
    let neuron = Resource::new(key, |(m, l, u)| get_neuron(m, l, u));
    // A separate query, so the label comparison never waits for the run's images and concepts.
    let run = Resource::new(key, |(m, l, u)| get_neuron_run(m, l, u));
    let key_untracked = move || untrack(key);

    // Keyboard navigation between units (client side only).
    let navigate = use_navigate();
    let location = use_location();
    let handle = window_event_listener(leptos::ev::keydown, move |ev| {
        // Leave the arrow keys to text fields and to the browser's own shortcuts.
        let typing = document()
            .active_element()
            .is_some_and(|el| matches!(el.tag_name().as_str(), "INPUT" | "TEXTAREA" | "SELECT"));
        if typing || ev.alt_key() || ev.ctrl_key() || ev.meta_key() {
            return;
        }
        // Step from the unit in the URL (not the loaded data, which lags behind fast presses);
        // the loaded data only supplies the layer's size.
        let Some(Ok(Some(n))) = neuron.get_untracked() else { return };
        let (model, layer, unit) = key_untracked();
        let to = match ev.key().as_str() {
            "ArrowLeft" if unit > 0 => unit - 1,
            "ArrowRight" if unit + 1 < n.layer.channels => unit + 1,
            _ => return,
        };
        // The view toggles (`?heatmap=true`, …) come along to the next unit.
        let search = location.search.get_untracked();
        let query = if search.is_empty() { String::new() } else { format!("?{search}") };
        navigate(&format!("/m/{model}/{layer}/{to}{query}"), Default::default());
    });
    on_cleanup(move || handle.remove());

    view! {
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match neuron.await {
                    Err(e) => view! { <ErrorNote message=e.to_string() /> }.into_any(),
                    Ok(None) => view! { <super::NotFound /> }.into_any(),
                    Ok(Some(n)) => {
                        let layer_href = format!("/m/{}/{}", n.model_slug, n.layer.name);
                        let clip_note = n.clip_dissect_note.clone();
                        let unit_href = {
                            let base = layer_href.clone();
                            move |u: i64| format!("{base}/{u}")
                        };
                        view! {
                            <nav class="crumbs">
                                <a href="/">"Models"</a> " › "
                                <a href=format!("/m/{}", n.model_slug)>{n.model_name.clone()}</a> " › "
                                <a href=layer_href.clone()>{n.layer.name.clone()}</a> " › "
                                {format!("unit {}", n.unit)}
                            </nav>
                            <h1>{format!("{} · {} · unit {}", n.model_name, n.layer.name, n.unit)}</h1>
                            {n.class_name.clone().map(|c| view! { <p class="meta">"Ground-truth class: " <strong>{c}</strong></p> })}
                            <nav class="pager">
                                {n.prev.map(|u| view! { <a href=unit_href(u) rel="prev" id="prev-unit">{format!("← unit {u}")}</a> })}
                                {n.next.map(|u| view! { <a href=unit_href(u) rel="next" id="next-unit">{format!("unit {u} →")}</a> })}
                                <span class="meta">" (keys ← →)"</span>
                            </nav>
                            <h2>"Labels by method"</h2>
                            {if let Some(b) = &n.blinded {
                                view! { <p class="notice" id="blinded">{b.notice()}</p> }.into_any()
                            } else if n.labels.is_empty() {
                                view! { <p class="empty">"No method has labelled this neuron yet."</p> }.into_any()
                            } else {
                                view! {
                                    <table class="comparison" id="comparison">
                                        <thead><tr><th>"Method"</th><th>"Rank"</th><th>"Label"</th><th>"Score"</th></tr></thead>
                                        <tbody>
                                            {n.labels.into_iter().map(|l| {
                                                let method = if l.source.is_empty() {
                                                    l.method.title().to_string()
                                                } else {
                                                    format!("{} ({})", l.method.title(), l.source)
                                                };
                                                view! {
                                                    <tr data-method=l.method.as_str()>
                                                        <td>{method}</td>
                                                        <td>{l.rank}</td>
                                                        <td>{l.text}</td>
                                                        <td>{l.score.map(|s| format!("{s:.4}")).unwrap_or_else(|| "—".into())}</td>
                                                    </tr>
                                                }
                                            }).collect_view()}
                                        </tbody>
                                    </table>
                                }.into_any()
                            }}
                            // Said in full once, on the layer page; here folded to one line.
                            {clip_note.map(|t| view! {
                                <details class="meta" id="clip-dissect-note">
                                    <summary>"Why is there no CLIP-Dissect label?"</summary>
                                    {t}
                                </details>
                            })}
                        }
                        .into_any()
                    }
                }
            })}
        </Suspense>
        <Suspense fallback=|| view! { <p class="meta">"Loading the DnD run…"</p> }>
            {move || Suspend::new(async move {
                let (model, layer, unit) = key_untracked();
                match run.await {
                    Err(e) => view! { <ErrorNote message=e.to_string() /> }.into_any(),
                    // The page above already says the neuron does not exist.
                    Ok(None) => ().into_any(),
                    Ok(Some(r)) => view! { <DndRunSection run=r model layer unit /> }.into_any(),
                }
            })}
        </Suspense>
    }
}
