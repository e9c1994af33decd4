//! Concept search: type a concept, get the neurons of a model whose labels (of any method, any
//! rank) mean it most closely — the paper's "neurons as classifiers" use of labels (its Section
//! 4.4), made interactive. `dnd quality` measures how well that choice finds real detectors.
//!
//! Similarity is the cosine of sentence embeddings. Search uses all-MiniLM-L6-v2, the label
//! similarity encoder the pipeline already ships, because it answers a query in milliseconds on
//! a CPU; the evaluation keeps the paper's mpnet. Label embeddings are computed on the first
//! search that needs them and kept in memory by text, so a new label is found at once and an old
//! one is never stale.

use crate::gallery::queries::rank1_top_images;
use crate::gallery::{blinding, Audience, ImageRef};
use crate::methods::Method;
use anyhow::Context;
use dissect::text_encoder::{SentenceEncoder, TextModel};
use sqlx::{Row, SqlitePool};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// The encoder concept search embeds queries and labels with.
pub const SEARCH_MODEL: TextModel = TextModel::MiniLmL6V2;

/// Longest query accepted, in characters.
pub const MAX_QUERY_CHARS: usize = 200;

/// Embeddings kept in memory at most (about 1.5 KB each); past it the cache starts over.
const MAX_CACHED: usize = 200_000;

/// Labels embedded per step of a first search (each step's results are cached at once).
const EMBED_BATCH: usize = 512;

/// Why a search gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The caller's mistake.
    #[error("the search text is longer than {MAX_QUERY_CHARS} characters")]
    QueryTooLong,
    #[error("reading the labels: {0}")]
    Database(#[from] sqlx::Error),
    /// The server's problem (e.g. its text encoder is missing); the outermost context is fit to
    /// show a visitor, the whole chain (`{:#}`) is for the log.
    #[error("{0}")]
    Unavailable(#[from] anyhow::Error),
}

/// A neuron found by a search, with the label that matched best.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchHit {
    pub layer: String,
    pub unit: i64,
    pub class_name: Option<String>,
    pub method: Method,
    pub source: String,
    pub rank: i64,
    pub text: String,
    pub cosine: f32,
    /// The neuron's rank-1 top image in its latest finished DnD run.
    pub top_image: Option<ImageRef>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchResult {
    /// Best match first; at most the number asked for.
    pub hits: Vec<SearchHit>,
    /// Current labels compared, and the neurons they belong to.
    pub labels_searched: usize,
    pub neurons_searched: usize,
    /// Layers whose labels were left out because an open study rates them (for a public
    /// visitor; module `gallery::blinding`).
    pub layers_hidden: usize,
}

/// The search service: loads its encoder on first use and remembers label embeddings.
pub struct ConceptSearcher {
    model_dir: PathBuf,
    encoder: tokio::sync::OnceCell<Arc<SentenceEncoder>>,
    embeddings: Arc<Mutex<HashMap<String, Arc<[f32]>>>>,
}

impl Default for ConceptSearcher {
    fn default() -> Self {
        ConceptSearcher::new(SEARCH_MODEL.default_dir())
    }
}

/// One current label of a neuron, as read for a search.
struct Candidate {
    neuron_id: i64,
    layer_id: i64,
    layer: String,
    unit: i64,
    class_name: Option<String>,
    method: Method,
    source: String,
    rank: i64,
    text: String,
}

impl ConceptSearcher {
    /// A searcher whose encoder is read from `model_dir` (folder of all-MiniLM-L6-v2).
    pub fn new(model_dir: PathBuf) -> Self {
        ConceptSearcher { model_dir, encoder: Default::default(), embeddings: Default::default() }
    }

    /// Neurons of model `model_slug` whose labels are closest to `query`, at most `limit`;
    /// `None` when the model does not exist; [`SearchError::QueryTooLong`] over
    /// [`MAX_QUERY_CHARS`]. A neuron counts once, with its closest label; equal
    /// cosines keep the model's layer order, then unit order. Labels hidden from `audience`
    /// are not searched.
    pub async fn search(
        &self,
        db: &SqlitePool,
        model_slug: &str,
        query: &str,
        limit: usize,
        audience: Audience,
    ) -> Result<Option<SearchResult>, SearchError> {
        let query = query.trim();
        if query.chars().count() > MAX_QUERY_CHARS {
            return Err(SearchError::QueryTooLong);
        }
        let Some(model_id) = sqlx::query_scalar::<_, i64>("SELECT id FROM models WHERE slug = ?")
            .bind(model_slug)
            .fetch_optional(db)
            .await?
        else {
            return Ok(None);
        };
        let hidden = blinding::hidden_layers(&mut *db.acquire().await?, model_id, audience).await?;
        let mut candidates = current_labels(db, model_id).await?;
        candidates.retain(|c| !hidden.contains(&c.layer_id));
        let neurons_searched = {
            let mut ids: Vec<i64> = candidates.iter().map(|c| c.neuron_id).collect();
            ids.sort_unstable();
            ids.dedup();
            ids.len()
        };
        let mut result = SearchResult {
            hits: Vec::new(),
            labels_searched: candidates.len(),
            neurons_searched,
            layers_hidden: hidden.len(),
        };
        if query.is_empty() || candidates.is_empty() {
            return Ok(Some(result));
        }
        let texts: Vec<&str> = candidates.iter().map(|c| c.text.as_str()).collect();
        let (query_embedding, label_embeddings) = self.embed(query, &texts).await?;

        // Each neuron's closest label (candidates come in layer, unit order: the first of equal
        // cosines stays).
        let mut best: Vec<(usize, f32)> = Vec::new();
        let mut slot_of: HashMap<i64, usize> = HashMap::new();
        for (i, (c, e)) in candidates.iter().zip(&label_embeddings).enumerate() {
            let cosine = dissect::concepts::cosine(&query_embedding, e);
            match slot_of.get(&c.neuron_id) {
                Some(&s) if best[s].1 >= cosine => {}
                Some(&s) => best[s] = (i, cosine),
                None => {
                    slot_of.insert(c.neuron_id, best.len());
                    best.push((i, cosine));
                }
            }
        }
        // Stable: equal cosines keep reading order.
        best.sort_by(|a, b| b.1.total_cmp(&a.1));
        best.truncate(limit);
        let ids: Vec<i64> = best.iter().map(|&(i, _)| candidates[i].neuron_id).collect();
        let mut top_images = rank1_top_images(&mut *db.acquire().await?, &ids).await?;
        result.hits = best
            .into_iter()
            .map(|(i, cosine)| {
                let c = &candidates[i];
                SearchHit {
                    layer: c.layer.clone(),
                    unit: c.unit,
                    class_name: c.class_name.clone(),
                    method: c.method,
                    source: c.source.clone(),
                    rank: c.rank,
                    text: c.text.clone(),
                    cosine,
                    top_image: top_images.remove(&c.neuron_id),
                }
            })
            .collect();
        Ok(Some(result))
    }

    async fn encoder(&self) -> anyhow::Result<Arc<SentenceEncoder>> {
        let dir = self.model_dir.clone();
        let encoder = self
            .encoder
            .get_or_try_init(|| async move {
                let loaded = tokio::task::spawn_blocking(move || {
                    SentenceEncoder::load(&dir, SEARCH_MODEL, tch::Device::Cpu)
                        .with_context(|| format!("loading {} from {}", SEARCH_MODEL.name(), dir.display()))
                        .context(format!(
                            "concept search needs the text encoder {}, which scripts/setup.sh installs",
                            SEARCH_MODEL.name()
                        ))
                })
                .await??;
                anyhow::Ok(Arc::new(loaded))
            })
            .await?;
        Ok(encoder.clone())
    }

    /// The query's embedding and each text's, computing only those not cached yet. Computed
    /// embeddings reach the cache batch by batch from the blocking task itself, so work done for
    /// a request that is dropped meanwhile (a timeout, a closed tab) still serves the next one.
    async fn embed(&self, query: &str, texts: &[&str]) -> anyhow::Result<(Vec<f32>, Vec<Arc<[f32]>>)> {
        // What is cached now is kept aside for this request: another search may clear the cache.
        let mut known: HashMap<String, Arc<[f32]>> = HashMap::new();
        let mut missing: Vec<String> = Vec::new();
        {
            let cache = lock(&self.embeddings);
            for t in texts {
                match cache.get(*t) {
                    Some(e) => {
                        known.insert(t.to_string(), e.clone());
                    }
                    None => missing.push(t.to_string()),
                }
            }
        }
        missing.sort_unstable();
        missing.dedup();
        let encoder = self.encoder().await?;
        let query = query.to_string();
        let cache = self.embeddings.clone();
        let (query_embedding, computed) = tokio::task::spawn_blocking(move || {
            let query_embedding = encoder.embed(&[query.as_str()])?.pop().unwrap_or_default();
            let mut computed: Vec<(String, Arc<[f32]>)> = Vec::with_capacity(missing.len());
            for batch in missing.chunks(EMBED_BATCH) {
                let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
                let embedded: Vec<Arc<[f32]>> = encoder.embed(&refs)?.into_iter().map(Arc::from).collect();
                let mut cache = lock(&cache);
                if cache.len() + batch.len() > MAX_CACHED {
                    cache.clear();
                }
                for (text, e) in batch.iter().zip(embedded) {
                    cache.insert(text.clone(), e.clone());
                    computed.push((text.clone(), e));
                }
            }
            anyhow::Ok((query_embedding, computed))
        })
        .await??;
        known.extend(computed);
        let labels = texts
            .iter()
            .map(|t| known.get(*t).cloned().context("an embedding went missing (a bug: every text was kept aside)"))
            .collect::<anyhow::Result<_>>()?;
        Ok((query_embedding, labels))
    }
}

/// The cache's lock; a panic elsewhere while it was held leaves consistent data (entries are
/// inserted whole), so a poisoned lock is used as is rather than failing every later search.
fn lock(cache: &Mutex<HashMap<String, Arc<[f32]>>>) -> std::sync::MutexGuard<'_, HashMap<String, Arc<[f32]>>> {
    cache.lock().unwrap_or_else(|e| e.into_inner())
}

/// Every current label of the model's neurons, in the model's layer order, then unit, method,
/// source and rank.
async fn current_labels(db: &SqlitePool, model_id: i64) -> anyhow::Result<Vec<Candidate>> {
    let rows = sqlx::query(
        "SELECT lb.neuron_id, l.id AS layer_id, l.name AS layer, n.unit, n.class_name, lb.method, lb.source_name, lb.rank, lb.text
         FROM labels lb JOIN neurons n ON n.id = lb.neuron_id JOIN layers l ON l.id = n.layer_id
         WHERE l.model_id = ? AND lb.is_current = 1
         ORDER BY l.position, n.unit, lb.method, lb.source_name, lb.rank",
    )
    .bind(model_id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .iter()
        .map(|r| Candidate {
            neuron_id: r.get("neuron_id"),
            layer_id: r.get("layer_id"),
            layer: r.get("layer"),
            unit: r.get("unit"),
            class_name: r.get("class_name"),
            method: Method::from_stored(r.get::<&str, _>("method")),
            source: r.get("source_name"),
            rank: r.get("rank"),
            text: r.get("text"),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{import_labels, register_fake_model, temp_db, FakeModel};
    use dissect::model::{LayerInfo, LayerKind};

    /// With the real all-MiniLM-L6-v2: the neuron whose label means the query comes first,
    /// whichever method gave the label, and a neuron with several close labels counts once.
    #[tokio::test]
    async fn finds_the_neurons_whose_labels_mean_the_query() {
        let (dir, db) = temp_db().await;
        let model = FakeModel(
            vec![
                LayerInfo { name: "conv1".into(), kind: LayerKind::Conv, channels: 4, spatial: Some((2, 2)) },
                LayerInfo { name: "fc".into(), kind: LayerKind::Linear, channels: 3, spatial: None },
            ],
            vec![],
        );
        register_fake_model(&db, dir.path(), &model).await;
        import_labels(
            &db,
            "layer,unit,description\nconv1,0,red and orange stripes\nconv1,1,espresso cups\nfc,2,dogs on grass\n",
            Some(Method::MILAN),
            None,
        )
        .await;
        import_labels(
            &db,
            "Neuron ID,Label 1,Label 2,Label 3\n1,coffee,mugs,saucers\n3,car wheels,tyres,\n",
            Some(Method::DND),
            Some("conv1"),
        )
        .await;

        let searcher = ConceptSearcher::default();
        let r = searcher.search(&db, "m", "a cup of coffee", 10, Audience::Public).await.unwrap().unwrap();
        assert_eq!((r.labels_searched, r.neurons_searched), (8, 4));
        assert_eq!(r.hits.len(), 4, "one hit per labelled neuron");
        let first = &r.hits[0];
        assert_eq!((first.layer.as_str(), first.unit), ("conv1", 1));
        assert!(r.hits.windows(2).all(|w| w[0].cosine >= w[1].cosine));
        let r = searcher.search(&db, "m", "  puppy ", 2, Audience::Public).await.unwrap().unwrap();
        assert_eq!(r.hits.len(), 2);
        assert_eq!((r.hits[0].layer.as_str(), r.hits[0].unit, r.hits[0].method), ("fc", 2, Method::MILAN));
        assert_eq!(r.hits[0].text, "dogs on grass");
        // A neuron counts with its closest label: the DnD rank-2 "tyres" for a tyre query.
        let r = searcher.search(&db, "m", "tyres", 1, Audience::Public).await.unwrap().unwrap();
        assert_eq!((r.hits[0].unit, r.hits[0].rank, r.hits[0].text.as_str()), (3, 2, "tyres"));
        assert!(r.hits[0].cosine > 0.99);

        assert!(searcher.search(&db, "m", "", 10, Audience::Public).await.unwrap().unwrap().hits.is_empty());
        assert_eq!(searcher.search(&db, "nope", "dog", 10, Audience::Public).await.unwrap(), None);
        let long = "a".repeat(MAX_QUERY_CHARS + 1);
        let e = searcher.search(&db, "m", &long, 10, Audience::Public).await.unwrap_err();
        assert!(matches!(e, SearchError::QueryTooLong), "{e}");
        assert!(e.to_string().contains("longer than 200 characters"), "{e}");

        // While an open study rates a neuron of `fc`, a public search leaves that layer's
        // labels out (a rater could learn a description's method); a trusted one does not.
        sqlx::query(
            "INSERT INTO studies (id, name, model_id, status) VALUES (1, 'pilot', (SELECT id FROM models), 'open');
             INSERT INTO study_items (study_id, neuron_id, position)
                 SELECT 1, n.id, 0 FROM neurons n JOIN layers l ON l.id = n.layer_id WHERE l.name = 'fc' AND n.unit = 0",
        )
        .execute(&db)
        .await
        .unwrap();
        let public = searcher.search(&db, "m", "puppy", 10, Audience::Public).await.unwrap().unwrap();
        assert!(public.hits.iter().all(|h| h.layer == "conv1"), "{:?}", public.hits);
        assert_eq!((public.labels_searched, public.layers_hidden), (7, 1));
        let trusted = searcher.search(&db, "m", "puppy", 10, Audience::Trusted).await.unwrap().unwrap();
        assert_eq!((trusted.hits[0].layer.as_str(), trusted.labels_searched, trusted.layers_hidden), ("fc", 8, 0));
        // Closed, the study hides nothing.
        sqlx::query("UPDATE studies SET status = 'closed'").execute(&db).await.unwrap();
        let after = searcher.search(&db, "m", "puppy", 10, Audience::Public).await.unwrap().unwrap();
        assert_eq!((after.hits[0].layer.as_str(), after.layers_hidden), ("fc", 0));
    }

    #[tokio::test]
    async fn a_missing_encoder_is_named_with_its_folder() {
        let dir = tempfile::tempdir().unwrap();
        let searcher = ConceptSearcher::new(dir.path().join("no-encoder"));
        let e = searcher.embed("dog", &["cat"]).await.unwrap_err();
        // The visitor reads what to do; the log also gets where it was looked for.
        assert_eq!(
            e.to_string(),
            "concept search needs the text encoder all-MiniLM-L6-v2, which scripts/setup.sh installs"
        );
        assert!(format!("{e:#}").contains(&format!("from {}", dir.path().join("no-encoder").display())), "{e:#}");
    }
}
