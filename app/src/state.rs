//! What the server hands to server functions through Leptos context (server side only).

use std::sync::Arc;
use studio::db::Pool;
pub use studio::jobs::JobSignals;

#[derive(Clone)]
pub struct ServerContext {
    pub db: Pool,
    /// SHA-256 of the admin secret (config, or generated at first start): the secret buys an
    /// admin session.
    pub admin_secret_digest: Arc<str>,
    /// Where rating studies take the images each task shows.
    pub top_images: Arc<dyn study::setup::TopImageSource>,
    /// Raters' answers, committed in groups (one writer task per server).
    pub submissions: study::submit::SubmissionQueue,
    /// Wakes the job runner and the job queue's live views when jobs change.
    pub jobs: JobSignals,
    /// Wrong admin secrets per client (429 after too many).
    pub login_limiter: Arc<study::login_limit::LoginLimiter>,
    /// Cookies carry `Secure` (the server is reached over HTTPS: `server.public_url`).
    pub secure_cookies: bool,
    /// Concept search over every method's labels (loads its text encoder on first use).
    pub concepts: Arc<studio::concept_search::ConceptSearcher>,
    /// Hide the labels of layers in open studies from visitors without an admin session
    /// (config `study.blind_gallery`).
    pub blind_gallery: bool,
}

impl ServerContext {
    /// Who a request with this admin cookie (or none) is, for blinding: trusted with a live
    /// admin session or where blinding is off, public otherwise.
    pub async fn audience(&self, admin_cookie: Option<&str>) -> sqlx::Result<studio::gallery::Audience> {
        use studio::gallery::Audience;
        if !self.blind_gallery {
            return Ok(Audience::Trusted);
        }
        let Some(cookie) = admin_cookie else { return Ok(Audience::Public) };
        match study::admin::session(&self.db, cookie).await {
            Ok(Some(_)) => Ok(Audience::Trusted),
            Ok(None) => Ok(Audience::Public),
            Err(study::StudyError::Db(e)) => Err(e),
            // Any other failure to read the session is no admin.
            Err(_) => Ok(Audience::Public),
        }
    }
}

impl std::fmt::Debug for ServerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerContext").field("db", &self.db).finish_non_exhaustive()
    }
}

/// The server context of the current request; a missing one is a wiring bug in the server.
pub fn server_context() -> Result<ServerContext, leptos::prelude::ServerFnError> {
    leptos::prelude::use_context::<ServerContext>()
        .ok_or_else(|| leptos::prelude::ServerFnError::new("server context missing (server wiring bug)"))
}

/// The client's address as the server saw it (a request extension the server adds; absent in
/// tests that call the router directly, where every request counts as one client).
#[derive(Clone, Debug)]
pub struct ClientAddr(pub String);
