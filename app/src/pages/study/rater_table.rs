//! The raters of a study with what an admin needs to judge them (invalid responses, failed
//! attention checks, median time per task, and flags where one of them looks wrong: see
//! `study::types::RaterFlag`) and the two remedies: exclude a rater from the results
//! (reversible) and revoke their link (they cannot answer any more).

use crate::api::study::RaterStats;
use leptos::prelude::*;

/// `12.3 s`; `—` before the first response.
pub fn median_time_text(ms: Option<i64>) -> String {
    ms.map(|ms| format!("{:.1} s", ms as f64 / 1000.0)).unwrap_or_else(|| "—".into())
}

fn state_text(r: &RaterStats) -> &'static str {
    match (r.revoked, r.excluded) {
        (true, true) => "revoked, excluded",
        (true, false) => "revoked",
        (false, true) => "excluded",
        (false, false) => "active",
    }
}

fn origin_text(r: &RaterStats) -> String {
    let origin = match r.origin.as_str() {
        "invite" => "invited",
        "open_link" => "open link",
        other => other,
    };
    if r.note.is_empty() {
        origin.to_string()
    } else {
        format!("{origin} · {}", r.note)
    }
}

/// `on_exclude(rater, exclude)`: exclude (`true`) or include again (`false`).
#[component]
pub fn RaterTable(
    raters: Vec<RaterStats>,
    on_exclude: Callback<(i64, bool)>,
    on_revoke: Callback<i64>,
) -> impl IntoView {
    if raters.is_empty() {
        return view! { <p class="empty" id="raters">"No rater yet: invite some or share the open link."</p> }
            .into_any();
    }
    view! {
        <table class="raters" id="raters">
            <thead>
                <tr>
                    <th>"Rater"</th><th>"Origin"</th><th>"Worker id"</th><th class="num">"Responses"</th>
                    <th class="num">"Invalid"</th><th class="num">"Attention checks failed"</th>
                    <th class="num">"Median time per task"</th><th>"Flags"</th><th>"State"</th><th>"Actions"</th>
                </tr>
            </thead>
            <tbody>
                {raters.into_iter().map(|r| {
                    let id = r.rater_id;
                    let excluded = r.excluded;
                    let flags = r.flags();
                    let flagged = !flags.is_empty();
                    view! {
                        <tr data-rater=id class:excluded=r.excluded class:revoked=r.revoked class:flagged=flagged>
                            <td>{format!("#{id}")}</td>
                            <td>{origin_text(&r)}</td>
                            <td data-stat="worker">{r.worker_id.clone().unwrap_or_else(|| "—".into())}</td>
                            <td class="num" data-stat="responses">{r.responses}</td>
                            <td class="num" data-stat="invalid">{r.invalid}</td>
                            <td class="num" data-stat="attention">{format!("{} / {}", r.attention_failures, r.attention_checks)}</td>
                            <td class="num" data-stat="median-time">{median_time_text(r.median_time_ms)}</td>
                            <td data-stat="flags">
                                {flags.iter().map(|f| view! { <span class="flag">{f.text()}</span> }).collect_view()}
                            </td>
                            <td data-stat="state">{state_text(&r)}</td>
                            <td class="actions">
                                <button type="button" class=if excluded { "include" } else { "exclude" }
                                    on:click=move |_| on_exclude.run((id, !excluded))>
                                    {if excluded { "Include" } else { "Exclude" }}
                                </button>
                                <button type="button" class="revoke" disabled=r.revoked on:click=move |_| on_revoke.run(id)>
                                    "Revoke"
                                </button>
                            </td>
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

    #[test]
    fn median_time_is_shown_in_seconds() {
        assert_eq!(median_time_text(Some(12_345)), "12.3 s");
        assert_eq!(median_time_text(None), "—");
    }
}
