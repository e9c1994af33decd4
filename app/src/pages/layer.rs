//! `/m/{model}/{layer}`: a grid of the layer's neurons with every method's label, paginated,
//! filterable by label text or to labelled neurons, sortable, with a jump-to-unit box. All state
//! lives in the URL (`?q=&sort=&labelled=1&page=`), so every view can be linked.

use crate::api::{get_layer, LayerQuery, LayerSort};
use crate::components::{urlencode, ErrorNote};
use leptos::prelude::*;
use leptos_router::components::Redirect;
use leptos_router::hooks::{use_params_map, use_query_map};

#[component]
pub fn LayerPage() -> impl IntoView {
    let params = use_params_map();
    let query = use_query_map();
    let request = move || {
        let p = params.read();
        let q = query.read();
        LayerQuery {
            model: p.get("model").unwrap_or_default(),
            layer: p.get("layer").unwrap_or_default(),
            page: q.get("page").and_then(|v| v.parse().ok()).unwrap_or(1),
            filter: q.get("q").unwrap_or_default(),
            sort: LayerSort::from_param(q.get("sort").as_deref()),
            labelled_only: q.get("labelled").is_some_and(|v| v == "1"),
        }
    };
    let jump = move || query.read().get("unit").filter(|u| u.trim().parse::<u32>().is_ok());
    let view_data = Resource::new(request, get_layer);

    view! {
        {move || {
            jump().map(|unit| {
                let p = params.read();
                let path = format!("/m/{}/{}/{}", p.get("model").unwrap_or_default(), p.get("layer").unwrap_or_default(), unit.trim());
                view! { <Redirect path /> }
            })
        }}
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let req = request();
                match view_data.await {
                    Err(e) => view! { <ErrorNote message=e.to_string() /> }.into_any(),
                    Ok(None) => view! { <super::NotFound /> }.into_any(),
                    Ok(Some(v)) => {
                        let base = format!("/m/{}/{}", req.model, req.layer);
                        let page_link = {
                            let (base, filter, sort) = (base.clone(), req.filter.clone(), req.sort.as_param());
                            let labelled = if req.labelled_only { "&labelled=1" } else { "" };
                            move |page: i64| format!("{base}?q={}&sort={sort}{labelled}&page={page}", urlencode(&filter))
                        };
                        let prev = (v.page > 1).then(|| page_link(v.page - 1));
                        let next = (v.page < v.pages).then(|| page_link(v.page + 1));
                        let blinded = v.blinded.as_ref().map(|b| b.notice());
                        let no_labels = v.sources.is_empty() && blinded.is_none();
                        let clip_note = v.clip_dissect_note.clone();
                        view! {
                            <nav class="crumbs">
                                <a href="/">"Models"</a> " › "
                                <a href=format!("/m/{}", req.model)>{v.model_name.clone()}</a> " › "
                                {v.layer.name.clone()}
                            </nav>
                            <h1>{format!("{} · {}", v.model_name, v.layer.name)}</h1>
                            <form class="toolbar" method="get" action=base.clone()>
                                <label>"Filter labels " <input type="search" name="q" value=req.filter.clone() placeholder="e.g. dog" /></label>
                                <label>"Sort "
                                    <select name="sort">
                                        <option value="unit" selected=req.sort == LayerSort::Unit>"by unit"</option>
                                        <option value="score" selected=req.sort == LayerSort::Score>"by DnD label score"</option>
                                    </select>
                                </label>
                                <label>
                                    <input type="checkbox" name="labelled" value="1" id="labelled-only" checked=req.labelled_only />
                                    " labelled only"
                                </label>
                                <button type="submit">"Apply"</button>
                            </form>
                            <form class="toolbar" method="get" action=base.clone()>
                                <label>"Go to unit " <input type="number" name="unit" min="0" max=v.layer.channels - 1 /></label>
                                <button type="submit">"Go"</button>
                            </form>
                            <p class="meta">
                                {format!("{} of {} neurons", v.matching, v.layer.channels)}
                                {(!req.filter.is_empty()).then(|| format!(" match “{}”", req.filter))}
                                {req.labelled_only.then_some(" (labelled only)")}
                                {format!(" · page {} of {}", v.page, v.pages)}
                            </p>
                            {blinded.map(|t| view! { <p class="notice" id="blinded">{t}</p> })}
                            {(!v.sources.is_empty()).then(|| {
                                let links = v.sources.iter().map(|s| {
                                    let m = s.method;
                                    let mut base = format!("/export/{}/{}?method={m}", req.model, req.layer);
                                    let mut title = m.title().to_string();
                                    if !s.source.is_empty() {
                                        base += &format!("&source={}", urlencode(&s.source));
                                        title += &format!(" ({})", s.source);
                                    }
                                    view! {
                                        <span class="export">
                                            {title} ": "
                                            <a href=format!("{base}&format=json") download="">"JSON"</a> " · "
                                            <a href=format!("{base}&format={}", m.export_layout().as_str()) download="">"CSV"</a>
                                        </span>
                                    }
                                }).collect_view();
                                view! { <p class="exports">"Export labels — " {links}</p> }
                            })}
                            {no_labels.then(|| view! {
                                <p class="empty">"No labels for this layer yet: run a dissection or import another method's labels."</p>
                            })}
                            {clip_note.map(|t| view! { <p class="meta" id="clip-dissect-note">{t}</p> })}
                            <ul class="neuron-grid" id="neurons">
                                {v.neurons.into_iter().map(|n| {
                                    let href = format!("{base}/{}", n.unit);
                                    view! {
                                        <li class="neuron-card">
                                            {n.thumb.map(|t| {
                                                let title = match n.recorded_activation {
                                                    Some(a) => format!("top probing image of the recording (mean activation {a:.3}); no DnD run yet"),
                                                    None => "top image of the latest DnD run".to_string(),
                                                };
                                                view! {
                                                    <a href=href.clone() class="thumb" tabindex="-1">
                                                        <img src=t.url(Some(96)) alt="" loading="lazy" title=title
                                                            data-from=if n.recorded_activation.is_some() { "recording" } else { "run" } />
                                                    </a>
                                                }
                                            })}
                                            {n.recorded_activation.map(|a| view! {
                                                <p class="meta recorded" title="mean activation of the recording's top probing image">
                                                    {format!("act {a:.2}")}
                                                </p>
                                            })}
                                            <a href=href class="unit">{format!("unit {}", n.unit)}</a>
                                            {n.class_name.map(|c| view! { <p class="class-name" title="ground-truth class">{c}</p> })}
                                            <dl>
                                                {n.labels.into_iter().map(|l| view! {
                                                    <dt>{l.method.title()}</dt>
                                                    <dd data-method=l.method.as_str()>{l.text}</dd>
                                                }).collect_view()}
                                            </dl>
                                        </li>
                                    }
                                }).collect_view()}
                            </ul>
                            <nav class="pager">
                                {prev.map(|h| view! { <a href=h rel="prev">"← previous page"</a> })}
                                {next.map(|h| view! { <a href=h rel="next">"next page →"</a> })}
                            </nav>
                        }
                        .into_any()
                    }
                }
            })}
        </Suspense>
    }
}
