//! The "New study" form: a model, which neurons of which layers, 2–6 methods to compare, and the
//! paper's settings (3 raters per neuron, 10 images per task, its question). Each layer row shows
//! what every method has labelled there and whether activations are recorded, because a neuron
//! is only eligible when every chosen method labelled it and its images can be drawn.

use super::{method_key, method_name, readable};
use crate::api::method_title;
use crate::api::study::{
    create_study, study_form_options, LayerChoice, LayerLabels, MethodRef, NewStudy, NewStudyOptions,
    DEFAULT_INSTRUCTIONS,
};
use crate::components::ErrorNote;
use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_router::hooks::use_navigate;
use std::collections::BTreeMap;

/// What the admin chose for one layer.
#[derive(Clone, Debug, Default, PartialEq)]
struct LayerPick {
    on: bool,
    units: String,
}

/// The form's plain fields as typed, before parsing.
#[derive(Clone, Debug, PartialEq)]
struct FormFields {
    name: String,
    model: String,
    raters: String,
    images: String,
    summary: String,
    seed: String,
    instructions: String,
    attention: String,
}

/// The units a layer gets when the admin ticks it without typing any.
fn default_units(l: &LayerLabels) -> String {
    format!("random:{}", l.channels.clamp(1, 50))
}

/// Every method (and source) that labelled something in any of the model's layers.
fn methods_seen(layers: &[LayerLabels]) -> Vec<MethodRef> {
    let mut seen: Vec<MethodRef> = Vec::new();
    for (m, _) in layers.iter().flat_map(|l| &l.methods) {
        if !seen.contains(m) {
            seen.push(m.clone());
        }
    }
    seen.sort_by(|a, b| (&a.method, &a.source).cmp(&(&b.method, &b.source)));
    seen
}

fn whole_number<T: std::str::FromStr>(text: &str, what: &str) -> Result<T, String> {
    text.trim().parse().map_err(|_| format!("{what} must be a whole number, not “{}”", text.trim()))
}

/// The study the form describes, in the model's layer order; the server checks the rest.
fn build_study(
    f: &FormFields,
    opts: &NewStudyOptions,
    picks: &BTreeMap<String, LayerPick>,
    chosen: &[MethodRef],
) -> Result<NewStudy, String> {
    let layers: Vec<LayerChoice> = opts
        .layers
        .iter()
        .filter_map(|l| {
            let pick = picks.get(&l.layer).filter(|p| p.on)?;
            let units = if pick.units.trim().is_empty() { default_units(l) } else { pick.units.trim().to_string() };
            Some(LayerChoice { layer: l.layer.clone(), units })
        })
        .collect();
    if layers.is_empty() {
        return Err("Choose at least one layer.".into());
    }
    let methods: Vec<MethodRef> = methods_seen(&opts.layers).into_iter().filter(|m| chosen.contains(m)).collect();
    if !(2..=6).contains(&methods.len()) {
        return Err(format!("Choose 2 to 6 methods to compare ({} chosen).", methods.len()));
    }
    let mut study = NewStudy::with_defaults(f.name.trim(), &f.model, layers, methods);
    study.raters_per_item = whole_number(&f.raters, "Raters per neuron")?;
    study.images_per_item = whole_number(&f.images, "Images per task")?;
    study.seed = whole_number(&f.seed, "The seed")?;
    study.attention_checks = whole_number(&f.attention, "The number of attention checks")?;
    study.image_summary = f.summary.clone();
    study.instructions = f.instructions.trim().to_string();
    Ok(study)
}

#[component]
pub fn NewStudyForm(csrf: String) -> impl IntoView {
    // `None` = the server's first model.
    let model = RwSignal::new(None::<String>);
    let options = Resource::new(move || model.get(), study_form_options);
    let picks = RwSignal::new(BTreeMap::<String, LayerPick>::new());
    let chosen = RwSignal::new(Vec::<MethodRef>::new());
    let name = RwSignal::new(String::new());
    let raters = RwSignal::new("3".to_string());
    let images = RwSignal::new("10".to_string());
    let summary = RwSignal::new("mean".to_string());
    let seed = RwSignal::new("0".to_string());
    let instructions = RwSignal::new(DEFAULT_INSTRUCTIONS.to_string());
    let attention = RwSignal::new("0".to_string());
    let error = RwSignal::new(None::<String>);
    let pending = RwSignal::new(false);
    let csrf = StoredValue::new(csrf);
    let navigate = use_navigate();

    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        let Some(Ok(opts)) = options.get_untracked() else { return };
        let Some(model_slug) = model.get_untracked().or_else(|| opts.models.first().map(|m| m.0.clone())) else {
            error.set(Some("No model is registered.".into()));
            return;
        };
        let fields = FormFields {
            name: name.get_untracked(),
            model: model_slug,
            raters: raters.get_untracked(),
            images: images.get_untracked(),
            summary: summary.get_untracked(),
            seed: seed.get_untracked(),
            instructions: instructions.get_untracked(),
            attention: attention.get_untracked(),
        };
        let study = match picks.with_untracked(|p| chosen.with_untracked(|c| build_study(&fields, &opts, p, c))) {
            Ok(s) => s,
            Err(msg) => {
                error.set(Some(msg));
                return;
            }
        };
        error.set(None);
        pending.set(true);
        let navigate = navigate.clone();
        spawn_local(async move {
            match create_study(csrf.get_value(), study).await {
                Ok(id) => navigate(&format!("/admin/studies/{id}"), Default::default()),
                Err(e) => {
                    error.set(Some(readable(&e)));
                    pending.set(false);
                }
            }
        });
    };

    let pick_model = move |ev| {
        model.set(Some(event_target_value(&ev)));
        picks.set(BTreeMap::new());
        chosen.set(Vec::new());
    };

    view! {
        <section class="new-study">
            <h2>"New study"</h2>
            <form id="new-study" on:submit=submit>
                {view! {
                <div class="form-grid">
                    <label for="study-name">"Name"</label>
                    <input type="text" id="study-name" name="name" required placeholder="e.g. Stage 6, three methods"
                        bind:value=name />
                    <Transition fallback=|| view! { <span class="meta">"Loading models…"</span> }>
                        {move || Suspend::new(async move {
                            match options.await {
                                Err(e) => view! { <ErrorNote message=readable(&e) /> }.into_any(),
                                Ok(opts) => {
                                    let current = model.get_untracked()
                                        .or_else(|| opts.models.first().map(|m| m.0.clone()))
                                        .unwrap_or_default();
                                    view! {
                                        <label for="study-model">"Model"</label>
                                        <select id="study-model" name="model" on:change=pick_model>
                                            {opts.models.into_iter().map(|(slug, title)| {
                                                let selected = slug == current;
                                                view! { <option value=slug selected=selected>{title}</option> }
                                            }).collect_view()}
                                        </select>
                                    }
                                    .into_any()
                                }
                            }
                        })}
                    </Transition>
                </div>
                }.into_any()}
                <Transition fallback=|| view! { <p class="meta">"Loading layers…"</p> }>
                    {move || Suspend::new(async move {
                        match options.await {
                            Err(_) => ().into_any(),
                            Ok(opts) => view! {
                                <LayerPicker layers=opts.layers.clone() picks />
                                <MethodPicker methods=methods_seen(&opts.layers) chosen />
                            }
                            .into_any(),
                        }
                    })}
                </Transition>
                {view! {
                <div class="form-grid">
                    <label for="study-raters">"Raters per neuron"</label>
                    <input type="number" id="study-raters" name="raters_per_item" min="1" max="100" bind:value=raters />
                    <label for="study-images">"Images per task"</label>
                    <input type="number" id="study-images" name="images_per_item" min="1" max="100" bind:value=images />
                    <label for="study-summary">"Images chosen by"</label>
                    <select id="study-summary" name="image_summary" on:change=move |ev| summary.set(event_target_value(&ev))>
                        <option value="mean" selected=true>"mean activation"</option>
                        <option value="max">"max activation"</option>
                    </select>
                    <label for="study-seed">"Seed (random samples)"</label>
                    <input type="number" id="study-seed" name="seed" min="0" bind:value=seed />
                    <label for="study-attention">"Attention checks"</label>
                    <input type="number" id="study-attention" name="attention_checks" min="0" bind:value=attention />
                    <label for="study-instructions">"Question shown to raters"</label>
                    <textarea id="study-instructions" name="instructions" rows="2" bind:value=instructions></textarea>
                </div>
                }.into_any()}
                {move || error.get().map(|m| view! { <p class="error" role="alert" id="new-study-error">{m}</p> })}
                <button type="submit" id="create-study" disabled=move || pending.get()>"Create study"</button>
                <span class="meta">" The study starts as a draft: open it on its page when it looks right."</span>
            </form>
        </section>
    }
    .into_any()
}

/// One row per layer: tick it, say which units (`random:50`, `0-49`, `3,7`).
#[component]
fn LayerPicker(layers: Vec<LayerLabels>, picks: RwSignal<BTreeMap<String, LayerPick>>) -> impl IntoView {
    if layers.is_empty() {
        return view! { <p class="empty">"This model has no layers."</p> }.into_any();
    }
    view! {
        <table class="layer-picker" id="study-layers">
            <thead>
                <tr><th>"Layer"</th><th>"Neurons"</th><th>"Labelled per method"</th><th>"Activations"</th><th>"Which neurons to rate"</th></tr>
            </thead>
            <tbody>
                {layers.into_iter().map(|l| {
                    let default = default_units(&l);
                    let layer = l.layer.clone();
                    let (for_checked, for_toggle, for_units, for_typing) = (layer.clone(), layer.clone(), layer.clone(), layer.clone());
                    let default_toggle = default.clone();
                    // Ticking a layer fills in the default sample, so the admin sees what will be rated.
                    let toggle = move |ev| {
                        let on = event_target_checked(&ev);
                        picks.update(|p| {
                            let pick = p.entry(for_toggle.clone()).or_default();
                            pick.on = on;
                            if on && pick.units.trim().is_empty() {
                                pick.units = default_toggle.clone();
                            }
                        });
                    };
                    // Typing units selects the layer: nobody types units for a layer they do not want.
                    let type_units = move |ev| {
                        let units = event_target_value(&ev);
                        picks.update(|p| {
                            let pick = p.entry(for_typing.clone()).or_default();
                            pick.on = !units.trim().is_empty() || pick.on;
                            pick.units = units;
                        });
                    };
                    let counts = if l.methods.is_empty() {
                        view! { <span class="meta">"no labels"</span> }.into_any()
                    } else {
                        l.methods.iter().map(|(m, n)| view! {
                            <span class="label-count" data-method=method_key(m)>{format!("{} {n}", method_name(m))}</span>
                        }).collect_view().into_any()
                    };
                    view! {
                        <tr data-layer=layer.clone()>
                            <td>
                                <label>
                                    <input type="checkbox" id=format!("layer-{layer}") name="layers" value=layer.clone()
                                        prop:checked=move || picks.with(|p| p.get(&for_checked).is_some_and(|x| x.on))
                                        on:change=toggle />
                                    " " {layer.clone()}
                                </label>
                            </td>
                            <td class="num">{l.channels}</td>
                            <td class="label-counts">{counts}</td>
                            <td>
                                {if l.recorded {
                                    view! { <span class="badge ok">"recorded"</span> }.into_any()
                                } else {
                                    view! { <span class="badge warn" title="run `dnd record` for this layer first">"not recorded"</span> }.into_any()
                                }}
                            </td>
                            <td>
                                <input type="text" class="units" id=format!("units-{layer}") name=format!("units-{layer}")
                                    placeholder=format!("e.g. {default}")
                                    prop:value=move || picks.with(|p| p.get(&for_units).map(|x| x.units.clone()).unwrap_or_default())
                                    on:input=type_units />
                            </td>
                        </tr>
                    }
                    .into_any()
                }).collect_view()}
            </tbody>
        </table>
    }
    .into_any()
}

/// A checkbox per method seen in the model's layers; 2–6 must be ticked.
#[component]
fn MethodPicker(methods: Vec<MethodRef>, chosen: RwSignal<Vec<MethodRef>>) -> impl IntoView {
    let count = move || chosen.with(Vec::len);
    view! {
        <fieldset class="method-picker" id="study-methods">
            <legend>"Methods to compare (2–6)"</legend>
            {if methods.is_empty() {
                view! { <p class="empty">"No method has labelled this model's neurons yet: dissect or import labels first."</p> }.into_any()
            } else {
                methods.into_iter().map(|m| {
                    let key = method_key(&m);
                    let (for_checked, for_toggle) = (m.clone(), m.clone());
                    let toggle = move |ev| {
                        let on = event_target_checked(&ev);
                        chosen.update(|c| {
                            c.retain(|x| x != &for_toggle);
                            if on {
                                c.push(for_toggle.clone());
                            }
                        });
                    };
                    view! {
                        <label class="method-choice">
                            <input type="checkbox" id=format!("method-{key}") name="methods" value=key.clone() data-method=m.method.clone()
                                prop:checked=move || chosen.with(|c| c.contains(&for_checked))
                                on:change=toggle />
                            " " {method_title(&m.method)}
                            {(!m.source.is_empty()).then(|| view! { <span class="meta">{format!(" ({})", m.source)}</span> })}
                        </label>
                    }
                }).collect_view().into_any()
            }}
            <span class="meta">{move || format!(" {} chosen", count())}</span>
        </fieldset>
    }
    .into_any()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(name: &str, methods: &[(&str, &str)]) -> LayerLabels {
        LayerLabels {
            layer: name.into(),
            channels: 192,
            methods: methods
                .iter()
                .map(|(m, s)| (MethodRef { method: m.to_string(), source: s.to_string() }, 5))
                .collect(),
            recorded: true,
        }
    }

    fn fields() -> FormFields {
        FormFields {
            name: " S ".into(),
            model: "m".into(),
            raters: "3".into(),
            images: "10".into(),
            summary: "max".into(),
            seed: "7".into(),
            instructions: "Q?".into(),
            attention: "1".into(),
        }
    }

    fn m(method: &str) -> MethodRef {
        MethodRef { method: method.into(), source: String::new() }
    }

    #[test]
    fn methods_are_the_union_of_every_layer_sorted() {
        let seen =
            methods_seen(&[layer("a", &[("milan", ""), ("dnd", "")]), layer("b", &[("milan", ""), ("milan", "x")])]);
        let keys: Vec<String> = seen.iter().map(method_key).collect();
        assert_eq!(keys, ["dnd", "milan", "milan--x"]);
    }

    #[test]
    fn the_study_keeps_the_model_layer_order_and_fills_default_units() {
        let opts = NewStudyOptions {
            models: vec![("m".into(), "M".into())],
            layers: vec![layer("a", &[("milan", ""), ("dnd", "")]), layer("b", &[("milan", ""), ("dnd", "")])],
        };
        let picks = BTreeMap::from([
            ("b".to_string(), LayerPick { on: true, units: "0-3".into() }),
            ("a".to_string(), LayerPick { on: true, units: " ".into() }),
        ]);
        let s = build_study(&fields(), &opts, &picks, &[m("milan"), m("dnd")]).unwrap();
        assert_eq!(s.name, "S");
        assert_eq!(
            s.layers.iter().map(|l| (l.layer.as_str(), l.units.as_str())).collect::<Vec<_>>(),
            [("a", "random:50"), ("b", "0-3")]
        );
        assert_eq!(s.methods, [m("dnd"), m("milan")]);
        assert_eq!((s.raters_per_item, s.images_per_item, s.seed, s.attention_checks), (3, 10, 7, 1));
        assert_eq!(s.image_summary, "max");
    }

    #[test]
    fn too_few_methods_or_no_layer_or_bad_numbers_are_refused_before_sending() {
        let opts = NewStudyOptions { models: vec![], layers: vec![layer("a", &[("milan", ""), ("dnd", "")])] };
        let on = BTreeMap::from([("a".to_string(), LayerPick { on: true, units: String::new() })]);
        assert!(build_study(&fields(), &opts, &on, &[m("milan")]).unwrap_err().contains("2 to 6"));
        assert!(build_study(&fields(), &opts, &BTreeMap::new(), &[m("milan"), m("dnd")])
            .unwrap_err()
            .contains("layer"));
        let mut f = fields();
        f.raters = "three".into();
        assert!(build_study(&f, &opts, &on, &[m("milan"), m("dnd")]).unwrap_err().contains("Raters per neuron"));
    }
}
