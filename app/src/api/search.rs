//! Concept search: the neurons of a model whose labels, of any method, are closest to a typed
//! concept (server side: `studio::concept_search`).

use super::{ImageRef, LabelView};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// Neurons listed for one search.
pub const SEARCH_HITS: usize = 30;

/// One neuron found, with the label that matched best.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConceptHit {
    pub layer: String,
    pub unit: i64,
    pub class_name: Option<String>,
    pub label: LabelView,
    /// Cosine between the query's and the label's embeddings.
    pub cosine: f64,
    pub thumb: Option<ImageRef>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConceptSearchView {
    pub hits: Vec<ConceptHit>,
    /// The text encoder that measured the similarity.
    pub encoder: String,
    pub labels_searched: usize,
    pub neurons_searched: usize,
    /// Layers left out while open studies rate them (hidden from visitors without an admin session).
    #[serde(default)]
    pub layers_hidden: usize,
}

/// `None` when the model does not exist.
#[server]
pub async fn search_concepts(model: String, query: String) -> Result<Option<ConceptSearchView>, ServerFnError> {
    use studio::concept_search::SearchError;
    let ctx = crate::state::server_context()?;
    let audience = super::audience(&ctx).await?;
    let found = ctx.concepts.search(&ctx.db, &model, &query, SEARCH_HITS, audience).await.map_err(|e| {
        // The caller's mistake is a 400; the server's a 500, whose details go to the log only.
        let status = match &e {
            SearchError::QueryTooLong => http::StatusCode::BAD_REQUEST,
            SearchError::Database(_) | SearchError::Unavailable(_) => {
                tracing::error!(error = %format!("{e:#}"), "concept search failed");
                http::StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        if let Some(resp) = use_context::<leptos_axum::ResponseOptions>() {
            resp.set_status(status);
        }
        ServerFnError::new(e.to_string())
    })?;
    Ok(found.map(|r| ConceptSearchView {
        hits: r
            .hits
            .into_iter()
            .map(|h| ConceptHit {
                layer: h.layer,
                unit: h.unit,
                class_name: h.class_name,
                label: LabelView { method: h.method, source: h.source, rank: h.rank, text: h.text, score: None },
                cosine: h.cosine as f64,
                thumb: h.top_image,
            })
            .collect(),
        encoder: studio::concept_search::SEARCH_MODEL.name().to_string(),
        labels_searched: r.labels_searched,
        neurons_searched: r.neurons_searched,
        layers_hidden: r.layers_hidden,
    }))
}
