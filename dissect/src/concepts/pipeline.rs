//! Steps 1–3 for many neurons of one layer, amortising shared work:
//! one activation recording for the layer (done by the caller), captions cached per image or
//! crop, concept images fetched once per concept text, each concept image run through the target
//! model once for all neurons, and image embeddings cached per image.
//!
//! Neurons are processed in chunks; each finished neuron is handed to the caller's sink at once
//! (so a killed run loses at most the chunk in flight), and a failing neuron is reported with its
//! stage and reason while the run goes on.

use super::providers::{
    CaptionInput, Captioner, ChatModel, ComponentInfo, ConceptImageSource, ImageEncoder, TextEncoder,
};
use super::scoring::{label_concepts, order_with_ties, score_concepts, ConceptScores, ScoringFunction, TieBreak};
use super::summarize::{candidates_batch_until, Candidates, LlmRound, SummarizeOptions};
use crate::crops::{self, CropBox, Summary, TopCandidate};
use crate::dtop::{neuron_top, NeuronTop};
use crate::model::{LayerInfo, LayerKind, TargetModel};
use crate::partition::{DProbe, PartitionInfo};
use crate::preprocess::{image_to_tensor, load_rgb, stack_batch};
use crate::record::ImageSource;
use image::RgbImage;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The five components of a run.
#[derive(Clone)]
pub struct Providers {
    pub captioner: Arc<dyn Captioner>,
    pub llm: Arc<dyn ChatModel>,
    pub concept_images: Arc<dyn ConceptImageSource>,
    pub image_encoder: Arc<dyn ImageEncoder>,
    pub text_encoder: Arc<dyn TextEncoder>,
}

impl Providers {
    /// Every component's provenance, in role order.
    pub fn provenance(&self) -> Vec<ComponentInfo> {
        vec![
            self.captioner.info(),
            self.llm.info(),
            self.concept_images.info(),
            self.image_encoder.info(),
            self.text_encoder.info(),
        ]
    }

    /// True when any component is an offline substitute for the paper's.
    pub fn uses_substitutes(&self) -> bool {
        self.provenance().iter().any(|c| !c.paper_equivalent)
    }
}

/// Settings of Steps 1–3.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DissectOptions {
    /// `g`: spatial mean (default) or max.
    pub summary: Summary,
    /// K: size of D_top.
    pub top_k: usize,
    /// Q: concept images per candidate.
    pub images_per_concept: usize,
    pub scoring: ScoringFunction,
    pub summarize: SummarizeOptions,
    /// Neurons per chunk: bigger chunks share more concept images per forward pass.
    pub chunk: usize,
    /// How the probing set was split (D_probe, concept pool, evaluation), for provenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<PartitionInfo>,
    /// The top-3 near-duplicate cosine used; `None` until a run fills in its text encoder's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate_label_cosine: Option<f32>,
    /// Leak-free mode (docs/method.md, "Measuring labels"): on an ImageNet classifier layer, the
    /// captions of unit c never name class c (or a class sharing one of its names).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leak_free: bool,
    /// Grounded candidates (docs/method.md, "Step 2"; a departure from the paper): the WordNet
    /// concept most captions' classes share joins the LLM's candidates. Absent in older runs'
    /// settings, which had none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub grounded_candidates: bool,
}

impl Default for DissectOptions {
    fn default() -> Self {
        DissectOptions {
            summary: Summary::Mean,
            top_k: 10,
            images_per_concept: 10,
            scoring: ScoringFunction::default(),
            summarize: SummarizeOptions::default(),
            chunk: 8,
            partition: None,
            duplicate_label_cosine: None,
            leak_free: false,
            grounded_candidates: true,
        }
    }
}

/// One image of D_top, with its caption.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TopEntry {
    /// Index into the probing images.
    pub image_index: usize,
    pub crop: Option<CropBox>,
    pub activation: f32,
    pub caption: String,
    /// The unit's activation map on the whole source image (a crop's entry carries its image's
    /// map too), for the heatmap overlay; `None` for layers without spatial maps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<crops::ImageMap>,
}

/// One concept image (D_new) of a candidate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConceptImageEntry {
    pub key: String,
    pub origin: String,
    pub activation: f32,
}

/// One candidate concept with its score under every function.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConceptEntry {
    pub label: String,
    pub scores: ConceptScores,
    pub images: Vec<ConceptImageEntry>,
}

/// Everything a finished neuron produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NeuronResult {
    pub unit: usize,
    pub top: Vec<TopEntry>,
    pub candidates: Candidates,
    /// In candidate order.
    pub concepts: Vec<ConceptEntry>,
    /// Index into `concepts` of the chosen label (None only when there were no candidates).
    pub best: Option<usize>,
    /// "Multiple labels": up to three indices into `concepts`, best first, near-duplicates dropped.
    pub top3: Vec<usize>,
    /// The best concept under each scoring function, in [`ScoringFunction::ALL`]'s order (empty
    /// when there were no candidates): the paper's Table 4 compares these in a human study.
    #[serde(default)]
    pub best_by_scoring: Vec<(ScoringFunction, usize)>,
}

impl NeuronResult {
    pub fn label(&self) -> Option<&str> {
        self.best.map(|i| self.concepts[i].label.as_str())
    }
}

/// The stage a neuron failed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PipelineStage {
    TopImages,
    Captions,
    Candidates,
    ConceptImages,
    Scores,
}

impl PipelineStage {
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineStage::TopImages => "top_images",
            PipelineStage::Captions => "captions",
            PipelineStage::Candidates => "candidates",
            PipelineStage::ConceptImages => "concept_images",
            PipelineStage::Scores => "scores",
        }
    }
}

#[derive(Debug, Clone)]
pub enum NeuronOutcome {
    Done(Box<NeuronResult>),
    Failed { unit: usize, stage: PipelineStage, reason: String },
}

impl NeuronOutcome {
    pub fn unit(&self) -> usize {
        match self {
            NeuronOutcome::Done(r) => r.unit,
            NeuronOutcome::Failed { unit, .. } => *unit,
        }
    }
}

/// Wall time spent per stage over a run (for the benchmark's breakdown).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageTimes {
    pub crops: Duration,
    pub captions: Duration,
    pub llm: Duration,
    pub concept_images: Duration,
    pub concept_activations: Duration,
    pub scoring: Duration,
}

/// Progress: neurons finished (done or failed) out of the total asked.
#[derive(Debug, Clone, Copy)]
pub struct NeuronProgress {
    pub finished: usize,
    pub total: usize,
    pub failed: usize,
}

/// A step of the pipeline inside a chunk of neurons, reported as it starts with its size: a
/// chunk takes minutes on a CPU (mostly the LLM), and a front end should say what it is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkStep {
    /// Step 1: D_top and its attention crops.
    TopImages,
    /// Step 2A: captioning `regions` image regions not captioned before.
    Captions { regions: usize },
    /// Step 2B: a round of LLM requests.
    Llm(LlmRound),
    /// Step 3.1: images for `concepts` candidate concepts not seen before.
    ConceptImages { concepts: usize },
    /// Steps 3.2–3.4: the target model on the new concept images, then every candidate's scores.
    Scores,
}

/// Where a run is inside its current chunk.
#[derive(Debug, Clone, Copy)]
pub struct ChunkProgress {
    pub step: ChunkStep,
    /// 1-based chunk number, of `chunks`.
    pub chunk: usize,
    pub chunks: usize,
    /// Neurons in this chunk.
    pub neurons: usize,
    /// Neurons finished before this chunk, of `total`.
    pub finished: usize,
    pub total: usize,
}

/// What [`LayerDissector::run`] reports as it goes.
#[derive(Debug, Clone)]
pub enum RunProgress {
    /// A step of the current chunk started.
    Step(ChunkProgress),
    /// A neuron finished (after the sink stored it).
    Neuron(NeuronProgress),
}

/// What was cached across neurons, kept for a whole layer.
#[derive(Default)]
struct Caches {
    captions: HashMap<String, String>,
    concept_images: HashMap<String, Result<Vec<String>, String>>,
    /// Concept image key → (origin, pixels until activations are known).
    image_meta: HashMap<String, String>,
    pixels: HashMap<String, RgbImage>,
    /// Concept image key → the layer's activations (all units).
    activations: HashMap<String, Vec<f32>>,
    embeddings: HashMap<String, Vec<f32>>,
    /// Caption → its simplification by the LLM.
    simplified: HashMap<String, String>,
}

/// Runs Steps 1–3 for `units` of one layer.
pub struct LayerDissector<'a, M: TargetModel + ?Sized> {
    pub model: &'a M,
    /// Model index of the layer.
    pub layer: usize,
    pub images: &'a [ImageSource],
    /// Dataset descriptions per probing image (same order as `images`).
    pub descriptions: &'a [Option<String>],
    /// The layer's recording over `images`, restricted to D_probe: D_top is ranked on it.
    pub summaries: &'a DProbe,
    pub providers: Providers,
    pub options: DissectOptions,
    pub cancel: Option<Arc<AtomicBool>>,
}

impl<M: TargetModel + ?Sized> LayerDissector<'_, M> {
    /// Processes `units` in chunks, calling `sink` once per finished neuron (in unit order within
    /// a chunk) and `progress` after each, and `progress` as each step of a chunk starts. Stops
    /// early (Ok) when cancelled; an error from `sink` (e.g. the database) stops the run.
    pub fn run<E>(
        &self,
        units: &[usize],
        progress: &mut dyn FnMut(RunProgress),
        sink: &mut dyn FnMut(NeuronOutcome) -> Result<(), E>,
    ) -> Result<StageTimes, E> {
        let mut caches = Caches::default();
        let mut times = StageTimes::default();
        let mut finished = 0;
        let mut failed = 0;
        let chunk_size = self.options.chunk.max(1);
        let chunks = units.len().div_ceil(chunk_size);
        for (c, chunk) in units.chunks(chunk_size).enumerate() {
            if self.cancelled() {
                break;
            }
            let at = ChunkProgress {
                step: ChunkStep::TopImages,
                chunk: c + 1,
                chunks,
                neurons: chunk.len(),
                finished,
                total: units.len(),
            };
            let outcomes = self.run_chunk(chunk, &mut caches, &mut times, &mut |step| {
                progress(RunProgress::Step(ChunkProgress { step, ..at }))
            });
            for outcome in outcomes {
                failed += matches!(outcome, NeuronOutcome::Failed { .. }) as usize;
                finished += 1;
                sink(outcome)?;
                progress(RunProgress::Neuron(NeuronProgress { finished, total: units.len(), failed }));
            }
        }
        Ok(times)
    }

    /// The ImageNet classes `unit`'s captions may not name: in leak-free mode on a 1000-way
    /// classifier layer, its own class, the classes sharing a name with it and its WordNet
    /// hyponyms ([`crate::imagenet::withheld_classes`]); else none.
    fn withheld_classes(&self, unit: usize) -> Vec<usize> {
        if self.options.leak_free && leak_free_applies(&self.model.layers()[self.layer]) {
            crate::imagenet::withheld_classes(unit)
        } else {
            Vec::new()
        }
    }

    fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// The chunk's outcomes; none when cancelled before or during its LLM stage (the longest one;
    /// a cancel waits for the LLM round in progress).
    fn run_chunk(
        &self,
        units: &[usize],
        caches: &mut Caches,
        times: &mut StageTimes,
        step: &mut dyn FnMut(ChunkStep),
    ) -> Vec<NeuronOutcome> {
        // Each neuron moves through the stages; `Err` holds its failure.
        struct Work {
            unit: usize,
            state: Result<(), (PipelineStage, String)>,
            top: Vec<TopEntry>,
            top_keys: Vec<String>,
            candidates: Option<Candidates>,
        }
        let mut work: Vec<Work> = units
            .iter()
            .map(|&unit| Work { unit, state: Ok(()), top: vec![], top_keys: vec![], candidates: None })
            .collect();

        // Step 1: D_top with crops.
        step(ChunkStep::TopImages);
        let t = Instant::now();
        let mut pixels: HashMap<String, RgbImage> = HashMap::new();
        for w in work.iter_mut() {
            match self.top_of(w.unit, &mut pixels) {
                Ok((top, keys)) => (w.top, w.top_keys) = (top, keys),
                Err(e) => w.state = Err((PipelineStage::TopImages, e)),
            }
        }
        times.crops += t.elapsed();

        // Step 2A: captions of every D_top image not captioned before, in one call.
        // A crop is described from its own pixels only: its image's description would undo Step 1.
        // In leak-free mode a unit's captions withhold its class, so they are cached per withheld set.
        let t = Instant::now();
        struct Wanted<'d> {
            caption_key: String,
            region_key: String,
            description: Option<&'d str>,
            withheld: Vec<usize>,
        }
        let withheld: Vec<Vec<usize>> = work.iter().map(|w| self.withheld_classes(w.unit)).collect();
        let mut wanted: Vec<Wanted> = Vec::new();
        for (w, withheld) in work.iter().zip(&withheld).filter(|(w, _)| w.state.is_ok()) {
            for (key, e) in w.top_keys.iter().zip(&w.top) {
                let caption_key = caption_key(key, withheld);
                if !caches.captions.contains_key(&caption_key) && !wanted.iter().any(|x| x.caption_key == caption_key) {
                    let description = match e.crop {
                        Some(_) => None,
                        None => self.descriptions.get(e.image_index).and_then(|d| d.as_deref()),
                    };
                    wanted.push(Wanted {
                        caption_key,
                        region_key: key.clone(),
                        description,
                        withheld: withheld.clone(),
                    });
                }
            }
        }
        if !wanted.is_empty() {
            step(ChunkStep::Captions { regions: wanted.len() });
        }
        let inputs: Vec<CaptionInput> = wanted
            .iter()
            .map(|x| CaptionInput {
                key: &x.region_key,
                image: &pixels[&x.region_key],
                description: x.description,
                withheld_classes: &x.withheld,
            })
            .collect();
        match self.providers.captioner.caption(&inputs) {
            Ok(captions) => {
                for (x, c) in wanted.iter().zip(captions) {
                    // Whatever the captioner did, a withheld name never reaches the LLM.
                    let c = if x.withheld.is_empty() { c } else { crate::imagenet::redact(&c, &x.withheld) };
                    caches.captions.insert(x.caption_key.clone(), c);
                }
            }
            Err(e) => {
                for w in work.iter_mut().filter(|w| w.state.is_ok()) {
                    w.state = Err((PipelineStage::Captions, e.to_string()));
                }
            }
        }
        for (w, withheld) in work.iter_mut().zip(&withheld).filter(|(w, _)| w.state.is_ok()) {
            for (key, e) in w.top_keys.iter().zip(w.top.iter_mut()) {
                e.caption = caches.captions.get(&caption_key(key, withheld)).cloned().unwrap_or_default();
            }
        }
        times.captions += t.elapsed();

        // Step 2B: candidates.
        let t = Instant::now();
        // All of the chunk's neurons at once, so the LLM can answer their requests together.
        if self.cancelled() {
            return Vec::new();
        }
        let asking: Vec<(usize, Vec<String>)> = work
            .iter()
            .enumerate()
            .filter(|(_, w)| w.state.is_ok())
            .map(|(i, w)| (i, w.top.iter().map(|e| e.caption.clone()).collect()))
            .collect();
        let neurons: Vec<(&[String], u64)> = asking.iter().map(|(i, c)| (c.as_slice(), work[*i].unit as u64)).collect();
        let stop = || self.cancelled();
        let Some(answers) = candidates_batch_until(
            self.providers.llm.as_ref(),
            &neurons,
            &self.options.summarize,
            &mut caches.simplified,
            &stop,
            &mut |round| step(ChunkStep::Llm(round)),
        ) else {
            return Vec::new();
        };
        for ((i, _), answer) in asking.iter().zip(answers) {
            let w = &mut work[*i];
            match answer {
                Ok(c) if c.labels.is_empty() => {
                    w.state = Err((PipelineStage::Candidates, "no candidate concepts".into()))
                }
                Ok(mut c) => {
                    if self.options.grounded_candidates {
                        let captions: Vec<String> = w.top.iter().map(|e| e.caption.clone()).collect();
                        if let Some(g) = super::grounded::common_concept(&captions, &withheld[*i]) {
                            c.add_grounded(g);
                        }
                    }
                    w.candidates = Some(c)
                }
                Err(e) => w.state = Err((PipelineStage::Candidates, e.to_string())),
            }
        }

        times.llm += t.elapsed();

        // Step 3.1: concept images, once per concept text.
        let t = Instant::now();
        let mut new_concepts: Vec<&String> = work
            .iter()
            .filter(|w| w.state.is_ok())
            .flat_map(|w| &w.candidates.as_ref().expect("set with Ok").labels)
            .filter(|label| !caches.concept_images.contains_key(*label))
            .collect();
        new_concepts.sort();
        new_concepts.dedup();
        if !new_concepts.is_empty() {
            step(ChunkStep::ConceptImages { concepts: new_concepts.len() });
        }
        for w in work.iter().filter(|w| w.state.is_ok()) {
            for label in &w.candidates.as_ref().expect("set with Ok").labels {
                if caches.concept_images.contains_key(label) {
                    continue;
                }
                let fetched = self.providers.concept_images.images(label, self.options.images_per_concept);
                let keys = fetched.map_err(|e| e.to_string()).map(|imgs| {
                    imgs.into_iter()
                        .map(|ci| {
                            if !caches.activations.contains_key(&ci.key) {
                                caches.pixels.insert(ci.key.clone(), ci.image);
                            }
                            caches.image_meta.insert(ci.key.clone(), ci.origin);
                            ci.key
                        })
                        .collect()
                });
                caches.concept_images.insert(label.clone(), keys);
            }
        }
        times.concept_images += t.elapsed();

        // Step 3.2: the target model on every new concept image, once for all neurons.
        step(ChunkStep::Scores);
        let t = Instant::now();
        let fresh: Vec<String> =
            caches.pixels.keys().filter(|k| !caches.activations.contains_key(*k)).cloned().collect();
        let activation_error = self.concept_activations(&fresh, caches).err();
        times.concept_activations += t.elapsed();

        // Step 3.3–3.4: embeddings, scores, selection.
        let t = Instant::now();
        let mut out = Vec::with_capacity(work.len());
        for mut w in work {
            if w.state.is_ok() {
                if let Some(e) = &activation_error {
                    w.state = Err((PipelineStage::Scores, e.clone()));
                }
            }
            let outcome = match w.state {
                Err((stage, reason)) => NeuronOutcome::Failed { unit: w.unit, stage, reason },
                Ok(()) => {
                    match self.score(w.unit, w.top, &w.top_keys, w.candidates.take().expect("set"), &pixels, caches) {
                        Ok(r) => NeuronOutcome::Done(Box::new(r)),
                        Err((stage, reason)) => NeuronOutcome::Failed { unit: w.unit, stage, reason },
                    }
                }
            };
            out.push(outcome);
        }
        // Pixels of concept images are no longer needed once their activations are known.
        caches.pixels.retain(|k, _| !caches.activations.contains_key(k));
        times.scoring += t.elapsed();
        out
    }

    /// D_top of `unit` with pixels loaded into `pixels` under each entry's key.
    fn top_of(
        &self,
        unit: usize,
        pixels: &mut HashMap<String, RgbImage>,
    ) -> Result<(Vec<TopEntry>, Vec<String>), String> {
        let top: NeuronTop = neuron_top(
            self.model,
            self.images,
            self.summaries.summaries(),
            self.layer,
            unit,
            self.options.summary,
            self.options.top_k,
        )
        .map_err(|e| e.to_string())?;
        let mut entries = Vec::with_capacity(top.d_top.len());
        let mut keys = Vec::with_capacity(top.d_top.len());
        // Start from the pictures Step 1 already decoded for its crops.
        let mut sources: HashMap<usize, RgbImage> = top.top_images.iter().map(|&(i, _)| i).zip(top.pictures).collect();
        let maps: HashMap<usize, crops::ImageMap> = top.top_images.iter().map(|&(i, _)| i).zip(top.maps).collect();
        for TopCandidate { image_index, crop, activation } in top.d_top {
            let source = &self.images[image_index];
            let key = region_key(&source.sha256, crop.as_ref());
            if !pixels.contains_key(&key) {
                if !sources.contains_key(&image_index) {
                    sources.insert(image_index, load_rgb(&source.path).map_err(|e| e.to_string())?);
                }
                let full = &sources[&image_index];
                let img = match &crop {
                    Some(b) => crops::crop_image(full, b, crops::WORKING_SIZE),
                    None => full.clone(),
                };
                pixels.insert(key.clone(), img);
            }
            entries.push(TopEntry {
                image_index,
                crop,
                activation,
                caption: String::new(),
                map: maps.get(&image_index).cloned(),
            });
            keys.push(key);
        }
        Ok((entries, keys))
    }

    fn concept_activations(&self, keys: &[String], caches: &mut Caches) -> Result<(), String> {
        let p = self.model.preprocessing();
        for chunk in keys.chunks(super::shared_model::PROVIDER_BATCH) {
            let inputs: Vec<tch::Tensor> = chunk.iter().map(|k| image_to_tensor(&caches.pixels[k], &p)).collect();
            let batch = stack_batch(&inputs).map_err(|e| e.to_string())?;
            let acts = self.model.forward_layers(&batch, &[self.layer]).map_err(|e| e.to_string())?;
            let reduced = self.options.summary.reduce(&acts[0]).to_device(tch::Device::Cpu).contiguous();
            let channels = reduced.size()[1] as usize;
            let flat = Vec::<f32>::try_from(&reduced.view([-1])).map_err(|e| e.to_string())?;
            for (i, k) in chunk.iter().enumerate() {
                caches.activations.insert(k.clone(), flat[i * channels..(i + 1) * channels].to_vec());
            }
        }
        Ok(())
    }

    fn embeddings(
        &self,
        keys: &[String],
        pixels: &HashMap<String, RgbImage>,
        caches: &mut Caches,
    ) -> Result<(), String> {
        let missing: Vec<&String> = keys.iter().filter(|k| !caches.embeddings.contains_key(*k)).collect();
        let mut unique: Vec<&String> = Vec::new();
        for k in missing {
            if !unique.contains(&k) {
                unique.push(k);
            }
        }
        if unique.is_empty() {
            return Ok(());
        }
        let imgs: Vec<&RgbImage> = unique
            .iter()
            .map(|k| {
                pixels.get(*k).or_else(|| caches.pixels.get(*k)).ok_or_else(|| format!("pixels of image {k} are gone"))
            })
            .collect::<Result<_, _>>()?;
        let embs = self.providers.image_encoder.encode(&imgs).map_err(|e| e.to_string())?;
        for (k, e) in unique.into_iter().zip(embs) {
            caches.embeddings.insert(k.clone(), e);
        }
        Ok(())
    }

    fn score(
        &self,
        unit: usize,
        top: Vec<TopEntry>,
        top_keys: &[String],
        candidates: Candidates,
        pixels: &HashMap<String, RgbImage>,
        caches: &mut Caches,
    ) -> Result<NeuronResult, (PipelineStage, String)> {
        let mut labels = Vec::new();
        let mut image_keys: Vec<Vec<String>> = Vec::new();
        for label in &candidates.labels {
            match caches.concept_images.get(label) {
                Some(Ok(keys)) => image_keys.push(keys.clone()),
                Some(Err(e)) => return Err((PipelineStage::ConceptImages, format!("concept `{label}`: {e}"))),
                None => return Err((PipelineStage::ConceptImages, format!("concept `{label}` has no image entry"))),
            }
            labels.push(label.clone());
        }
        let all_keys: Vec<String> = top_keys.iter().chain(image_keys.iter().flatten()).cloned().collect();
        self.embeddings(&all_keys, pixels, caches).map_err(|e| (PipelineStage::Scores, e))?;

        let activations: Vec<Vec<f32>> =
            image_keys.iter().map(|keys| keys.iter().map(|k| caches.activations[k][unit]).collect()).collect();
        let top_emb: Vec<Vec<f32>> = top_keys.iter().map(|k| caches.embeddings[k].clone()).collect();
        let img_emb: Vec<Vec<Vec<f32>>> =
            image_keys.iter().map(|keys| keys.iter().map(|k| caches.embeddings[k].clone()).collect()).collect();
        let scores = score_concepts(&activations, &top_emb, &img_emb);
        let ties = TieBreak { support: &candidates.support, labels: &labels };
        let order = order_with_ties(&scores, self.options.scoring, &ties);
        let best_by_scoring: Vec<(ScoringFunction, usize)> = ScoringFunction::ALL
            .into_iter()
            .filter_map(|f| order_with_ties(&scores, f, &ties).first().map(|&best| (f, best)))
            .collect();
        let label_refs: Vec<&str> = labels.iter().map(String::as_str).collect();
        let text_emb =
            self.providers.text_encoder.embed(&label_refs).map_err(|e| (PipelineStage::Scores, e.to_string()))?;
        let threshold =
            self.options.duplicate_label_cosine.unwrap_or_else(|| self.providers.text_encoder.duplicate_cosine());
        let has_images: Vec<bool> = image_keys.iter().map(|keys| !keys.is_empty()).collect();
        let top3 = label_concepts(&order, &has_images, &text_emb, 3, threshold);

        let concepts = labels
            .into_iter()
            .zip(scores)
            .zip(image_keys.iter().zip(&activations))
            .map(|((label, scores), (keys, acts))| ConceptEntry {
                label,
                scores,
                images: keys
                    .iter()
                    .zip(acts)
                    .map(|(k, &a)| ConceptImageEntry {
                        key: k.clone(),
                        origin: caches.image_meta.get(k).cloned().unwrap_or_default(),
                        activation: a,
                    })
                    .collect(),
            })
            .collect();
        Ok(NeuronResult { unit, top, candidates, concepts, best: order.first().copied(), top3, best_by_scoring })
    }
}

/// Whether leak-free mode means anything on `layer`: only an ImageNet-1k classifier layer's units
/// are classes whose names a caption could give away.
pub fn leak_free_applies(layer: &LayerInfo) -> bool {
    layer.kind == LayerKind::Classifier && layer.channels == crate::imagenet::NUM_CLASSES
}

/// Cache key of a caption: the region's key, plus the withheld classes when there are any.
fn caption_key(region_key: &str, withheld: &[usize]) -> String {
    if withheld.is_empty() {
        return region_key.to_string();
    }
    let ids: Vec<String> = withheld.iter().map(usize::to_string).collect();
    format!("{region_key} withholding {}", ids.join(","))
}

/// Identity of a D_top entry: the image hash, plus the crop box for a crop.
pub fn region_key(sha256: &str, crop: Option<&CropBox>) -> String {
    match crop {
        None => sha256.to_string(),
        Some(b) => {
            let mut h = Sha256::new();
            h.update(sha256.as_bytes());
            h.update(format!("crop:{},{},{},{}", b.x0, b.y0, b.x1, b.y1).as_bytes());
            hex::encode(h.finalize())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leak_free_applies_to_imagenet_classifier_layers_only() {
        let layer = |kind, channels| LayerInfo { name: "l".into(), kind, channels, spatial: None };
        assert!(leak_free_applies(&layer(LayerKind::Classifier, 1000)));
        assert!(
            !leak_free_applies(&layer(LayerKind::Classifier, 10)),
            "a 10-class head's units are not ImageNet classes"
        );
        assert!(!leak_free_applies(&layer(LayerKind::Linear, 1000)));
    }
}
