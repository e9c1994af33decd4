//! A study's results as the paper reports them (Table 3/4: per layer and over all layers, each
//! method's mean rating ± SEM and how often it was picked as best, over valid responses), a bar
//! chart of the same means, and the raters' agreement (Krippendorff's ordinal alpha).

use super::{method_key, method_name};
use crate::api::study::{LayerResults, MethodResult, NeuronResults, StudyResults};
use leptos::prelude::*;

/// Bar colours, one per method position (a study compares at most six).
const COLOURS: [&str; 6] = ["#1f4e79", "#d97706", "#15803d", "#9333ea", "#be123c", "#0e7490"];

/// `data-layer` of a row: the layer's name, `all` for the "All layers" row.
fn layer_key(row: &LayerResults) -> String {
    row.layer.clone().unwrap_or_else(|| "all".into())
}

fn layer_title(row: &LayerResults) -> String {
    row.layer.clone().unwrap_or_else(|| "All layers".into())
}

/// `3.25 ± 0.41`; `—` without ratings, `3.00 ± —` with a single one.
pub fn mean_sem_text(m: &MethodResult) -> String {
    match (m.mean, m.sem) {
        (None, _) => "—".into(),
        (Some(mean), Some(sem)) => format!("{mean:.2} ± {sem:.2}"),
        (Some(mean), None) => format!("{mean:.2} ± —"),
    }
}

/// `41.7%`; `—` without valid responses.
pub fn best_text(m: &MethodResult) -> String {
    m.best_share.map(|s| format!("{:.1}%", s * 100.0)).unwrap_or_else(|| "—".into())
}

pub fn alpha_text(alpha: Option<f64>) -> String {
    alpha.map(|a| format!("{a:.3}")).unwrap_or_else(|| "—".into())
}

#[component]
pub fn ResultsTable(results: StudyResults) -> impl IntoView {
    let methods = results.methods.clone();
    let substituted = results.substituted.clone();
    view! {
        <table class="results" id="results">
            <thead>
                <tr>
                    <th rowspan="2">"Layer"</th>
                    {methods.iter().map(|m| view! {
                        <th colspan="2" class="method" data-method=method_key(m)>{method_name(m)}</th>
                    }).collect_view()}
                    <th rowspan="2">"Responses"</th>
                </tr>
                <tr>
                    {methods.iter().map(|_| view! { <th class="num">"Mean ± SEM"</th><th class="num">"% best"</th> }).collect_view()}
                </tr>
            </thead>
            <tbody>
                {results.rows.into_iter().map(|row| {
                    let layer = layer_key(&row);
                    let all = row.layer.is_none();
                    view! {
                        <tr data-layer=layer.clone() class:all-layers=all>
                            <th scope="row">{layer_title(&row)}</th>
                            {row.methods.iter().map(|m| {
                                let key = method_key(&m.method);
                                view! {
                                    <td class="num" data-layer=layer.clone() data-method=key.clone() data-stat="mean"
                                        title=format!("{} ratings", m.ratings)>{mean_sem_text(m)}</td>
                                    <td class="num" data-layer=layer.clone() data-method=key data-stat="best"
                                        title=format!("picked {} times", m.best_count)>{best_text(m)}</td>
                                }
                            }).collect_view()}
                            <td class="num" data-layer=layer.clone() data-stat="valid">{format!("{} / {} valid", row.valid, row.total)}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
        <p class="meta">
            "Over valid responses of raters not excluded (a response is valid when the description picked as best \
             is among its highest-rated ones); attention-check tasks never count. SEM = sample SD / √n."
        </p>
        {substitutes_note(&substituted)}
    }
    .into_any()
}

/// Says which methods' descriptions come from DnD runs with offline substitutes for the paper's
/// components, so nobody reads those rows as the paper's DnD.
fn substitutes_note(substituted: &[crate::api::study::MethodRef]) -> Option<impl IntoView> {
    (!substituted.is_empty()).then(|| {
        let names = substituted.iter().map(method_name).collect::<Vec<_>>().join(", ");
        view! {
            <p class="note substitutes" id="study-substitutes" role="note">
                {format!(
                    "{names}: some descriptions come from DnD runs that used offline substitutes for the paper's \
                     components (see each neuron's page for which); these rows are not the paper's DnD."
                )}
            </p>
        }
    })
}

/// Grouped bars: one group per row of the table, one bar per method, height = mean rating on the
/// 1–5 scale (drawn from 0), with ±SEM whiskers. Plain inline SVG; every bar has a `<title>`.
#[component]
pub fn ResultsChart(results: StudyResults) -> impl IntoView {
    const PLOT_H: f64 = 260.0;
    const TOP: f64 = 12.0;
    const LEFT: f64 = 34.0;
    const BAR_W: f64 = 44.0;
    const GAP: f64 = 48.0;
    /// Room for one legend entry.
    const LEGEND_W: f64 = 140.0;
    let n_methods = results.methods.len().max(1) as f64;
    let group_w = n_methods * BAR_W;
    let width = (LEFT + results.rows.len() as f64 * (group_w + GAP) + GAP).max(LEFT + n_methods * LEGEND_W);
    let height = TOP + PLOT_H + 44.0;
    let y = move |rating: f64| TOP + PLOT_H * (1.0 - rating / 5.0);
    let legend_y = TOP + PLOT_H + 36.0;
    view! {
        <svg class="results-chart" id="results-chart" role="img" width=format!("{width:.0}") height=format!("{height:.0}")
            viewBox=format!("0 0 {width:.0} {height:.0}")
            aria-label="Mean rating per method and layer">
            {(0..=5).map(|tick| {
                let ty = y(tick as f64);
                view! {
                    <g class="tick">
                        <line x1=format!("{LEFT:.1}") x2=format!("{:.1}", width - 4.0) y1=format!("{ty:.1}") y2=format!("{ty:.1}") />
                        <text x=format!("{:.1}", LEFT - 6.0) y=format!("{:.1}", ty + 4.0) text-anchor="end">{tick}</text>
                    </g>
                }
            }).collect_view()}
            {results.rows.iter().enumerate().map(|(g, row)| {
                let x0 = LEFT + GAP + g as f64 * (group_w + GAP);
                let layer = layer_title(row);
                let label_x = x0 + group_w / 2.0;
                let bars = row.methods.iter().enumerate().filter_map(|(i, m)| {
                    let mean = m.mean?;
                    let x = x0 + i as f64 * BAR_W;
                    let top = y(mean);
                    let whisker = m.sem.map(|sem| {
                        let cx = x + BAR_W / 2.0 - 1.0;
                        view! {
                            <line class="whisker" x1=format!("{cx:.1}") x2=format!("{cx:.1}")
                                y1=format!("{:.1}", y((mean - sem).max(0.0))) y2=format!("{:.1}", y((mean + sem).min(5.0))) />
                        }
                    });
                    let tooltip = format!("{} · {}: mean {} ({} ratings)", method_name(&m.method), layer, mean_sem_text(m), m.ratings);
                    Some(view! {
                        <g class="bar" data-layer=layer_key(row) data-method=method_key(&m.method)>
                            <rect x=format!("{x:.1}") y=format!("{top:.1}") width=format!("{:.1}", BAR_W - 2.0)
                                height=format!("{:.1}", TOP + PLOT_H - top) fill=COLOURS[i % COLOURS.len()]>
                                <title>{tooltip}</title>
                            </rect>
                            {whisker}
                        </g>
                    })
                }).collect_view();
                view! {
                    <g class="group">
                        {bars}
                        <text class="group-label" x=format!("{label_x:.1}") y=format!("{:.1}", TOP + PLOT_H + 16.0) text-anchor="middle">{layer}</text>
                    </g>
                }
            }).collect_view()}
            {results.methods.iter().enumerate().map(|(i, m)| {
                let x = LEFT + i as f64 * LEGEND_W;
                view! {
                    <g class="legend">
                        <rect x=format!("{x:.1}") y=format!("{:.1}", legend_y - 9.0) width="10" height="10" fill=COLOURS[i % COLOURS.len()] />
                        <text x=format!("{:.1}", x + 14.0) y=format!("{legend_y:.1}")>{method_name(m)}</text>
                    </g>
                }
            }).collect_view()}
        </svg>
    }
    .into_any()
}

#[component]
pub fn AgreementTable(results: StudyResults) -> impl IntoView {
    view! {
        <table class="agreement" id="agreement">
            <thead><tr><th>"Descriptions of"</th><th class="num">"Krippendorff's α (ordinal)"</th><th class="num">"Neurons with ≥ 2 ratings"</th></tr></thead>
            <tbody>
                {results.agreement.into_iter().map(|a| {
                    let (key, title) = match &a.method {
                        Some(m) => (method_key(m), method_name(m)),
                        None => ("all".to_string(), "All methods (pooled)".to_string()),
                    };
                    view! {
                        <tr data-method=key.clone()>
                            <td>{title}</td>
                            <td class="num" data-method=key.clone() data-stat="alpha">{alpha_text(a.alpha)}</td>
                            <td class="num">{a.items}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
    }
    .into_any()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::study::MethodRef;

    fn result(mean: Option<f64>, sem: Option<f64>, share: Option<f64>) -> MethodResult {
        MethodResult {
            method: MethodRef { method: "milan".into(), source: String::new() },
            mean,
            sem,
            ratings: 3,
            best_share: share,
            best_count: 1,
        }
    }

    #[test]
    fn cells_show_two_decimals_for_means_and_one_for_percentages() {
        assert_eq!(mean_sem_text(&result(Some(3.0 + 1.0 / 3.0), Some(0.4082), Some(5.0 / 12.0))), "3.33 ± 0.41");
        assert_eq!(best_text(&result(None, None, Some(5.0 / 12.0))), "41.7%");
        assert_eq!(mean_sem_text(&result(Some(4.0), None, None)), "4.00 ± —");
        assert_eq!(mean_sem_text(&result(None, None, None)), "—");
        assert_eq!(best_text(&result(None, None, None)), "—");
        assert_eq!(alpha_text(Some(0.12345)), "0.123");
        assert_eq!(alpha_text(None), "—");
    }
}

/// Each rated neuron's mean rating per method (valid responses of raters not excluded), linked
/// to its gallery page: where a method's average comes from, and which neurons disagree.
#[component]
pub fn NeuronBreakdown(results: StudyResults, model: String) -> impl IntoView {
    if results.neurons.is_empty() {
        return view! { <p class="empty" id="neuron-results">"No neuron rated yet."</p> }.into_any();
    }
    let methods = results.methods.clone();
    let rows = results.neurons.into_iter().map(|n: NeuronResults| {
        let href = format!("/m/{model}/{}/{}", n.layer, n.unit);
        let key = format!("{}/{}", n.layer, n.unit);
        view! {
            <tr data-neuron=key.clone()>
                <th scope="row"><a href=href>{format!("{} · unit {}", n.layer, n.unit)}</a></th>
                {n.methods.iter().map(|m| view! {
                    <td class="num" data-neuron=key.clone() data-method=method_key(&m.method) data-stat="mean"
                        title=format!("{} ratings, picked best {} times", m.ratings, m.best_count)>{mean_sem_text(m)}</td>
                }).collect_view()}
                <td class="num" data-stat="valid">{format!("{} / {}", n.valid, n.total)}</td>
            </tr>
        }
    });
    view! {
        <div class="table-scroll">
            <table class="results neuron-results" id="neuron-results">
                <thead>
                    <tr>
                        <th>"Neuron"</th>
                        {methods.iter().map(|m| view! { <th class="num" data-method=method_key(m)>{method_name(m)}</th> }).collect_view()}
                        <th class="num">"Valid"</th>
                    </tr>
                </thead>
                <tbody>{rows.collect_view()}</tbody>
            </table>
        </div>
    }
    .into_any()
}
