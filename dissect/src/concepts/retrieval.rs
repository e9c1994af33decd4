//! The embedded concept-image source: instead of generating Q images of a concept (no
//! text-to-image weights offline), retrieve the Q images of the held-out pool whose text
//! (dataset description, else caption) is closest to the concept in text-embedding space.
//!
//! The pool is the probing set's held-out split, so a concept is never scored on the images
//! that produced it.

use super::providers::{
    cosine, ComponentInfo, ConceptImage, ConceptImageSource, ProviderError, ProviderResult, Role, TextEncoder,
};
use crate::preprocess::load_rgb;
use std::path::PathBuf;
use std::sync::Arc;

/// One image the source may return.
#[derive(Debug, Clone)]
pub struct PoolImage {
    /// Content hash (the image's identity everywhere else).
    pub key: String,
    pub path: PathBuf,
    /// Shown in provenance, e.g. the path relative to the probing set.
    pub name: String,
    /// What the image shows, in words.
    pub text: String,
}

pub struct RetrievalImages {
    pool: Vec<PoolImage>,
    embeddings: Vec<Vec<f32>>,
    encoder: Arc<dyn TextEncoder>,
}

impl RetrievalImages {
    /// Embeds every pool image's text once.
    pub fn new(pool: Vec<PoolImage>, encoder: Arc<dyn TextEncoder>) -> ProviderResult<Self> {
        let texts: Vec<&str> = pool.iter().map(|p| p.text.as_str()).collect();
        let embeddings = if texts.is_empty() { Vec::new() } else { encoder.embed(&texts)? };
        Ok(RetrievalImages { pool, embeddings, encoder })
    }

    pub fn len(&self) -> usize {
        self.pool.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pool.is_empty()
    }

    /// Indices of the `q` pool images closest to `concept`, best first (ties: pool order).
    pub fn nearest(&self, concept: &str, q: usize) -> ProviderResult<Vec<(usize, f32)>> {
        if self.pool.is_empty() {
            return Ok(Vec::new());
        }
        let query = self.encoder.embed(&[concept])?.pop().unwrap_or_default();
        let mut scored: Vec<(usize, f32)> =
            self.embeddings.iter().enumerate().map(|(i, e)| (i, cosine(&query, e))).collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        scored.truncate(q);
        Ok(scored)
    }
}

impl ConceptImageSource for RetrievalImages {
    fn info(&self) -> ComponentInfo {
        ComponentInfo::substitute(
            Role::ConceptImages,
            format!(
                "retrieval from {} held-out probing images by {} text similarity",
                self.pool.len(),
                self.encoder.info().name
            ),
            "existing images retrieved by their description instead of Stable Diffusion generations",
        )
    }

    fn images(&self, concept: &str, q: usize) -> ProviderResult<Vec<ConceptImage>> {
        self.nearest(concept, q)?
            .into_iter()
            .map(|(i, sim)| {
                let p = &self.pool[i];
                let image = load_rgb(&p.path).map_err(|e| ProviderError::Local {
                    component: "concept-image retrieval".into(),
                    reason: e.to_string(),
                })?;
                Ok(ConceptImage { key: p.key.clone(), image, origin: format!("{} (text cosine {sim:.2})", p.name) })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A text encoder over a fixed vocabulary: one axis per word, bag of words, L2-normalised.
    struct BagOfWords;
    impl TextEncoder for BagOfWords {
        fn info(&self) -> ComponentInfo {
            ComponentInfo::substitute(Role::TextEncoder, "bag of words", "test")
        }
        fn embed(&self, texts: &[&str]) -> ProviderResult<Vec<Vec<f32>>> {
            const VOCAB: [&str; 4] = ["dog", "cat", "car", "red"];
            Ok(texts
                .iter()
                .map(|t| {
                    let v: Vec<f32> =
                        VOCAB.iter().map(|w| t.split_whitespace().filter(|x| x == w).count() as f32).collect();
                    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
                    v.into_iter().map(|x| x / n).collect()
                })
                .collect())
        }
        fn duplicate_cosine(&self) -> f32 {
            0.9
        }
    }

    fn pool(texts: &[&str]) -> Vec<PoolImage> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| PoolImage {
                key: format!("k{i}"),
                path: format!("/nonexistent/{i}.png").into(),
                name: format!("{i}.png"),
                text: t.to_string(),
            })
            .collect()
    }

    #[test]
    fn nearest_ranks_by_text_similarity_with_stable_ties() {
        let r = RetrievalImages::new(
            pool(&["a red car", "a dog", "a cat", "a dog and a cat", "a dog"]),
            Arc::new(BagOfWords),
        )
        .unwrap();
        let got: Vec<usize> = r.nearest("dog", 3).unwrap().into_iter().map(|(i, _)| i).collect();
        assert_eq!(got, vec![1, 4, 3]);
        assert_eq!(r.nearest("red car", 1).unwrap()[0].0, 0);
        assert_eq!(r.nearest("dog", 99).unwrap().len(), 5);
    }

    #[test]
    fn an_empty_pool_yields_no_images_and_a_missing_file_names_itself() {
        let empty = RetrievalImages::new(Vec::new(), Arc::new(BagOfWords)).unwrap();
        assert!(empty.images("dog", 10).unwrap().is_empty());
        let r = RetrievalImages::new(pool(&["a dog"]), Arc::new(BagOfWords)).unwrap();
        let err = r.images("dog", 1).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/0.png"), "{err}");
    }
}
