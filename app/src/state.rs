//! What the server hands to server functions through Leptos context (server side only).

use sqlx::SqlitePool;

#[derive(Clone, Debug)]
pub struct ServerContext {
    pub db: SqlitePool,
}

/// The server context of the current request; a missing one is a wiring bug in the server.
pub fn server_context() -> Result<ServerContext, leptos::prelude::ServerFnError> {
    leptos::prelude::use_context::<ServerContext>()
        .ok_or_else(|| leptos::prelude::ServerFnError::new("server context missing (server wiring bug)"))
}
