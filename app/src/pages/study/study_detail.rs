//! `/admin/studies/{id}`: one study for its admin. Open or close it, invite raters (their links
//! are shown once: only hashes are stored), share the open link, read the results live while the
//! study runs, judge raters and exclude or revoke them, and download the exports.
//! Without an admin session the page answers 403, for an unknown study 404.

use super::rater_table::RaterTable;
use super::results::{AgreementTable, NeuronBreakdown, ResultsChart, ResultsTable};
use super::{browser, method_name, readable};
use crate::api::study::{
    admin_session, create_open_link, exclude_rater, invite_raters, load_study, revoke_rater, set_study_status,
    StudyDetail, StudySummary,
};
use crate::components::{ErrorNote, LoginLink};
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;
use std::future::Future;
use std::time::Duration;

/// How often an open study's page reloads its results.
const LIVE_REFRESH: Duration = Duration::from_secs(5);

#[component]
pub fn StudyPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.read().get("id").and_then(|v| v.parse::<i64>().ok());
    let session = Resource::new(|| (), |_| admin_session());
    let study = Resource::new(id, |id| async move {
        match id {
            Some(id) => load_study(id).await,
            None => Ok(None),
        }
    });
    view! {
        <Suspense fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                let (session, study) = (session.await, study.await);
                match (session, study) {
                    (Ok(Some(info)), Ok(Some(detail))) => view! { <StudyView detail csrf=info.csrf /> }.into_any(),
                    (_, Ok(None)) => view! { <crate::pages::NotFound /> }.into_any(),
                    (Ok(None), _) => view! { <NeedsLogin /> }.into_any(),
                    (Err(e), _) | (_, Err(e)) => view! { <ErrorNote message=readable(&e) /> }.into_any(),
                }
            })}
        </Suspense>
    }
    .into_any()
}

#[component]
fn NeedsLogin() -> impl IntoView {
    view! {
        <h1>"Admins only"</h1>
        <p class="error" role="alert" id="needs-login">
            "This page belongs to the study's admin. " <LoginLink text="Log in" /> " to see it."
        </p>
    }
    .into_any()
}

/// The loaded study. Its data lives in a signal that every action and the live refresh replace,
/// so the sections update in place (inputs keep what the admin is typing).
#[component]
fn StudyView(detail: StudyDetail, csrf: String) -> impl IntoView {
    let id = detail.summary.id;
    let title = format!("{} · Rating study", detail.summary.name);
    let settings = detail.settings.clone();
    let data = RwSignal::new(detail);
    let summary = Memo::new(move |_| data.with(|d| d.summary.clone()));
    let results = Memo::new(move |_| data.with(|d| d.results.clone()));
    let open_link = Memo::new(move |_| data.with(|d| d.open_link.clone()));
    let csrf = StoredValue::new(csrf);
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    // Filled in the browser; the server renders links relative to the site.
    let origin = RwSignal::new(String::new());
    Effect::new(move |_| origin.set(browser::origin()));

    let refresh = move || {
        spawn_local(async move {
            match load_study(id).await {
                Ok(Some(d)) => data.set(d),
                Ok(None) => error.set(Some(format!("Study {id} no longer exists."))),
                Err(e) => error.set(Some(readable(&e))),
            }
        })
    };
    // Runs one admin call; on success `then` gets its answer and the page reloads its data.
    let act = move |call: std::pin::Pin<Box<dyn Future<Output = Result<(), ServerFnError>>>>| {
        busy.set(true);
        error.set(None);
        spawn_local(async move {
            if let Err(e) = call.await {
                error.set(Some(readable(&e)));
            }
            busy.set(false);
            refresh();
        });
    };

    // Live results while the study runs (browser only: effects never run on the server).
    Effect::new(move |_| {
        let tick = move || {
            if summary.with_untracked(|s| s.status == "open") {
                refresh();
            }
        };
        if let Ok(handle) = set_interval_with_handle(tick, LIVE_REFRESH) {
            on_cleanup(move || handle.clear());
        }
    });

    let set_status = move |status: &'static str| {
        act(Box::pin(async move { set_study_status(csrf.get_value(), id, status.to_string()).await }))
    };

    let invite_count = RwSignal::new("3".to_string());
    let invite_note = RwSignal::new(String::new());
    let new_links = RwSignal::new(Vec::<String>::new());
    let invite = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Ok(count) = invite_count.get_untracked().trim().parse::<i64>() else {
            error.set(Some("The number of raters must be a whole number.".into()));
            return;
        };
        let note = invite_note.get_untracked();
        act(Box::pin(async move {
            let tokens = invite_raters(csrf.get_value(), id, count, note).await?;
            let origin = browser::origin();
            new_links.set(tokens.iter().map(|t| format!("{origin}/rate/{t}")).collect());
            Ok(())
        }))
    };
    let make_open_link =
        move |_| act(Box::pin(async move { create_open_link(csrf.get_value(), id).await.map(|_| ()) }));
    let on_exclude = Callback::new(move |(rater, exclude): (i64, bool)| {
        let reason = exclude.then(String::new);
        act(Box::pin(async move { exclude_rater(csrf.get_value(), id, rater, reason).await }))
    });
    let on_revoke =
        Callback::new(move |rater: i64| act(Box::pin(async move { revoke_rater(csrf.get_value(), id, rater).await })));

    let exports = ["responses.csv", "responses.json", "results.csv", "results.json", "neurons.csv"];
    view! {
        <Title text=title />
        <nav class="crumbs"><a href="/admin">"Rating studies"</a> " › " {move || summary.with(|s| s.name.clone())}</nav>
        <h1>{move || summary.with(|s| s.name.clone())}</h1>
        {move || error.get().map(|m| view! { <p class="error" role="alert" id="study-error">{m}</p> })}

        {view! {
        <section class="study-controls">
            <p>
                "Status: " <strong id="study-status" class=move || format!("status status-{}", summary.with(|s| s.status.clone()))>
                    {move || summary.with(|s| s.status.clone())}
                </strong>
                " · " {move || summary.with(|s| summary_line(s))}
                " "
                <button type="button" id="open-study" on:click=move |_| set_status("open")
                    disabled=move || busy.get() || summary.with(|s| s.status == "open")>"Open"</button>
                " "
                <button type="button" id="close-study" on:click=move |_| set_status("closed")
                    disabled=move || busy.get() || summary.with(|s| s.status != "open")>"Close"</button>
            </p>
            <p class="meta">
                {move || match summary.with(|s| s.status.clone()).as_str() {
                    "draft" => "A draft: raters' links show nothing until the study is opened.",
                    "open" => "Open: raters can answer; the results below refresh every few seconds.",
                    _ => "Closed: no new answers are taken.",
                }}
            </p>
        </section>
        }.into_any()}

        <StudySettings settings />

        {view! {
        <section class="study-links">
            <h2>"Raters' links"</h2>
            <form class="toolbar" id="invite-form" on:submit=invite>
                <label>"Invite " <input type="number" id="invite-count" name="count" min="1" max="1000" bind:value=invite_count /> " raters"</label>
                <label>"Note " <input type="text" id="invite-note" name="note" placeholder="e.g. lab members" bind:value=invite_note /></label>
                <button type="submit" id="invite" disabled=move || busy.get()>"Create links"</button>
            </form>
            {move || {
                let links = new_links.get();
                (!links.is_empty()).then(|| view! {
                    <p class="meta">"One link per rater. Copy them now: they are shown only this once."</p>
                    <ol id="invite-links" class="link-list">
                        {links.into_iter().map(|url| view! { <li><a class="rater-link" href=url.clone() rel="external">{url.clone()}</a></li> }).collect_view()}
                    </ol>
                })
            }}
            <p>
                "Open link (anyone who opens it gets their own rater link): "
                {move || match open_link.get() {
                    Some(token) => {
                        let path = format!("/join/{token}");
                        let href = path.clone();
                        view! { <a id="open-link" href=href rel="external">{move || format!("{}{path}", origin.get())}</a> }.into_any()
                    }
                    None => view! {
                        <button type="button" id="make-open-link" on:click=make_open_link disabled=move || busy.get()>"Open link"</button>
                    }
                    .into_any(),
                }}
            </p>
        </section>
        }.into_any()}

        {view! {
        <section class="study-results">
            <h2>"Results"</h2>
            {move || view! { <ResultsTable results=results.get() /> }.into_any()}
            {move || view! { <ResultsChart results=results.get() /> }.into_any()}
            <h3>"Agreement between raters"</h3>
            {move || view! { <AgreementTable results=results.get() /> }.into_any()}
            <h3>"Per neuron"</h3>
            {move || view! { <NeuronBreakdown results=results.get() model=summary.with(|s| s.model.clone()) /> }.into_any()}
            <p class="exports" id="exports">
                "Download — "
                {exports.into_iter().map(|file| view! {
                    <a class="export" href=format!("/admin/studies/{id}/export/{file}") download="" rel="external">{file}</a>
                }).collect_view()}
            </p>
        </section>
        }.into_any()}

        <section class="study-raters">
            <h2>"Raters"</h2>
            {move || view! { <RaterTable raters=results.with(|r| r.raters.clone()) on_exclude on_revoke /> }.into_any()}
        </section>
    }
    .into_any()
}

/// What the study was created with, for the record.
#[component]
fn StudySettings(settings: crate::api::study::NewStudy) -> impl IntoView {
    let layers = settings.layers.iter().map(|l| format!("{} ({})", l.layer, l.units)).collect::<Vec<_>>().join(", ");
    let methods = settings.methods.iter().map(method_name).collect::<Vec<_>>().join(", ");
    view! {
        <dl class="study-settings" id="study-settings">
            <dt>"Model"</dt><dd>{settings.model}</dd>
            <dt>"Neurons"</dt><dd>{layers}</dd>
            <dt>"Methods"</dt><dd>{methods}</dd>
            <dt>"Raters per neuron"</dt><dd>{settings.raters_per_item}</dd>
            <dt>"Images per task"</dt><dd>{format!("{} (top by {} activation)", settings.images_per_item, settings.image_summary)}</dd>
            <dt>"Seed"</dt><dd>{settings.seed}</dd>
            <dt>"Attention checks"</dt><dd>{settings.attention_checks}</dd>
            <dt>"Question"</dt><dd>{settings.instructions}</dd>
        </dl>
    }
    .into_any()
}

/// "6 neurons (+1 attention check) · 3 raters · 24 responses".
fn summary_line(s: &StudySummary) -> String {
    let checks = match s.attention_checks {
        0 => String::new(),
        1 => " (+1 attention check)".to_string(),
        n => format!(" (+{n} attention checks)"),
    };
    format!("{} neurons{checks} · {} raters · {} responses", s.neurons, s.raters, s.responses)
}
