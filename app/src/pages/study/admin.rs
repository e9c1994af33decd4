//! `/admin`: the admin's way in. Without a session a login form (the secret from the config, or
//! printed once at the server's first start); with one, every study and the form to create another.

use super::new_study::NewStudyForm;
use super::readable;
use crate::api::study::{admin_login, admin_logout, admin_session, list_studies};
use crate::components::{local_next, ErrorNote, Timestamp};
use leptos::ev::SubmitEvent;
use leptos::prelude::*;
use leptos::task::spawn_local;
use leptos_meta::Title;
use leptos_router::hooks::{use_navigate, use_query_map};

#[component]
pub fn AdminPage() -> impl IntoView {
    let session = Resource::new(|| (), |_| admin_session());
    let changed = Callback::new(move |()| session.refetch());
    // A "log in" link elsewhere sends the admin here with `?next=` its page, and back after.
    let next = local_next(use_query_map().get_untracked().get("next"));
    let navigate = use_navigate();
    let logged_in = Callback::new(move |()| match &next {
        Some(path) => navigate(path, Default::default()),
        None => session.refetch(),
    });
    view! {
        <Title text="Rating studies · DnD Studio" />
        <Transition fallback=|| view! { <p>"Loading…"</p> }>
            {move || Suspend::new(async move {
                match session.await {
                    Err(e) => view! { <ErrorNote message=readable(&e) /> }.into_any(),
                    Ok(None) => view! { <LoginForm on_login=logged_in /> }.into_any(),
                    Ok(Some(info)) => view! { <StudiesAdmin csrf=info.csrf on_logout=changed /> }.into_any(),
                }
            })}
        </Transition>
    }
    .into_any()
}

#[component]
fn LoginForm(on_login: Callback<()>) -> impl IntoView {
    let secret = RwSignal::new(String::new());
    let error = RwSignal::new(None::<String>);
    let pending = RwSignal::new(false);
    let submit = move |ev: SubmitEvent| {
        ev.prevent_default();
        pending.set(true);
        error.set(None);
        let secret = secret.get_untracked();
        spawn_local(async move {
            match admin_login(secret).await {
                Ok(_) => on_login.run(()),
                Err(e) => {
                    error.set(Some(readable(&e)));
                    pending.set(false);
                }
            }
        });
    };
    view! {
        <h1>"Rating studies"</h1>
        <p class="lead">"Log in to set up rating studies and read their results."</p>
        <form class="login" id="admin-login-form" on:submit=submit>
            <label for="admin-secret">"Admin secret"</label>
            <input type="password" id="admin-secret" name="secret" autocomplete="current-password" required
                bind:value=secret />
            <button type="submit" id="admin-login" disabled=move || pending.get()>"Log in"</button>
        </form>
        {move || error.get().map(|m| view! { <p class="error" role="alert">{m}</p> })}
        <p class="meta">
            "The secret is the server's " <code>"admin.secret"</code>
            " setting, or the one it printed at its first start (" <code>"dnd admin-secret"</code>
            " makes a new one)."
        </p>
    }
    .into_any()
}

#[component]
fn StudiesAdmin(csrf: String, on_logout: Callback<()>) -> impl IntoView {
    let studies = Resource::new(|| (), |_| list_studies());
    let csrf_for_logout = StoredValue::new(csrf.clone());
    let logout = move |_| {
        let csrf = csrf_for_logout.get_value();
        spawn_local(async move {
            // Even if the server refuses, the page asks again who is logged in.
            let _ = admin_logout(csrf).await;
            on_logout.run(());
        });
    };
    view! {
        <div class="title-row">
            <h1>"Rating studies"</h1>
            <button type="button" id="logout" on:click=logout>"Log out"</button>
        </div>
        <Transition fallback=|| view! { <p>"Loading studies…"</p> }>
            {move || Suspend::new(async move {
                match studies.await {
                    Err(e) => view! { <ErrorNote message=readable(&e) /> }.into_any(),
                    Ok(list) if list.is_empty() => {
                        view! { <p class="empty" id="no-studies">"No study yet: create one below."</p> }.into_any()
                    }
                    Ok(list) => view! {
                        <table class="studies" id="studies">
                            <thead>
                                <tr>
                                    <th>"Study"</th><th>"Model"</th><th>"Status"</th><th>"Neurons"</th>
                                    <th>"Raters"</th><th>"Responses"</th><th>"Created"</th>
                                </tr>
                            </thead>
                            <tbody>
                                {list.into_iter().map(|s| view! {
                                    <tr data-study=s.id>
                                        <td><a href=format!("/admin/studies/{}", s.id)>{s.name}</a></td>
                                        <td>{s.model}</td>
                                        <td><span class=format!("status status-{}", s.status)>{s.status.clone()}</span></td>
                                        <td class="num">{s.neurons}</td>
                                        <td class="num">{s.raters}</td>
                                        <td class="num">{s.responses}</td>
                                        <td class="meta"><Timestamp iso=s.created_at /></td>
                                    </tr>
                                }).collect_view()}
                            </tbody>
                        </table>
                    }
                    .into_any(),
                }
            })}
        </Transition>
        <NewStudyForm csrf />
    }
    .into_any()
}
