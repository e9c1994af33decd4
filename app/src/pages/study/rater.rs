//! `/rate/{token}`: the rater's page. Study name, progress and the current task; a thank-you
//! when nothing is left; a plain message when the link is unknown (404), revoked (403) or the
//! study is not open. Nothing here names a method or links to the rest of the site.

use super::readable;
use super::task::TaskForm;
use crate::api::study::{load_rater_page, set_worker_id, RaterPage, RaterTask, SubmitAck};
use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_meta::Title;
use leptos_router::hooks::use_params_map;

#[component]
pub fn RatePage() -> impl IntoView {
    let params = use_params_map();
    let token = move || params.read().get("token").unwrap_or_default();
    let page = Resource::new(token, load_rater_page);
    // After a submission: the next task, which the acknowledgement carries; without one (nothing
    // left, or the study closed) the page is asked again for the thank-you or the reason.
    let next_task = RwSignal::new(None::<RaterTask>);
    let next = Callback::new(move |ack: SubmitAck| match ack.next {
        Some(task) => next_task.set(Some(task)),
        None => {
            next_task.set(None);
            page.refetch();
        }
    });
    view! {
        <Title text="Rating task" />
        <div class="rater-page">
            // Transition: the answered task stays on screen until the next one has arrived.
            <Transition fallback=|| view! { <p>"Loading your task…"</p> }>
                {move || {
                    // Read here, outside the future, so that a new task re-renders the page.
                    let acked = next_task.get();
                    Suspend::new(async move {
                        let token = token();
                        match page.await {
                            Err(e) => view! {
                                <h1>"This link does not work"</h1>
                                <p class="error" role="alert" id="rater-error">{readable(&e)}</p>
                                <p class="meta">"If you think it should, ask the person who sent it to you."</p>
                            }
                            .into_any(),
                            Ok(mut p) => {
                                if let Some(task) = acked {
                                    p.completed = task.number - 1;
                                    p.task = Some(task);
                                }
                                view! { <RaterBody page=p token on_submitted=next /> }.into_any()
                            }
                        }
                    })
                }}
            </Transition>
        </div>
    }
    .into_any()
}

#[component]
fn RaterBody(page: RaterPage, token: String, on_submitted: Callback<SubmitAck>) -> impl IntoView {
    let RaterPage { study_name, instructions, worker_id, completed, study_status, task } = page;
    let progress = match &task {
        Some(t) => format!("Task {} of {}", t.number, t.total),
        None => format!("{completed} tasks done"),
    };
    let body = match task {
        Some(task) => view! { <TaskForm token=token.clone() task instructions on_submitted /> }.into_any(),
        None if study_status != "open" => {
            let why = if study_status == "draft" { "This study has not started yet." } else { "This study has ended." };
            view! {
                <p class="rater-message" id="study-not-open">{why} " Thank you for your interest."</p>
            }
            .into_any()
        }
        None => view! {
            <div class="rater-message" id="rater-done">
                <h2>"Thank you!"</h2>
                <p>{format!("You have completed all your tasks ({completed}). Nothing is left for you to rate; you can close this page.")}</p>
            </div>
        }
        .into_any(),
    };
    view! {
        <header class="rater-header">
            <div>
                <h1>{study_name}</h1>
                <p class="progress" id="task-progress">{progress}</p>
            </div>
            <WorkerIdField token worker_id />
        </header>
        {body}
    }
    .into_any()
}

/// An optional worker id (e.g. a crowdsourcing platform's), saved with the rater for payment.
#[component]
fn WorkerIdField(token: String, worker_id: Option<String>) -> impl IntoView {
    let value = RwSignal::new(worker_id.unwrap_or_default());
    let status = RwSignal::new(None::<(bool, String)>);
    let token = StoredValue::new(token);
    let save = move |ev: SubmitEvent| {
        ev.prevent_default();
        let id = value.get_untracked();
        spawn_local(async move {
            status.set(Some(match set_worker_id(token.get_value(), id).await {
                Ok(()) => (true, "Saved.".to_string()),
                Err(e) => (false, readable(&e)),
            }));
        });
    };
    view! {
        <form class="worker-id" id="worker-id-form" on:submit=save>
            <label for="worker-id">"Worker id (optional)"</label>
            <input type="text" id="worker-id" name="worker_id" maxlength="100" autocomplete="off" bind:value=value
                on:input=move |_| status.set(None) />
            <button type="submit" id="save-worker-id">"Save"</button>
            {move || status.get().map(|(ok, msg)| view! {
                <span id="worker-id-status" class=if ok { "saved" } else { "error" } role=if ok { "status" } else { "alert" }>{msg}</span>
            })}
        </form>
    }
    .into_any()
}
