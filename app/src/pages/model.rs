//! `/m/{model}`: one model and its dissectable layers.

use crate::api::get_model;
use crate::components::ErrorNote;
use leptos::prelude::*;
use leptos_router::hooks::use_params_map;

#[component]
pub fn ModelPage() -> impl IntoView {
    let params = use_params_map();
    let slug = move || params.read().get("model").unwrap_or_default();
    let detail = Resource::new(slug, get_model);

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
