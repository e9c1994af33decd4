//! A neuron's latest DnD run: the components that played each role (substitutes flagged), D_top
//! with captions, and the candidate concepts with every score and their concept images.

use crate::api::jobs::{load_job_form, start_dissection, DissectJobRequest, SCORING_FUNCTIONS, SUMMARIES};
use crate::api::{
    paper_component, role_title, CandidateView, ComponentView, ConceptImageView, NeuronRunView, RunDetails, RunFailure,
    TopImageView,
};
use leptos::prelude::*;
use leptos_router::hooks::query_signal_with_options;
use leptos_router::NavigateOptions;

/// Thumbnail width of D_top crops and images (one of the widths `/img/` serves).
const TOP_WIDTH: u32 = 320;
/// Thumbnail width of concept images.
const CONCEPT_WIDTH: u32 = 96;

/// The "DnD run" section of a neuron page. `model`, `layer` and `unit` only serve the neuron
/// no run has covered yet: the command that would, and for an admin a button that queues it.
#[component]
pub fn DndRunSection(run: NeuronRunView, model: String, layer: String, unit: i64) -> impl IntoView {
    let NeuronRunView { done, failed, recorded } = run;
    let empty = done.is_none() && failed.is_none();
    // Before any run: what the recording says the unit responds to.
    let recorded = (done.is_none() && !recorded.is_empty()).then(|| view! { <RecordedTopImages images=recorded /> });
    view! {
        <section class="dnd-run" id="dnd-run">
            <h2>"DnD run"</h2>
            {failed.map(|f| view! { <FailedNeuron failure=f /> })}
            {done.map(|d| view! { <RunBody run=d /> })}
            {empty.then(|| view! {
                <p class="empty">
                    "No DnD run has covered this neuron yet. Run "
                    <code>{format!("dnd dissect --model {model} --layer {layer} --neurons {unit}")}</code>
                    " to dissect it."
                </p>
                <DescribeNeuron model=model.clone() layer=layer.clone() unit />
            })}
            {recorded}
        </section>
    }
    .into_any()
}

/// A neuron's top probing images in the layer's recording, whole, with the unit's mean
/// activation on each (no crops or captions: those come with a run).
#[component]
fn RecordedTopImages(images: Vec<studio::gallery::RecordedImage>) -> impl IntoView {
    view! {
        <h3>"Top probing images in the recording"</h3>
        <p class="meta">"By mean activation over the probing split, before any description; a DnD run adds crops, captions and concepts."</p>
        <ol class="top-images" id="recorded-top-images">
            {images.into_iter().map(|i| view! {
                <li>
                    <a href=i.image.url(None)><img src=i.image.url(Some(160)) alt="" loading="lazy" /></a>
                    <span class="meta">{format!("act {:.3}", i.activation)}</span>
                </li>
            }).collect_view()}
        </ol>
    }
}

/// For an admin, a button that queues this neuron's dissection on the server (`/jobs` shows it).
/// Whether the visitor is the admin is asked from the browser only: gallery pages are the same
/// for everyone and cached, so the server never renders the button.
#[component]
fn DescribeNeuron(model: String, layer: String, unit: i64) -> impl IntoView {
    // Loaded by an effect, which runs in the browser only: a resource would hold the server's
    // stream open waiting for an answer only the browser asks for.
    let form = RwSignal::new(None);
    Effect::new(move |_| {
        leptos::task::spawn_local(async move { form.set(load_job_form().await.ok()) });
    });
    let queued = RwSignal::new(None::<Result<i64, String>>);
    let pending = RwSignal::new(false);
    let request = StoredValue::new((model, layer));
    let describe = move |csrf: String, probe_set: String| {
        let (model, layer) = request.get_value();
        let request = DissectJobRequest {
            model,
            layer,
            neurons: unit.to_string(),
            seed: 0,
            probe_set,
            summary: SUMMARIES[0].to_string(),
            scoring: SCORING_FUNCTIONS[0].to_string(),
        };
        pending.set(true);
        leptos::task::spawn_local(async move {
            queued.set(Some(start_dissection(csrf, request).await.map_err(|e| e.to_string())));
            pending.set(false);
        });
    };
    move || {
        let options = form.get()?;
        let csrf = options.csrf?;
        let probe_set = options.probe_sets.first()?.0.clone();
        Some(view! {
            <p class="describe-neuron">
                {move || match queued.get() {
                    None => {
                        let (csrf, probe_set) = (csrf.clone(), probe_set.clone());
                        let note = format!(" (a background job on the probing set `{probe_set}`)");
                        view! {
                            <button type="button" id="describe-neuron" disabled=move || pending.get()
                                on:click=move |_| describe(csrf.clone(), probe_set.clone())>
                                "Describe this neuron now"
                            </button>
                            <span class="meta">{note}</span>
                        }
                        .into_any()
                    }
                    Some(Ok(id)) => view! {
                        <span id="describe-queued">"Queued as " <a href=format!("/jobs/{id}")>{format!("job #{id}")}</a>
                        "; reload this page when it is done."</span>
                    }
                    .into_any(),
                    Some(Err(e)) => view! { <span class="error" role="alert">{e}</span> }.into_any(),
                }}
            </p>
        })
    }
}

#[component]
fn FailedNeuron(failure: RunFailure) -> impl IntoView {
    let stage = match &failure.stage {
        Some(s) => format!("at stage “{s}”"),
        None => "at an unrecorded stage".to_string(),
    };
    view! {
        <div class="run-failed" id="run-failed" role="alert">
            <strong>{format!("Run #{} failed on this neuron {stage}", failure.run_id)}</strong>
            {failure.finished_at.map(|t| view! { <span class="meta">{format!(" ({t})")}</span> })}
            <p class="run-error">{failure.error}</p>
        </div>
    }
    .into_any()
}

fn scoring_title(scoring: &str) -> &'static str {
    match scoring {
        "mean" => "Mean",
        "topk_squared" => "TopK-Squared",
        "image_products" => "Image-Products",
        "topk_squared_image_products" => "TopK-Squared + Image-Products",
        _ => "?",
    }
}

fn fmt_score(v: Option<f64>) -> String {
    v.map(|s| format!("{s:.3}")).unwrap_or_else(|| "—".into())
}

#[component]
fn RunBody(run: RunDetails) -> impl IntoView {
    let scoring = run.scoring.clone().unwrap_or_default();
    let summary = run.summary.clone();
    let mut facts = format!(
        "Run #{} · D_top: top {} images by the spatial {} of the activation map · concepts ranked by {}",
        run.run_id,
        run.top_k,
        run.summary,
        scoring_title(&scoring)
    );
    if let Some(d_probe) = &run.d_probe {
        facts.push_str(&format!(" · drawn from {d_probe}"));
    }
    if run.leak_free {
        facts.push_str(" · leak-free: captions never name the unit's own class");
    }
    if run.run_status != "done" {
        facts.push_str(&format!(" · run {} (this neuron is finished)", run.run_status));
    } else if let Some(t) = &run.finished_at {
        facts.push_str(&format!(" · finished {t}"));
    }
    view! {
        <p class="meta run-facts">{facts}</p>
        <Provenance components=run.components uses_substitutes=run.uses_substitutes />
        <TopImages top=run.top summary=summary.clone() spatial=run.spatial />
        <Candidates candidates=run.candidates scoring=scoring summary=summary />
        <p class="meta">"The three best-scoring concepts are the DnD labels in the comparison above."</p>
    }
    .into_any()
}

/// Which component played each role, with every substitute for the paper's component flagged.
#[component]
fn Provenance(components: Vec<ComponentView>, uses_substitutes: bool) -> impl IntoView {
    let substitutes: Vec<&'static str> =
        components.iter().filter(|c| !c.paper_equivalent).map(|c| role_title(&c.role)).collect();
    let banner = (uses_substitutes || !substitutes.is_empty()).then(|| {
        view! {
            <div class="substitute-banner" id="substitute-banner" role="note">
                <strong>
                    {format!(
                        "Not the paper's set-up: {} of the {} components of this run are substitutes ({}).",
                        substitutes.len(),
                        components.len(),
                        substitutes.join(", ").to_lowercase()
                    )}
                </strong>
                " These labels show what Describe-and-Dissect does with these stand-ins; they are not \
                  results of the method as published (Bai et al., TMLR 2025), and their quality can differ."
            </div>
        }
    });
    view! {
        <h3>"Components"</h3>
        {banner}
        <table class="provenance" id="provenance">
            <thead><tr><th>"Role"</th><th>"Used in this run"</th><th>"The paper used"</th><th>"Status"</th></tr></thead>
            <tbody>
                {components.into_iter().map(|c| {
                    let status = if c.paper_equivalent {
                        view! { <span class="badge ok">"paper's kind of component"</span> }.into_any()
                    } else if c.name.is_none() {
                        view! { <span class="badge warn">"not recorded"</span> }.into_any()
                    } else {
                        view! {
                            <span class="badge warn">"substitute"</span>
                            {c.note.clone().map(|n| view! { <span class="substitute-note">{format!(" — {n}")}</span> })}
                        }.into_any()
                    };
                    view! {
                        <tr data-role=c.role.clone() class:substitute=!c.paper_equivalent>
                            <td>{role_title(&c.role)}</td>
                            <td>{c.name.clone().unwrap_or_else(|| "—".into())}</td>
                            <td>{paper_component(&c.role)}</td>
                            <td>{status}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }
    .into_any()
}

/// D_top as a grid. Crops show as crops; two views show each entry's whole image instead:
/// "Show crop regions" outlines the attention crop on it, and "Show activation heatmap" lays the
/// unit's activation map over it (crop outlined too). The maps are the ones the engine cut the
/// crops from, stored with D_top by the run (`top_images.map_*`) and drawn as transparent PNGs by
/// `/heatmap/{key}` at the thumbnail's size, so an overlay is a plain `<img>` stacked on the
/// thumbnail. The heatmap toggle is offered only when the run stored maps; a run stored before
/// maps were kept, or a layer without spatial maps, gets a note instead. Both views live in the
/// URL (`?heatmap=true`, `?regions=true`), so a link shows what its sender saw.
#[component]
fn TopImages(top: Vec<TopImageView>, summary: String, spatial: bool) -> impl IntoView {
    let show_regions = url_toggle("regions");
    let show_heatmap = url_toggle("heatmap");
    let any_crop = top.iter().any(|t| t.image.crop.is_some());
    let any_map = top.iter().any(|t| t.heatmap.is_some());
    let no_maps = (!any_map && !top.is_empty()).then(|| {
        let why = if spatial {
            "No activation heatmaps: this run was stored before D_top kept its activation maps. \
             Dissect the neuron again to see them."
        } else {
            "No activation heatmaps: this layer gives one value per image, not a spatial map."
        };
        view! { <p class="meta no-heatmaps" id="no-heatmaps">{why}</p> }
    });
    view! {
        <h3>"Top activating images (D_top)"</h3>
        <div class="top-toggles">
            {any_map.then(|| view! {
                <ViewToggle id="show-heatmap" on=show_heatmap label=" Show activation heatmap"
                    note=" (whole images; red = where the unit fired most)" />
            })}
            {any_crop.then(|| view! {
                <ViewToggle id="show-crop-regions" on=show_regions label=" Show crop regions"
                    note=" (whole images with the attention crop outlined)" />
            })}
        </div>
        {no_maps}
        <ol class="top-images" id="top-images">
            {top.into_iter().map(|t| view! { <TopImage t=t summary=summary.clone() show_regions show_heatmap /> }).collect_view()}
        </ol>
    }
    .into_any()
}

/// A view switch kept in the URL's query as `key=true` (absent = off). Switching replaces the
/// history entry and keeps the scroll position: it is a view of the same page, not a new page.
#[derive(Clone, Copy)]
struct UrlToggle {
    value: Memo<Option<bool>>,
    set: SignalSetter<Option<bool>>,
}

fn url_toggle(key: &'static str) -> UrlToggle {
    let options = NavigateOptions { replace: true, scroll: false, ..Default::default() };
    let (value, set) = query_signal_with_options::<bool>(key, options);
    UrlToggle { value, set }
}

impl UrlToggle {
    fn get(&self) -> bool {
        self.value.get().unwrap_or(false)
    }
    fn set(&self, on: bool) {
        self.set.set(on.then_some(true));
    }
}

/// A checkbox switching one way of showing D_top on or off.
#[component]
fn ViewToggle(id: &'static str, on: UrlToggle, label: &'static str, note: &'static str) -> impl IntoView {
    view! {
        <label class="crop-toggle">
            <input type="checkbox" id=id prop:checked=move || on.get() on:change=move |ev| on.set(event_target_checked(&ev)) />
            {label}
            <span class="meta">{note}</span>
        </label>
    }
}

/// Pixel size of an image of `w`×`h` served at thumbnail width `target` (never enlarged).
fn shown_size(w: i64, h: i64, target: u32) -> (i64, i64) {
    let target = target as i64;
    if w <= target {
        (w, h)
    } else {
        (target, ((h as f64 * target as f64 / w as f64).round() as i64).max(1))
    }
}

#[component]
fn TopImage(t: TopImageView, summary: String, show_regions: UrlToggle, show_heatmap: UrlToggle) -> impl IntoView {
    let rank = t.rank;
    let is_crop = t.image.crop.is_some();
    let (src_w, src_h) = (t.width, t.height);
    let heatmap = t.heatmap_url(TOP_WIDTH);
    let picture = {
        let image = t.image.clone();
        move || {
            let heat = heatmap.clone().filter(|_| show_heatmap.get());
            let crop = image.crop;
            if heat.is_some() || (crop.is_some() && show_regions.get()) {
                // The whole image, with the heatmap and/or the crop's region on top.
                let (w, h) = shown_size(src_w, src_h, TOP_WIDTH);
                let pct = |v: i64, of: i64| format!("{:.3}%", v as f64 * 100.0 / of.max(1) as f64);
                let region = crop.map(|[x0, y0, x1, y1]| {
                    format!(
                        "left:{};top:{};width:{};height:{}",
                        pct(x0, src_w),
                        pct(y0, src_h),
                        pct(x1 - x0, src_w),
                        pct(y1 - y0, src_h)
                    )
                });
                let alt = match (heat.is_some(), crop.is_some()) {
                    (true, true) => format!("rank {rank}: whole image with activation heatmap, crop outlined"),
                    (true, false) => format!("rank {rank}: whole image with activation heatmap"),
                    _ => format!("rank {rank}: whole image, crop outlined"),
                };
                let frame = if heat.is_some() { "region-frame with-heatmap" } else { "region-frame" };
                view! {
                    <span class=frame>
                        <img src=image.whole().url(Some(TOP_WIDTH)) width=w height=h alt=alt class="whole" />
                        {heat.map(|src| view! { <img src=src width=w height=h alt="" class="heatmap" /> })}
                        {region.map(|style| view! { <span class="region-box" style=style></span> })}
                    </span>
                }
                .into_any()
            } else {
                let (w, h) = match crop {
                    Some([x0, y0, x1, y1]) => shown_size(x1 - x0, y1 - y0, TOP_WIDTH),
                    None => shown_size(src_w, src_h, TOP_WIDTH),
                };
                let alt = if crop.is_some() { format!("rank {rank}: attention crop") } else { format!("rank {rank}") };
                let class = if crop.is_some() { "crop" } else { "whole" };
                view! { <img src=image.url(Some(TOP_WIDTH)) width=w height=h alt=alt class=class /> }.into_any()
            }
        }
    };
    // The run ranks by one summary; a crop only has that one.
    let (primary, other_name, other) =
        if summary == "max" { (t.act_max, "mean", t.act_mean) } else { (t.act_mean, "max", t.act_max) };
    let activation = format!(
        "{summary} act. {}{}",
        fmt_score(primary),
        other.map(|v| format!(" · {other_name} {v:.3}")).unwrap_or_default()
    );
    view! {
        <li class="top-image" data-rank=rank data-crop=is_crop.to_string()>
            <figure>
                <div class="picture">{picture}</div>
                <figcaption>
                    <span class="rank">{format!("#{rank}")}</span>
                    {is_crop.then(|| view! { <span class="badge">"crop"</span> })}
                    <span class="activation">{activation}</span>
                    {t.simplified_caption.map(|c| view! { <span class="caption-simplified" title="simplified by the language model">{c}</span> })}
                    {t.raw_caption.map(|c| view! { <span class="caption-raw" title="captioner output">{c}</span> })}
                </figcaption>
            </figure>
        </li>
    }
    .into_any()
}

/// The candidate set with its score under each scoring function; the chosen concept highlighted.
#[component]
fn Candidates(candidates: Vec<CandidateView>, scoring: String, summary: String) -> impl IntoView {
    const COLUMNS: [&str; 4] = ["mean", "topk_squared", "image_products", "topk_squared_image_products"];
    if candidates.is_empty() {
        return view! { <h3>"Candidate concepts"</h3><p class="empty">"This run kept no candidate concepts."</p> }
            .into_any();
    }
    let headers = COLUMNS
        .iter()
        .map(|c| {
            let used = *c == scoring;
            view! {
                <th class="score" class:used=used data-scoring=*c title=used.then_some("the scoring function this run used")>
                    {scoring_title(c)}{used.then_some(" ★")}
                </th>
            }
        })
        .collect_view();
    view! {
        <h3>"Candidate concepts"</h3>
        <table class="candidates" id="candidates">
            <thead>
                <tr>
                    <th>"Concept"</th><th>"Origin"</th>{headers}
                    <th>{format!("Concept images (activation, {summary})")}</th>
                </tr>
            </thead>
            <tbody>
                {candidates.into_iter().map(|c| {
                    let scores = [c.score_mean, c.score_topk_squared, c.score_image_products, c.score_combined];
                    view! {
                        <tr class:selected=c.selected data-selected=c.selected.to_string()>
                            <td class="concept">
                                {c.text.clone()}
                                {c.selected.then(|| view! { <span class="badge ok">"selected"</span> })}
                            </td>
                            <td>{c.origin.title()}</td>
                            {scores.into_iter().zip(COLUMNS).map(|(s, col)| view! {
                                <td class="score" class:used=col == scoring>{fmt_score(s)}</td>
                            }).collect_view()}
                            <td><ConceptImages images=c.images concept=c.text /></td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }
    .into_any()
}

#[component]
fn ConceptImages(images: Vec<ConceptImageView>, concept: String) -> impl IntoView {
    if images.is_empty() {
        return view! { <span class="meta">"none"</span> }.into_any();
    }
    view! {
        <ul class="concept-images">
            {images.into_iter().map(|i| {
                let act = fmt_score(i.activation);
                let title = format!("{} image for “{concept}”, activation {act}{}", i.source,
                    i.rank.map(|r| format!(", rank {r} of all concept images")).unwrap_or_default());
                view! {
                    <li title=title>
                        <img src=i.image.url(Some(CONCEPT_WIDTH)) alt="" loading="lazy" />
                        <span class="activation">{act}</span>
                    </li>
                }
            }).collect_view()}
        </ul>
    }
    .into_any()
}
