//! `/m/{model}`: one model, its dissectable layers, and concept search over its labels
//! (`?concept=`, so a search can be linked).

use crate::api::{get_model, search_concepts, ConceptSearchView};
use crate::components::ErrorNote;
use leptos::prelude::*;
use leptos_router::hooks::{use_params_map, use_query_map};

#[component]
pub fn ModelPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let slug = move || params.read().get("model").unwrap_or_default();
    let concept = move || query.read().get("concept").map(|c| c.trim().to_string()).unwrap_or_default();
    let detail = Resource::new(slug, get_model);
    let search = Resource::new(
        move || (slug(), concept()),
        |(slug, concept)| async move {
            if concept.is_empty() {
                Ok(None)
            } else {
                search_concepts(slug, concept).await
            }
        },
    );

    view! {
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match detail.await {
                    Err(e) => view! { <ErrorNote message=e.to_string() /> }.into_any(),
                    Ok(None) => view! { <super::NotFound /> }.into_any(),
                    Ok(Some(d)) => {
                        view! {
                            <h1>{d.model.name.clone()}</h1>
                            <p>{d.model.description.clone()}</p>
                            <form class="toolbar" method="get" action=format!("/m/{}", d.model.slug)>
                                <label>"Find neurons for a concept "
                                    <input type="search" name="concept" value=concept() placeholder="e.g. dog, stripes, wheels" maxlength="200" />
                                </label>
                                <button type="submit">"Search labels"</button>
                            </form>
                            {
                                let slug = d.model.slug.clone();
                                let concept = concept();
                                match search.await {
                                    Err(e) => view! { <ErrorNote message=e.to_string() /> }.into_any(),
                                    Ok(Some(found)) if !concept.is_empty() => view! { <ConceptHits slug concept found /> }.into_any(),
                                    Ok(_) => ().into_any(),
                                }
                            }
                            <table class="layers">
                                <thead>
                                    <tr><th>"Layer"</th><th>"Kind"</th><th>"Units"</th><th>"Map size"</th></tr>
                                </thead>
                                <tbody>
                                    {d.layers
                                        .into_iter()
                                        .map(|l| {
                                            let href = format!("/m/{}/{}", d.model.slug, l.name);
                                            let size = match (l.height, l.width) {
                                                (Some(h), Some(w)) => format!("{h}×{w}"),
                                                _ => "—".to_string(),
                                            };
                                            view! {
                                                <tr>
                                                    <td><a href=href>{l.name}</a></td>
                                                    <td>{l.kind}</td>
                                                    <td>{l.channels}</td>
                                                    <td>{size}</td>
                                                </tr>
                                            }
                                        })
                                        .collect_view()}
                                </tbody>
                            </table>
                        }
                            .into_any()
                    }
                }
            })}
        </Suspense>
    }
}

/// The neurons a concept search found, closest label first.
#[component]
fn ConceptHits(slug: String, concept: String, found: ConceptSearchView) -> impl IntoView {
    let summary = format!(
        "{} neurons whose labels are closest to “{concept}” ({} cosine over {} labels of {} neurons, every method and rank)",
        found.hits.len(),
        found.encoder,
        found.labels_searched,
        found.neurons_searched
    );
    // Said beside the hits and where there are none: labels are hidden, not missing.
    let hidden = (found.layers_hidden > 0).then(|| {
        let layers = if found.layers_hidden == 1 { "1 layer".to_string() } else { format!("{} layers", found.layers_hidden) };
        view! {
            <p class="notice" id="blinded">
                {format!("Labels of {layers} are left out while a rating study of them is open (blinding); an admin searches them all.")}
            </p>
        }
    });
    if found.labels_searched == 0 && hidden.is_some() {
        return view! { <section id="concept-hits">{hidden}</section> }.into_any();
    }
    if found.labels_searched == 0 {
        return view! {
            <p class="empty" id="concept-hits">"No labels in this model yet: run a dissection or import another method's labels, then search."</p>
        }
        .into_any();
    }
    view! {
        <section id="concept-hits">
            {hidden}
            <p class="meta">{summary}</p>
            <ol class="concept-hits">
                {found.hits.into_iter().map(|h| {
                    let href = format!("/m/{slug}/{}/{}", h.layer, h.unit);
                    let mut method = h.label.method.title().to_string();
                    if !h.label.source.is_empty() {
                        method += &format!(" ({})", h.label.source);
                    }
                    if h.label.rank > 1 {
                        method += &format!(", label {}", h.label.rank);
                    }
                    view! {
                        <li data-layer=h.layer.clone() data-unit=h.unit>
                            {h.thumb.map(|t| view! {
                                <a href=href.clone() class="thumb" tabindex="-1">
                                    <img src=t.url(Some(96)) alt="" loading="lazy" title="top image of the latest DnD run" />
                                </a>
                            })}
                            <a href=href class="unit">{format!("{} · unit {}", h.layer, h.unit)}</a>
                            {h.class_name.map(|c| view! { <span class="class-name" title="ground-truth class">{c}</span> })}
                            <span class="label" data-method=h.label.method.as_str()>
                                <span class="method">{method}</span> ": " {h.label.text}
                            </span>
                            <span class="cosine" title="cosine similarity to the search text">{format!("{:.3}", h.cosine)}</span>
                        </li>
                    }
                }).collect_view()}
            </ol>
        </section>
    }
    .into_any()
}
