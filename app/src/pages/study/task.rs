//! One task of the rater's page: the neuron's images, the question, each description with the
//! paper's 1–5 scale, and which description fits best. Works with the mouse or the keyboard
//! alone: the highlighted ("focused") description takes digits 1–5 and `b` (best), and keeps the
//! highlight, so "5 then b" rates and picks the same description, as the hint on the page says;
//! ↑/↓ (or Tab) move between descriptions; Enter submits once everything is answered.
//!
//! A submission carries the time since the task was shown and one idempotency key per task, so a
//! retry after a network failure can never store the answer twice; answers stay on screen until
//! the server has acknowledged them.

use super::{browser, readable};
use crate::api::study::{submit_task, RaterTask, SubmitAck, SCALE};
use crate::api::ImageRef;
use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos::wasm_bindgen::JsCast;

/// Thumbnail width of task images (one of the widths `/img/` serves).
const IMAGE_WIDTH: u32 = 160;

/// `"3 Neither agree nor disagree"`, `"2"`: a scale point as its radio button reads.
fn scale_label(value: u8, text: &str) -> String {
    if text.is_empty() {
        value.to_string()
    } else {
        format!("{value} {text}")
    }
}

/// One key per task (not per try): the assignment, the time and 64 random bits.
fn new_idempotency_key(assignment_id: i64) -> String {
    format!(
        "a{assignment_id}-{:x}-{:08x}{:08x}",
        browser::now_ms() as u64,
        browser::random_u32(),
        browser::random_u32()
    )
}

/// What a key press does to the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyAction {
    Rate(u8),
    Next,
    Previous,
    MarkBest,
    Submit,
}

fn key_action(key: &str) -> Option<KeyAction> {
    match key {
        "1" | "2" | "3" | "4" | "5" => key.parse().ok().map(KeyAction::Rate),
        "ArrowDown" => Some(KeyAction::Next),
        "ArrowUp" => Some(KeyAction::Previous),
        "b" | "B" => Some(KeyAction::MarkBest),
        "Enter" => Some(KeyAction::Submit),
        _ => None,
    }
}

/// Where the browser's focus is, as far as the task's keys care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FocusKind {
    /// A text field (the worker id): every key is the rater's typing.
    Typing,
    /// A button or link: Enter and Space are its own.
    Control,
    /// The page, a description or a radio button: the task's keys apply.
    Task,
}

fn focus_kind() -> FocusKind {
    let Some(el) = document().active_element() else { return FocusKind::Task };
    match el.tag_name().as_str() {
        "TEXTAREA" | "SELECT" => FocusKind::Typing,
        "INPUT" if !matches!(el.get_attribute("type").as_deref(), Some("radio" | "checkbox")) => FocusKind::Typing,
        "BUTTON" | "A" => FocusKind::Control,
        _ => FocusKind::Task,
    }
}

/// Puts the browser's focus on description `i`'s scale (its chosen point, or the first), so Tab
/// and the screen follow the highlighted description.
fn focus_scale(i: usize, rating: Option<u8>) {
    let id = format!("rate-{i}-{}", rating.unwrap_or(1));
    if let Some(el) = document().get_element_by_id(&id) {
        let _ = el.unchecked_into::<leptos::web_sys::HtmlElement>().focus();
    }
}

#[component]
pub fn TaskForm(
    token: String,
    task: RaterTask,
    instructions: String,
    on_submitted: Callback<SubmitAck>,
) -> impl IntoView {
    let RaterTask { assignment_id, images, descriptions, .. } = task;
    let n = descriptions.len();
    let ids = StoredValue::new(descriptions.iter().map(|d| d.id).collect::<Vec<_>>());
    let token = StoredValue::new(token);
    let ratings = RwSignal::new(vec![None::<u8>; n]);
    let best = RwSignal::new(None::<usize>);
    let focused = RwSignal::new(0usize);
    let complete = Memo::new(move |_| ratings.with(|r| r.iter().all(Option::is_some)) && best.get().is_some());
    let submitting = RwSignal::new(false);
    let error = RwSignal::new(None::<String>);
    let shown_at = StoredValue::new(None::<f64>);
    let key = StoredValue::new(None::<String>);
    // The task is on screen from the moment the page is interactive (or this task replaced the last).
    Effect::new(move |_| shown_at.set_value(Some(browser::now_ms())));

    let move_focus = move |i: usize| {
        focused.set(i);
        focus_scale(i, ratings.with_untracked(|r| r[i]));
    };

    let submit = move || {
        if submitting.get_untracked() || !complete.get_untracked() {
            return;
        }
        let Some(best_index) = best.get_untracked() else { return };
        let idempotency_key = key.get_value().unwrap_or_else(|| {
            let k = new_idempotency_key(assignment_id);
            key.set_value(Some(k.clone()));
            k
        });
        let submission = ids.with_value(|ids| ::study::types::Submission {
            assignment_id,
            ratings: ratings
                .with_untracked(|r| ids.iter().zip(r).map(|(id, v)| (*id, v.unwrap_or(0) as i64)).collect()),
            best: ids[best_index],
            client_time_ms: shown_at.get_value().map(|t| (browser::now_ms() - t).max(0.0) as i64),
            idempotency_key,
        });
        submitting.set(true);
        error.set(None);
        spawn_local(async move {
            match submit_task(token.get_value(), submission).await {
                // Stay "submitting" until the next task replaces this one.
                Ok(ack) => on_submitted.run(ack),
                Err(e) => {
                    let msg = match &e {
                        ServerFnError::Request(_) => {
                            "Your answers could not be sent: the server did not answer. They are kept here; press Submit to try again.".to_string()
                        }
                        _ => format!("Your answers were not saved: {}", readable(&e)),
                    };
                    error.set(Some(msg));
                    submitting.set(false);
                }
            }
        });
    };

    let handle = window_event_listener(leptos::ev::keydown, move |ev| {
        if ev.alt_key() || ev.ctrl_key() || ev.meta_key() || n == 0 {
            return;
        }
        let Some(action) = key_action(&ev.key()) else { return };
        match focus_kind() {
            FocusKind::Typing => return,
            FocusKind::Control if action == KeyAction::Submit => return,
            _ => {}
        }
        // The browser's own meaning (moving between radio buttons, submitting the form) would
        // fight ours.
        ev.prevent_default();
        let i = focused.get_untracked().min(n - 1);
        match action {
            // The highlight stays: a key acts on what is highlighted, and only ↑ ↓ move it.
            KeyAction::Rate(v) => ratings.update(|r| r[i] = Some(v)),
            KeyAction::Next => move_focus((i + 1).min(n - 1)),
            KeyAction::Previous => move_focus(i.saturating_sub(1)),
            KeyAction::MarkBest => best.set(Some(i)),
            KeyAction::Submit => submit(),
        }
    });
    on_cleanup(move || handle.remove());

    let on_form_submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        submit();
    };
    let name_of = move |what: &str, i: usize| format!("{what}-{assignment_id}-{i}");
    view! {
        <form class="task" id="task" data-assignment=assignment_id on:submit=on_form_submit>
            {view! {
            <ul class="task-images" id="task-images">
                {images.into_iter().map(|img| {
                    let url = ImageRef { sha256: img.sha256, crop: img.crop }.url(Some(IMAGE_WIDTH));
                    view! { <li><img src=url alt="" /></li> }
                }).collect_view()}
            </ul>
            }.into_any()}
            <p class="instructions" id="instructions">{instructions}</p>
            {view! {
            <ol class="descriptions" id="descriptions">
                {descriptions.iter().enumerate().map(|(i, d)| view! {
                    <li>
                        <fieldset class="description" id=format!("description-{i}") data-description=d.id
                            class:focused=move || focused.get() == i
                            on:focusin=move |_| focused.set(i)
                            on:click=move |_| focused.set(i)>
                            <legend class="description-text">{d.text.clone()}</legend>
                            <div class="scale">
                                {SCALE.iter().map(|&(v, text)| view! {
                                    <label class="scale-point">
                                        <input type="radio" id=format!("rate-{i}-{v}") name=name_of("rating", i) value=v
                                            prop:checked=move || ratings.with(|r| r[i] == Some(v))
                                            on:change=move |_| ratings.update(|r| r[i] = Some(v)) />
                                        <span>{scale_label(v, text)}</span>
                                    </label>
                                }).collect_view()}
                            </div>
                        </fieldset>
                    </li>
                }).collect_view()}
            </ol>
            }.into_any()}
            {view! {
            <fieldset class="best-choice" id="best-choice">
                <legend>"Which description best describes the images?"</legend>
                {descriptions.into_iter().enumerate().map(|(i, d)| view! {
                    <label class="best-option" class:focused=move || focused.get() == i>
                        <input type="radio" id=format!("best-{i}") name=name_of("best", 0) value=d.id
                            prop:checked=move || best.get() == Some(i)
                            on:change=move |_| best.set(Some(i)) />
                        <span>{d.text}</span>
                    </label>
                }).collect_view()}
            </fieldset>
            }.into_any()}
            {move || error.get().map(|m| view! { <p class="error" role="alert" id="submit-error">{m}</p> })}
            <div class="task-submit">
                <button type="submit" id="submit-task" disabled=move || !complete.get() || submitting.get()>
                    {move || if submitting.get() { "Sending…" } else { "Submit" }}
                </button>
                <span class="meta">
                    {move || if complete.get() { "Ready: press Enter or Submit." } else { "Rate every description and pick the best one." }}
                </span>
            </div>
            <p class="meta keys">"Keys: 1–5 rate the highlighted description · b marks it best · ↑ ↓ move the highlight · Enter submits"</p>
        </form>
    }
    .into_any()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_points_read_like_the_paper() {
        let labels: Vec<String> = SCALE.iter().map(|&(v, t)| scale_label(v, t)).collect();
        assert_eq!(labels, ["1 Strongly disagree", "2", "3 Neither agree nor disagree", "4", "5 Strongly agree"]);
    }

    #[test]
    fn keys_map_to_actions() {
        assert_eq!(key_action("4"), Some(KeyAction::Rate(4)));
        assert_eq!(key_action("6"), None);
        assert_eq!(key_action("ArrowDown"), Some(KeyAction::Next));
        assert_eq!(key_action("ArrowUp"), Some(KeyAction::Previous));
        assert_eq!(key_action("b"), Some(KeyAction::MarkBest));
        assert_eq!(key_action("Enter"), Some(KeyAction::Submit));
        assert_eq!(key_action("x"), None);
    }
}
