//! `/jobs`: start a dissection in the background and watch the queue live; `/jobs/{id}`: one
//! job with its log (failed neurons and their reasons). Progress arrives by server-sent events
//! (`/events/jobs`), so the pages update without reloading.

use crate::api::jobs::{
    cancel_job, list_jobs, load_job, load_job_form, start_dissection, start_registration, DissectJobRequest,
    JobFormOptions, JobView, RegisterRequest, REGISTER_KINDS, SCORING_FUNCTIONS, SUMMARIES,
};
use crate::components::{ErrorNote, LoginLink, Timestamp};
use crate::pages::study::readable;
use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;

/// The queue as last pushed by the server; `None` until the first event arrives.
type LiveJobs = RwSignal<Option<Vec<JobView>>>;

/// Follows `/events/jobs` while the page is open (browser only; the server renders the list it
/// read itself).
fn follow_jobs(live: LiveJobs) {
    #[cfg(feature = "hydrate")]
    {
        use wasm_bindgen::{closure::Closure, JsCast};
        let Ok(source) = web_sys::EventSource::new("/events/jobs") else { return };
        let on_jobs = Closure::<dyn FnMut(web_sys::MessageEvent)>::new(move |ev: web_sys::MessageEvent| {
            if let Some(jobs) = ev.data().as_string().and_then(|t| serde_json::from_str::<Vec<JobView>>(&t).ok()) {
                live.set(Some(jobs));
            }
        });
        let _ = source.add_event_listener_with_callback("jobs", on_jobs.as_ref().unchecked_ref());
        // The listener lives as long as the stream; both go when the page does.
        let held = send_wrapper::SendWrapper::new((source, on_jobs));
        on_cleanup(move || held.0.close());
    }
    #[cfg(not(feature = "hydrate"))]
    let _ = live;
}

#[component]
pub fn JobsPage() -> impl IntoView {
    let live: LiveJobs = RwSignal::new(None);
    // The form offers what is registered: ask again whenever a registration job finishes.
    let registered = move || {
        live.with(|l| {
            l.as_ref()
                .map_or(0, |jobs| jobs.iter().filter(|j| j.kind.starts_with("register_") && j.status == "done").count())
        })
    };
    let form = Resource::new(registered, |_| load_job_form());
    let initial = Resource::new(|| (), |_| list_jobs());
    // Outside the form's Transition: a finished registration re-renders the forms, and the
    // upload's outcome (its job link) must stay.
    let uploads = [RwSignal::new(Upload::Idle), RwSignal::new(Upload::Idle)];
    Effect::new(move |_| follow_jobs(live));
    view! {
        <Title text="Jobs · DnD Studio" />
        <h1>"Jobs"</h1>
        <p class="lead">
            "Dissections run in the background, one at a time on this server's device; the rest wait in the queue. "
            "A job survives a server restart and resumes where it stopped; cancelling keeps the neurons already described."
        </p>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match form.await {
                    Err(e) => view! { <ErrorNote message=readable(&e) /> }.into_any(),
                    Ok(opts) => match opts.csrf.clone() {
                        Some(csrf) => view! {
                            <StartForm opts csrf=csrf.clone() live />
                            <RegisterForms csrf=csrf.clone() live />
                            <UploadForms csrf live states=uploads />
                        }
                        .into_any(),
                        None => view! {
                            <p class="meta" id="jobs-login-hint">
                                "Starting and cancelling jobs needs the admin session: "
                                <LoginLink text="log in" /> " (you come back here)."
                            </p>
                        }
                        .into_any(),
                    },
                }
            })}
        </Transition>
        <h2>"Queue"</h2>
        <Transition fallback=|| view! { <p>"Loading the queue…"</p> }>
            {move || Suspend::new(async move {
                let first = initial.await;
                let csrf = form.await.ok().and_then(|f| f.csrf);
                match first {
                    Err(e) => view! { <ErrorNote message=readable(&e) /> }.into_any(),
                    Ok(first) => {
                        let jobs = move || live.get().unwrap_or_else(|| first.clone());
                        view! { <JobTable jobs=Signal::derive(jobs) csrf /> }.into_any()
                    }
                }
            })}
        </Transition>
    }
    .into_any()
}

/// The dissection form (`dnd dissect`'s options).
#[component]
fn StartForm(opts: JobFormOptions, csrf: String, live: LiveJobs) -> impl IntoView {
    let first_model = opts.models.first().map(|m| m.slug.clone()).unwrap_or_default();
    let default_layer = {
        let models = opts.models.clone();
        move |slug: &str| {
            models.iter().find(|m| m.slug == slug).and_then(|m| m.default_layer.clone()).unwrap_or_default()
        }
    };
    let layer = RwSignal::new(default_layer(&first_model));
    let model = RwSignal::new(first_model);
    let neurons = RwSignal::new("0-9".to_string());
    let seed = RwSignal::new("0".to_string());
    let probe_set = RwSignal::new(opts.probe_sets.first().map(|p| p.0.clone()).unwrap_or_default());
    let summary = RwSignal::new(SUMMARIES[0].to_string());
    let scoring = RwSignal::new(SCORING_FUNCTIONS[0].to_string());
    let error = RwSignal::new(None::<String>);
    let started = RwSignal::new(None::<i64>);
    let pending = RwSignal::new(false);
    let models = StoredValue::new(opts.models.clone());
    let csrf = StoredValue::new(csrf);
    let layers = move || {
        models.with_value(|ms| ms.iter().find(|m| m.slug == model.get()).map(|m| m.layers.clone()).unwrap_or_default())
    };

    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        let seed = match seed.get_untracked().trim().parse::<u64>() {
            Ok(s) => s,
            Err(_) => {
                error.set(Some(format!("The seed must be a whole number, not “{}”.", seed.get_untracked().trim())));
                return;
            }
        };
        let chosen_layer = Some(layer.get_untracked())
            .filter(|l| !l.is_empty())
            .or_else(|| layers().first().map(|l| l.0.clone()))
            .unwrap_or_default();
        let request = DissectJobRequest {
            model: model.get_untracked(),
            layer: chosen_layer,
            neurons: neurons.get_untracked().trim().to_string(),
            seed,
            probe_set: probe_set.get_untracked(),
            summary: summary.get_untracked(),
            scoring: scoring.get_untracked(),
        };
        error.set(None);
        pending.set(true);
        spawn_local(async move {
            match start_dissection(csrf.get_value(), request).await {
                Ok(id) => {
                    started.set(Some(id));
                    // The stream reports the new job too; this only saves waiting for it.
                    if let Ok(jobs) = list_jobs().await {
                        live.set(Some(jobs));
                    }
                }
                Err(e) => error.set(Some(readable(&e))),
            }
            pending.set(false);
        });
    };

    view! {
        <section class="start-job">
            <h2>"Start a dissection"</h2>
            <form id="start-job" on:submit=submit>
                <div class="form-grid">
                    <label for="job-model">"Model"</label>
                    <select id="job-model" on:change=move |ev| {
                        let slug = event_target_value(&ev);
                        layer.set(default_layer(&slug));
                        model.set(slug);
                    }>
                        {opts.models.iter().map(|m| view! { <option value=m.slug.clone()>{m.name.clone()}</option> }).collect_view()}
                    </select>
                    <label for="job-layer">"Layer"</label>
                    <select id="job-layer" on:change=move |ev| layer.set(event_target_value(&ev))>
                        {move || layers().into_iter().map(|(name, units)| {
                            let selected = name == layer.get_untracked();
                            view! { <option value=name.clone() selected=selected>{format!("{name} ({units} units)")}</option> }
                        }).collect_view()}
                    </select>
                    <label for="job-neurons">"Neurons"</label>
                    <span>
                        <input type="text" id="job-neurons" required bind:value=neurons />
                        <span class="meta">" e.g. " <code>"0-49"</code> ", " <code>"3,7,9"</code> " or " <code>"random:50"</code></span>
                    </span>
                    <label for="job-seed">"Seed (random:N)"</label>
                    <input type="number" id="job-seed" min="0" bind:value=seed />
                    <label for="job-probe">"Probing set"</label>
                    <select id="job-probe" on:change=move |ev| probe_set.set(event_target_value(&ev))>
                        {opts.probe_sets.iter().map(|(slug, name, n)| {
                            view! { <option value=slug.clone()>{format!("{name} ({n} images)")}</option> }
                        }).collect_view()}
                    </select>
                    <label for="job-summary">"Top images by"</label>
                    <select id="job-summary" on:change=move |ev| summary.set(event_target_value(&ev))>
                        {SUMMARIES.iter().map(|s| view! { <option value=*s>{format!("{s} activation")}</option> }).collect_view()}
                    </select>
                    <label for="job-scoring">"Scoring function"</label>
                    <select id="job-scoring" on:change=move |ev| scoring.set(event_target_value(&ev))>
                        {SCORING_FUNCTIONS.iter().map(|s| view! { <option value=*s>{*s}</option> }).collect_view()}
                    </select>
                </div>
                <button type="submit" id="start-job-button" disabled=move || pending.get()>"Start"</button>
            </form>
            {move || error.get().map(|m| view! { <p class="error" role="alert" id="start-job-error">{m}</p> })}
            {move || started.get().map(|id| view! {
                <p class="ok" id="job-started">"Queued as " <a href=format!("/jobs/{id}")>{format!("job #{id}")}</a> "."</p>
            })}
        </section>
    }
    .into_any()
}

/// Registering a probing-set folder or a TorchScript model that is on the server's disk.
#[component]
fn RegisterForms(csrf: String, live: LiveJobs) -> impl IntoView {
    let csrf = StoredValue::new(csrf);
    view! {
        <section class="register">
            <h2>"Register from the server's disk"</h2>
            {REGISTER_KINDS.iter().map(|&(kind, what)| {
                let path = RwSignal::new(String::new());
                let message = RwSignal::new(None::<Result<i64, String>>);
                let submit = move |ev: SubmitEvent| {
                    ev.prevent_default();
                    let request = RegisterRequest { path: path.get_untracked().trim().to_string() };
                    spawn_local(async move {
                        let r = start_registration(csrf.get_value(), kind.to_string(), request).await;
                        message.set(Some(r.map_err(|e| readable(&e))));
                        if let Ok(jobs) = list_jobs().await {
                            live.set(Some(jobs));
                        }
                    });
                };
                let title = if kind == "register_model" { "TorchScript model" } else { "Probing set" };
                view! {
                    <form class="register-form" id=format!("{kind}-form") on:submit=submit>
                        <label for=format!("{kind}-path")>{title}</label>
                        <input type="text" id=format!("{kind}-path") required placeholder="/absolute/path" bind:value=path />
                        <button type="submit" id=format!("{kind}-button")>"Register"</button>
                        <span class="meta">{what}</span>
                        {move || message.get().map(|m| match m {
                            Ok(id) => view! { <p class="ok">"Queued as " <a href=format!("/jobs/{id}")>{format!("job #{id}")}</a> "."</p> }.into_any(),
                            Err(e) => view! { <p class="error" role="alert" id=format!("{kind}-error")>{e}</p> }.into_any(),
                        })}
                    </form>
                }
            }).collect_view()}
        </section>
    }
    .into_any()
}

/// Where an upload stands (only the browser moves it past `Idle`).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
enum Upload {
    Idle,
    /// Sending; the fraction sent when the browser knows it.
    Sending(Option<f64>),
    /// Sent; the server unpacks and checks it.
    Checking,
    Queued(i64),
    Failed(String),
}

/// Sends `form` (its fields in page order: the CSRF token first) to `url` as multipart, with
/// the upload's progress in `state`. XMLHttpRequest, because fetch cannot report upload progress.
#[cfg(feature = "hydrate")]
fn send_upload(form: web_sys::HtmlFormElement, url: &str, state: RwSignal<Upload>, live: LiveJobs) {
    use wasm_bindgen::{closure::Closure, JsCast};
    let failed = |what: &str| state.set(Upload::Failed(format!("The browser could not send the upload ({what}).")));
    let Ok(data) = web_sys::FormData::new_with_form(&form) else { return failed("reading the form") };
    let Ok(xhr) = web_sys::XmlHttpRequest::new() else { return failed("XMLHttpRequest") };
    if xhr.open("POST", url).is_err() {
        return failed("opening the request");
    }
    let on_progress = Closure::<dyn FnMut(web_sys::ProgressEvent)>::new(move |ev: web_sys::ProgressEvent| {
        if ev.length_computable() && ev.total() > 0.0 {
            let sent = ev.loaded() / ev.total();
            state.set(if sent >= 1.0 { Upload::Checking } else { Upload::Sending(Some(sent)) });
        }
    });
    if let Ok(upload) = xhr.upload() {
        upload.set_onprogress(Some(on_progress.as_ref().unchecked_ref()));
    }
    let answered = xhr.clone();
    let on_end = Closure::<dyn FnMut()>::new(move || {
        let status = answered.status().unwrap_or(0);
        let text = answered.response_text().ok().flatten().unwrap_or_default();
        let job = serde_json::from_str::<serde_json::Value>(&text).ok().and_then(|v| v["job"].as_i64());
        state.set(match (status, job) {
            (200, Some(id)) => Upload::Queued(id),
            (0, _) => Upload::Failed(
                "The connection broke off before the server answered (was the file over the size limit?).".into(),
            ),
            (_, _) if !text.trim().is_empty() => Upload::Failed(text),
            (code, _) => Upload::Failed(format!("The server refused the upload (HTTP {code}).")),
        });
        spawn_local(async move {
            if let Ok(jobs) = list_jobs().await {
                live.set(Some(jobs));
            }
        });
    });
    xhr.set_onloadend(Some(on_end.as_ref().unchecked_ref()));
    state.set(Upload::Sending(None));
    if xhr.send_with_opt_form_data(Some(&data)).is_err() {
        return failed("sending");
    }
    // One pair of small callbacks per upload, needed until its request ends.
    on_progress.forget();
    on_end.forget();
}

/// Uploading a zipped probing set, or a TorchScript model with its manifest (admin). The forms
/// also work as plain multipart posts; hydrated, they show the upload's progress and its job.
#[component]
fn UploadForms(csrf: String, live: LiveJobs, states: [RwSignal<Upload>; 2]) -> impl IntoView {
    let forms: [(&str, &str, &str, &str); 2] = [
        (
            "probe-set",
            "Probing set (zip)",
            "/api/uploads/probe-set",
            "A zip of images (sub-folders become labels, <stem>.txt files descriptions); other files are left out.",
        ),
        (
            "model",
            "TorchScript model",
            "/api/uploads/model",
            "The .pt file and its JSON manifest (tools/export_torchscript.py writes both).",
        ),
    ];
    view! {
        <section class="register upload">
            <h2>"Upload"</h2>
            <p class="meta">
                "Uploads are registered by a job, like the paths above. Size limits are the server's "
                <code>"uploads.*"</code> " settings (by default a 2 GiB zip unpacking to at most 20 GiB, a 4 GiB model)."
            </p>
            {forms.into_iter().zip(states).map(|((key, title, url, what), state)| {
                let submit = move |ev: SubmitEvent| {
                    #[cfg(feature = "hydrate")]
                    {
                        use wasm_bindgen::JsCast;
                        if let Some(form) = ev.target().and_then(|t| t.dyn_into::<web_sys::HtmlFormElement>().ok()) {
                            ev.prevent_default();
                            send_upload(form, url, state, live);
                        }
                    }
                    #[cfg(not(feature = "hydrate"))]
                    let _ = (&ev, live);
                };
                let busy = move || matches!(state.get(), Upload::Sending(_) | Upload::Checking);
                view! {
                    <form class="register-form" id=format!("upload-{key}-form") action=url method="post" enctype="multipart/form-data" on:submit=submit>
                        // First in the form: the server checks it before it stores any file.
                        <input type="hidden" name="csrf" value=csrf.clone() />
                        <label for=format!("upload-{key}-name")>{title}</label>
                        <input type="text" name="name" id=format!("upload-{key}-name") placeholder="name (default: the file's)" />
                        {if key == "model" {
                            view! {
                                <label class="file-field">"TorchScript file "
                                    <input type="file" name="model" id="upload-model-file" accept=".pt,.pth,.torchscript" required />
                                </label>
                                <label class="file-field">"Manifest (JSON) "
                                    <input type="file" name="manifest" id="upload-model-manifest" accept=".json,application/json" required />
                                </label>
                            }.into_any()
                        } else {
                            view! {
                                <label class="file-field">"Zip of images "
                                    <input type="file" name="zip" id="upload-probe-set-file" accept=".zip,application/zip" required />
                                </label>
                            }.into_any()
                        }}
                        <button type="submit" id=format!("upload-{key}-button") disabled=busy>"Upload"</button>
                        <span class="meta">{what}</span>
                        {move || match state.get() {
                            Upload::Idle => None,
                            Upload::Sending(sent) => Some(view! {
                                <p class="meta" id=format!("upload-{key}-progress")>
                                    "Uploading… "
                                    {sent.map(|f| view! { <progress max="100" value=format!("{:.1}", f * 100.0)></progress> {format!(" {:.0} %", f * 100.0)} })}
                                </p>
                            }.into_any()),
                            Upload::Checking => Some(view! {
                                <p class="meta" id=format!("upload-{key}-progress")>"Uploaded; the server is checking it…"</p>
                            }.into_any()),
                            Upload::Queued(id) => Some(view! {
                                <p class="ok" id=format!("upload-{key}-done")>"Uploaded; registering as " <a href=format!("/jobs/{id}")>{format!("job #{id}")}</a> "."</p>
                            }.into_any()),
                            Upload::Failed(e) => Some(view! { <p class="error" role="alert" id=format!("upload-{key}-error")>{e}</p> }.into_any()),
                        }}
                    </form>
                }
            }).collect_view()}
        </section>
    }
    .into_any()
}

fn percent(j: &JobView) -> Option<f64> {
    let total = j.total.filter(|&t| t > 0)?;
    Some((j.done as f64 * 100.0 / total as f64).clamp(0.0, 100.0))
}

#[component]
fn JobTable(jobs: Signal<Vec<JobView>>, csrf: Option<String>) -> impl IntoView {
    let csrf = StoredValue::new(csrf);
    view! {
        <Show when=move || !jobs.with(|j| j.is_empty()) fallback=|| view! { <p class="empty" id="no-jobs">"No job yet."</p> }>
            <table class="jobs" id="jobs">
                <thead>
                    <tr><th>"Job"</th><th>"What"</th><th>"Status"</th><th>"Progress"</th><th>"Created"</th><th></th></tr>
                </thead>
                <tbody>
                    <For each=move || jobs.get() key=|j| (j.id, j.status.clone(), j.done, j.stage.clone(), j.message.clone(), j.failed_neurons) let:j>
                        <JobRow j=j.clone() csrf=csrf.get_value() />
                    </For>
                </tbody>
            </table>
        </Show>
    }
    .into_any()
}

#[component]
fn JobRow(j: JobView, csrf: Option<String>) -> impl IntoView {
    let error = RwSignal::new(None::<String>);
    let id = j.id;
    let can_cancel = csrf.is_some() && !j.is_finished() && !j.cancel_requested;
    let cancel = move |_| {
        let Some(csrf) = csrf.clone() else { return };
        spawn_local(async move {
            if let Err(e) = cancel_job(csrf, id).await {
                error.set(Some(readable(&e)));
            }
        });
    };
    let layer_link = j.request.as_ref().filter(|_| j.run_id.is_some()).map(|r| format!("/m/{}/{}", r.model, r.layer));
    view! {
        <tr data-job=j.id data-status=j.status.clone()>
            <td><a href=format!("/jobs/{}", j.id)>{format!("#{}", j.id)}</a></td>
            <td>
                {j.target.clone()}
                {j.from_command_line.then(|| view! {
                    <span class="tag from-command-line" title="started with `dnd dissect` in a terminal; runs in that process">"command line"</span>
                })}
                {layer_link.map(|href| view! { " " <a class="meta" href=href>"results"</a> })}
            </td>
            <td><span class=format!("status status-{}", j.status)>{j.status.clone()}</span></td>
            <td class="job-progress">
                {percent(&j).map(|p| view! { <progress max="100" value=format!("{p:.1}")></progress> " " })}
                <span class="job-message">{j.message.clone().unwrap_or_default()}</span>
                {(j.failed_neurons > 0).then(|| view! { <span class="warn">{format!(" · {} failed", j.failed_neurons)}</span> })}
                {j.error.clone().map(|e| view! { <span class="error job-error">{e}</span> })}
            </td>
            <td class="meta"><Timestamp iso=j.created_at.clone() /></td>
            <td>
                {can_cancel.then(|| view! { <button type="button" class="cancel-job" on:click=cancel>"Cancel"</button> })}
                {move || error.get().map(|m| view! { <span class="error">{m}</span> })}
            </td>
        </tr>
    }
    .into_any()
}

/// `/jobs/{id}`: the job's row, live, and its log.
#[component]
pub fn JobPage() -> impl IntoView {
    let params = use_params_map();
    let id = move || params.read().get("id").and_then(|s| s.parse::<i64>().ok());
    let live: LiveJobs = RwSignal::new(None);
    Effect::new(move |_| follow_jobs(live));
    // Reload the log whenever the pushed row changes.
    let version = move || {
        let id = id();
        live.with(|l| {
            l.as_ref().and_then(|jobs| {
                jobs.iter()
                    .find(|j| Some(j.id) == id)
                    .map(|j| (j.status.clone(), j.done, j.failed_neurons, j.message.clone()))
            })
        })
    };
    let detail = Resource::new(
        move || (id(), version()),
        |(id, _)| async move {
            match id {
                Some(id) => load_job(id).await,
                None => Ok(None),
            }
        },
    );
    view! {
        <Title text="Job · DnD Studio" />
        <p class="meta"><a href="/jobs">"← all jobs"</a></p>
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match detail.await {
                    Err(e) => view! { <ErrorNote message=readable(&e) /> }.into_any(),
                    Ok(None) => view! { <h1>"No such job"</h1> }.into_any(),
                    Ok(Some(d)) => {
                        let j = d.job;
                        view! {
                            <h1>{format!("Job #{}", j.id)}</h1>
                            <table class="jobs" id="job">
                                <tbody><JobRow j=j.clone() csrf=None /></tbody>
                            </table>
                            <dl class="job-facts">
                                <dt>"Started"</dt><dd>{match j.started_at.clone() { Some(t) => view! { <Timestamp iso=t /> }.into_any(), None => "not yet".into_any() }}</dd>
                                <dt>"Finished"</dt><dd>{match j.finished_at.clone() { Some(t) => view! { <Timestamp iso=t /> }.into_any(), None => "—".into_any() }}</dd>
                                <dt>"Attempts"</dt><dd>{j.attempts}</dd>
                                <dt>"Run"</dt><dd>{j.run_id.map(|r| format!("#{r}")).unwrap_or_else(|| "—".into())}</dd>
                            </dl>
                            <h2>"Log"</h2>
                            <ol class="job-log" id="job-log">
                                {d.events.into_iter().map(|e| view! {
                                    <li class=format!("level-{}", e.level)>
                                        <span class="meta">{e.at}</span> " " {e.stage.map(|s| format!("[{s}] "))} {e.message}
                                    </li>
                                }).collect_view()}
                            </ol>
                        }
                        .into_any()
                    }
                }
            })}
        </Transition>
    }
    .into_any()
}
