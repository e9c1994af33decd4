//! Load benchmark of the neuron gallery on a release server over loopback.
//!
//! `cargo bench -p server --bench gallery_load` starts `target/release/dnd serve` (or `$DND_BIN`)
//! on a free port with a throw-away data folder. The server registers the embedded default by
//! itself (EfficientNet-Lite0 with one row per neuron, the built-in probing set), so
//! `scripts/setup.sh` must have prepared the assets. Then, without running the neural pipeline,
//! one whole layer gets what a fully labelled layer has:
//!
//! - MILAN, CLIP-Dissect and NetDissect labels for every unit, as CSV files in those methods'
//!   layouts imported with `dnd import-labels` beside the running server (the real import path);
//! - a finished DnD run over every unit, written by the server's own run store
//!   (`src/dissection/store.rs`, compiled into this bench): D_top with crops and captions of real
//!   probing images, 6 candidate concepts with all four scores and 10 held-out concept images
//!   each, and the top-3 DnD labels.
//!
//! Then, from the same number of concurrent clients each:
//!
//! 1. reference: `GET /healthz` (the floor any request pays), measured in this run;
//! 2. warm-up: every URL below once;
//! 3. neuron pages: `/m/efficientnet-lite0/{layer}/{unit}` over every unit of the layer;
//! 4. layer grids: `/m/efficientnet-lite0/{layer}` with page, sort and filter variants.
//!
//! Every answer must be 200 and hold what the seeded data says it shows (the unit's heading and
//! labels, its DnD label and top caption; a grid's counts and its first neuron), so a broken page
//! cannot look fast. Sizing (env): `DND_LOAD_CLIENTS` (64), `DND_LOAD_SECS` (8, per measured
//! phase), `DND_LOAD_REF_SECS` (3), `DND_GALLERY_LAYER` (`head`, 1280 units). Exits non-zero on
//! any failed or wrong answer or when set-up fails; the latency target (neuron page p99 ≤ 20 ms)
//! is reported, not enforced, because the numbers depend on the host.

mod support;

// The run store `dnd dissect` writes finished neurons with: the bench writes exactly its rows.
use studio::dissection::store;

use dissect::concepts::pipeline::{
    ConceptEntry, ConceptImageEntry, DissectOptions, NeuronOutcome, NeuronResult, TopEntry,
};
use dissect::concepts::scoring::ConceptScores;
use dissect::concepts::summarize::Candidates;
use dissect::concepts::{ComponentInfo, Role};
use dissect::crops::CropBox;
use sqlx::SqlitePool;
use std::sync::Arc;
use std::time::Instant;
use support::{client, closed_loop, get_expecting, open_db, Phase, Server, Sizing, Until};

/// The target: a neuron page's p99 with a warm cache.
const TARGET_NEURON_P99_MS: f64 = 20.0;
const MODEL: &str = "efficientnet-lite0";
/// The layer grid's page size.
const GRID_PAGE: usize = app::api::PAGE_SIZE as usize;
/// Per neuron of the DnD run: D_top's size, candidate concepts, concept images per candidate.
const TOP_K: usize = 10;
const CANDIDATES: usize = 6;
const IMAGES_PER_CONCEPT: usize = 10;

// ------------------------------------------------------------------------------------------
// The seeded labels (deterministic, so every page's expected content is known)
// ------------------------------------------------------------------------------------------

const ADJ: [&str; 16] = [
    "striped", "spotted", "furry", "shiny", "green", "red", "round", "wooden", "metal", "blue", "white", "dark",
    "curved", "grainy", "wet", "bright",
];
const NOUN: [&str; 32] = [
    "dog", "cat", "grass", "sky", "wheel", "car", "bird", "water", "tree", "face", "text", "fence", "flower", "sand",
    "road", "window", "bottle", "fur", "leaf", "boat", "building", "cloud", "snow", "fruit", "shoe", "rock", "feather",
    "chair", "horse", "bread", "clock", "ball",
];
const PLACE: [&str; 8] =
    ["on grass", "in water", "indoors", "on a road", "in the sky", "on a table", "at night", "in snow"];
const CATEGORY: [&str; 5] = ["object", "part", "material", "texture", "color"];

/// MILAN's description: different for every unit below 4096, so it identifies the unit's page.
fn milan(u: usize) -> String {
    format!("{} {} {}", ADJ[u % 16], NOUN[(u / 16) % 32], PLACE[(u / 512) % 8])
}

fn clip_dissect(u: usize) -> &'static str {
    NOUN[(u * 7 + 3) % 32]
}

fn netdissect(u: usize) -> (&'static str, String) {
    (CATEGORY[u % 5], format!("{}-{}", NOUN[(u * 5 + 1) % 32], CATEGORY[u % 5]))
}

/// A probing image's caption (and its simplification): a function of the image and region only,
/// as the caption cache makes it.
fn caption(image: usize, crop: bool) -> (String, String) {
    let thing = format!("{} {}", ADJ[image % 16], NOUN[(image / 16) % 32]);
    let raw =
        if crop { format!("a close up of a {thing}") } else { format!("a photo of a {thing} {}", PLACE[image % 8]) };
    (raw, thing)
}

/// The unit's candidate concepts: 5 distinct ones and the background variant of the first.
fn concepts(u: usize) -> Vec<String> {
    let mut c: Vec<String> =
        (0..CANDIDATES - 1).map(|k| format!("{} {}", ADJ[(u + 3 * k) % 16], NOUN[(u * 3 + 5 * k) % 32])).collect();
    c.push(format!("{} background", c[0]));
    c
}

/// Scores of candidate `k` of unit `u`, in the ranges the pipeline produces.
fn scores(u: usize, k: usize) -> ConceptScores {
    let x = ((u * 37 + k * 53) % 101) as f64 / 100.0;
    ConceptScores {
        mean: -(5.0 + 40.0 * (1.0 - x)),
        topk_squared: -(10.0 + 900.0 * (1.0 - x)),
        image_products: 0.2 + 0.6 * x,
        combined: (CANDIDATES - k) as f64 * (0.2 + 0.6 * x),
        ranks: (0..IMAGES_PER_CONCEPT).map(|i| (1 + i * 3 + (u + k) % 7) as f64).collect(),
    }
}

/// One probing image as the activation files number it (`probe_set_images.position`).
struct ProbeImage {
    sha256: String,
    width: u32,
    height: u32,
    heldout: bool,
}

/// What the seeded layer shows, for the requests and their checks.
struct Layer {
    name: String,
    channels: usize,
    /// Per unit: every current label's text (all methods, DnD's top 3), the DnD label, the
    /// rank-1 caption, and the DnD label's score under the run's scoring.
    labels: Vec<Vec<String>>,
    dnd: Vec<String>,
    top_caption: Vec<String>,
    dnd_score: Vec<f64>,
}

/// Imports the three other methods' labels of `layer` through `dnd import-labels`.
fn import_labels(server: &Server, layer: &str, channels: usize) {
    let dir = server.data_dir();
    let mut milan_csv = String::from("layer,unit,description\n");
    let mut clip_csv = String::from("layer,unit,description,similarity\n");
    let mut tally = String::from("unit,category,label,score\n");
    for u in 0..channels {
        milan_csv.push_str(&format!("{layer},{u},{}\n", milan(u)));
        clip_csv.push_str(&format!("{layer},{u},{},{:.4}\n", clip_dissect(u), 0.15 + (u % 89) as f64 / 400.0));
        let (category, label) = netdissect(u);
        tally.push_str(&format!("{},{category},{label},{:.4}\n", u + 1, 0.04 + (u % 61) as f64 / 500.0));
    }
    for (file, text, layer_arg) in
        [("milan.csv", milan_csv, None), ("clip-dissect.csv", clip_csv, None), ("tally.csv", tally, Some(layer))]
    {
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap();
        let path = path.to_string_lossy().into_owned();
        let mut args = vec!["import-labels", "--model", MODEL, path.as_str()];
        if let Some(l) = layer_arg {
            args.extend(["--layer", l]);
        }
        if let Err(e) = server.run_cli(&args) {
            eprintln!("gallery_load: importing {file} failed: {e}");
            std::process::exit(1);
        }
    }
}

/// Writes one finished DnD run over every unit of the layer with the server's run store.
async fn dnd_run(db: &SqlitePool, layer: &str) -> Layer {
    // Both registered by the server at start-up from the embedded-default assets.
    let found: Option<(i64, i64, i64, Option<i64>)> = sqlx::query_as(
        "SELECT m.id, l.id, l.channels, (SELECT id FROM probe_sets WHERE slug = 'builtin')
         FROM layers l JOIN models m ON m.id = l.model_id WHERE m.slug = ? AND l.name = ?",
    )
    .bind(MODEL)
    .bind(layer)
    .fetch_optional(db)
    .await
    .unwrap();
    let Some((model_id, layer_id, channels, Some(probe_set_id))) = found else {
        eprintln!(
            "gallery_load: the server registered no layer `{layer}` of {MODEL} or no built-in probing set: \
             are the embedded-default assets there (scripts/setup.sh, $DND_ASSETS)?"
        );
        std::process::exit(2);
    };
    let channels = channels as usize;
    let images: Vec<ProbeImage> = sqlx::query_as::<_, (String, i64, i64, String)>(
        "SELECT i.sha256, i.width, i.height, p.split FROM probe_set_images p JOIN images i ON i.id = p.image_id
         WHERE p.probe_set_id = ? ORDER BY p.position",
    )
    .bind(probe_set_id)
    .fetch_all(db)
    .await
    .unwrap()
    .into_iter()
    .map(|(sha256, w, h, split)| ProbeImage { sha256, width: w as u32, height: h as u32, heldout: split == "heldout" })
    .collect();
    let probe: Vec<usize> = (0..images.len()).filter(|&i| !images[i].heldout).collect();
    let heldout: Vec<usize> = (0..images.len()).filter(|&i| images[i].heldout).collect();
    assert!(probe.len() > 3 * TOP_K && heldout.len() > IMAGES_PER_CONCEPT, "the built-in probing set is too small");

    let options = DissectOptions { top_k: TOP_K, images_per_concept: IMAGES_PER_CONCEPT, ..DissectOptions::default() };
    let provenance = vec![
        ComponentInfo::substitute(
            Role::Captioner,
            "EfficientNet-Lite2 top ImageNet classes + dataset descriptions",
            "not BLIP",
        ),
        ComponentInfo::substitute(
            Role::Llm,
            "Qwen2.5-Coder-0.5B-Instruct Q4_K_M (candle)",
            "a 0.5B local model instead of GPT-3.5 Turbo",
        ),
        ComponentInfo::substitute(
            Role::ConceptImages,
            "retrieval from held-out probing images",
            "not Stable Diffusion",
        ),
        ComponentInfo::substitute(Role::ImageEncoder, "EfficientNet-Lite2 pooled head features", "not CLIP"),
        ComponentInfo::substitute(Role::TextEncoder, "all-MiniLM-L6-v2", "not mpnet"),
    ];
    let units: Vec<usize> = (0..channels).collect();
    let spec = format!("0-{}", channels - 1);
    let run = store::open_run(
        db,
        &store::RunSpec {
            model_id,
            layer_id,
            probe_set_id,
            neurons_spec: &spec,
            neuron_seed: None,
            units: &units,
            options: &options,
            provenance: &provenance,
            job_id: None,
        },
    )
    .await
    .unwrap();
    // Deterministic stand-ins for the recorded activations.
    let act = |image: usize, unit: usize| ((image * 31 + unit * 17) % 997) as f32 / 97.0;
    let writer = store::NeuronWriter {
        run_id: run.run_id,
        layer_id,
        captioner_id: provenance[0].name.clone(),
        llm_id: provenance[1].name.clone(),
        options: options.clone(),
        image_sha256: images.iter().map(|i| i.sha256.clone()).collect(),
        recorded: Box::new(move |image, unit| (act(image, unit), 1.7 * act(image, unit))),
        unit_stats: Box::new(|unit| [0.3, 2.0 + (unit % 13) as f64 / 4.0, 0.9, 5.0 + (unit % 11) as f64 / 2.0]),
    };

    let mut layer_view = Layer {
        name: layer.to_string(),
        channels,
        labels: Vec::with_capacity(channels),
        dnd: Vec::with_capacity(channels),
        top_caption: Vec::with_capacity(channels),
        dnd_score: Vec::with_capacity(channels),
    };
    for &u in &run.remaining {
        let top: Vec<TopEntry> = (0..TOP_K)
            .map(|r| {
                let index = probe[(u * 13 + r * 7) % probe.len()];
                let img = &images[index];
                // Every other image of D_top is an attention crop, as Step 1 makes them.
                let crop = (r % 2 == 1).then(|| {
                    CropBox::new(img.width / 8, img.height / 8, (img.width * 3 / 4).max(1), (img.height * 3 / 4).max(1))
                });
                TopEntry {
                    image_index: index,
                    crop,
                    activation: 10.0 - r as f32 * 0.7,
                    caption: caption(index, crop.is_some()).0,
                    map: None,
                }
            })
            .collect();
        let simplified = top.iter().map(|t| caption(t.image_index, t.crop.is_some()).1).collect();
        let labels = concepts(u);
        let concept_entries: Vec<ConceptEntry> = labels
            .iter()
            .enumerate()
            .map(|(k, label)| ConceptEntry {
                label: label.clone(),
                scores: scores(u, k),
                images: (0..IMAGES_PER_CONCEPT)
                    .map(|j| {
                        let index = heldout[(u * 7 + k * IMAGES_PER_CONCEPT + j) % heldout.len()];
                        ConceptImageEntry {
                            key: images[index].sha256.clone(),
                            origin: format!("held-out image {index}"),
                            activation: act(index, u) + (IMAGES_PER_CONCEPT - j) as f32 * 0.1,
                        }
                    })
                    .collect(),
            })
            .collect();
        // Best first by the run's scoring function, as the pipeline chooses.
        let mut order: Vec<usize> = (0..labels.len()).collect();
        order.sort_by(|&a, &b| {
            options.scoring.of(&concept_entries[b].scores).total_cmp(&options.scoring.of(&concept_entries[a].scores))
        });
        let result = NeuronResult {
            unit: u,
            candidates: Candidates {
                labels: labels.clone(),
                simplified,
                answers: Vec::new(),
                fell_back: false,
                support: Vec::new(),
                grounded: Vec::new(),
            },
            best: Some(order[0]),
            top3: order[..3].to_vec(),
            best_by_scoring: Vec::new(),
            concepts: concept_entries,
            top,
        };
        let mut current: Vec<String> = order[..3].iter().map(|&k| labels[k].clone()).collect();
        let (_, nd_label) = netdissect(u);
        current.extend([milan(u), clip_dissect(u).to_string(), nd_label]);
        layer_view.labels.push(current);
        layer_view.dnd.push(labels[order[0]].clone());
        layer_view.top_caption.push(result.top[0].caption.clone());
        layer_view.dnd_score.push(options.scoring.of(&result.concepts[order[0]].scores));
        writer.write(db, &NeuronOutcome::Done(Box::new(result))).await.unwrap();
    }
    store::close_run(db, run.run_id, false).await.unwrap();
    layer_view
}

// ------------------------------------------------------------------------------------------
// Requests and what each must show
// ------------------------------------------------------------------------------------------

/// A URL and the texts its page must contain.
type Check = (String, Vec<String>);

fn neuron_pages(base: &str, l: &Layer) -> Vec<Check> {
    (0..l.channels)
        .map(|u| {
            let url = format!("{base}/m/{MODEL}/{}/{u}", l.name);
            (url, vec![format!("{} · unit {u}", l.name), milan(u), l.dnd[u].clone(), l.top_caption[u].clone()])
        })
        .collect()
}

/// The grid's first pages by unit, the first page by DnD score, and two label filters (first
/// page and, where there is one, the second).
fn grid_pages(base: &str, l: &Layer) -> Vec<Check> {
    let grid = |query: String, units: Vec<usize>, page: usize, filter: &str| -> Check {
        let pages = units.len().div_ceil(GRID_PAGE).max(1);
        let first = units[(page - 1) * GRID_PAGE];
        let mut expect =
            vec![format!("{} of {} neurons", units.len(), l.channels), format!("page {page} of {pages}"), milan(first)];
        if !filter.is_empty() {
            expect.push(format!("match “{filter}”"));
        }
        (format!("{base}/m/{MODEL}/{}?{query}", l.name), expect)
    };
    let all: Vec<usize> = (0..l.channels).collect();
    let mut checks: Vec<Check> =
        (1..=all.len().div_ceil(GRID_PAGE).min(3)).map(|p| grid(format!("page={p}"), all.clone(), p, "")).collect();
    let mut by_score = all.clone();
    by_score.sort_by(|&a, &b| l.dnd_score[b].total_cmp(&l.dnd_score[a]).then(a.cmp(&b)));
    checks.push(grid("sort=score".into(), by_score, 1, ""));
    for word in ["dog", "wooden"] {
        let matching: Vec<usize> =
            all.iter().copied().filter(|&u| l.labels[u].iter().any(|t| t.contains(word))).collect();
        if matching.is_empty() {
            continue;
        }
        for page in 1..=matching.len().div_ceil(GRID_PAGE).min(2) {
            checks.push(grid(format!("q={word}&sort=unit&page={page}"), matching.clone(), page, word));
        }
    }
    checks
}

/// `clients` loops over `checks` in turn (the n-th request of the phase gets the n-th check).
async fn load(clients: usize, until: Until, checks: &Arc<Vec<Check>>) -> Phase {
    let http = client(clients);
    let checks = checks.clone();
    closed_loop(clients, until, move |n| {
        let (http, checks) = (http.clone(), checks.clone());
        async move {
            let (url, expect) = &checks[n as usize % checks.len()];
            get_expecting(&http, url, expect).await
        }
    })
    .await
}

fn report(size: &Sizing, l: &Layer, reference: &Phase, neuron: &Phase, grid: &Phase, grids: usize) {
    println!();
    println!(
        "gallery_load: {} concurrent clients on loopback; {MODEL} layer {} ({} neurons: MILAN, CLIP-Dissect, NetDissect labels and a DnD run with {TOP_K} D_top images and {CANDIDATES} candidates x {IMAGES_PER_CONCEPT} concept images each); phases {:.1} s, reference {:.1} s",
        size.clients,
        l.name,
        l.channels,
        size.load.as_secs_f64(),
        size.reference.as_secs_f64()
    );
    for (name, p) in [("reference /healthz", reference), ("neuron pages", neuron), ("layer grids", grid)] {
        println!("  {name}: {} answers checked in {:.1} s, {} errors", p.latency.0.len(), p.elapsed, p.errors);
        if let Some(e) = &p.first_error {
            println!("    first error: {e}");
        }
    }
    println!("  neuron pages cycle over all {} units; layer grids over {grids} page/sort/filter variants", l.channels);
    println!();
    support::table_header();
    let row = support::row;
    let r = &reference.latency;
    row("neuron page requests/s", neuron.per_s(), reference.per_s(), "", None);
    row("neuron page p50 (ms)", neuron.latency.ms(50.0), r.ms(50.0), "", None);
    let p99 = neuron.latency.ms(99.0);
    row("neuron page p99 (ms)", p99, r.ms(99.0), "<= 20 ms", Some(p99 <= TARGET_NEURON_P99_MS));
    row("neuron page max (ms)", neuron.latency.ms(100.0), r.ms(100.0), "", None);
    row("layer grid requests/s", grid.per_s(), reference.per_s(), "", None);
    row("layer grid p50 (ms)", grid.latency.ms(50.0), r.ms(50.0), "", None);
    row("layer grid p99 (ms)", grid.latency.ms(99.0), r.ms(99.0), "", None);
    row("layer grid max (ms)", grid.latency.ms(100.0), r.ms(100.0), "", None);
    println!();
}

#[tokio::main]
async fn main() {
    let size = Sizing::from_env("DND_LOAD_CLIENTS");
    let layer_name = std::env::var("DND_GALLERY_LAYER").unwrap_or_else(|_| "head".into());
    let server = Server::start("gallery_load").await;
    let t = Instant::now();
    let db = open_db(&server.db_path()).await;
    let layer = dnd_run(&db, &layer_name).await;
    db.close().await;
    import_labels(&server, &layer.name, layer.channels);
    println!(
        "gallery_load: server {} up; layer {} seeded in {:.1} s ({} neurons)",
        server.base,
        layer.name,
        t.elapsed().as_secs_f64(),
        layer.channels
    );

    let neurons = Arc::new(neuron_pages(&server.base, &layer));
    let grids = Arc::new(grid_pages(&server.base, &layer));
    let reference = support::healthz_reference(&server.base, size.clients, size.reference).await;
    // Warm-up: every URL once (and its content checked) before anything is timed.
    let t = Instant::now();
    let every: Arc<Vec<Check>> = Arc::new(neurons.iter().chain(grids.iter()).cloned().collect());
    let warm = load(size.clients, Until::Requests(every.len() as u64), &every).await;
    println!(
        "gallery_load: warm-up: {} pages in {:.1} s, {} errors",
        every.len(),
        t.elapsed().as_secs_f64(),
        warm.errors
    );
    if let Some(e) = &warm.first_error {
        eprintln!("gallery_load: warm-up failed: {e}\nserver log:\n{}", server.log_tail());
        std::process::exit(1);
    }
    let neuron = load(size.clients, Until::Elapsed(size.load), &neurons).await;
    let grid = load(size.clients, Until::Elapsed(size.load), &grids).await;
    report(&size, &layer, &reference, &neuron, &grid, grids.len());
    println!("gallery_load: load average at the end: {}", support::loadavg());
    if reference.errors + neuron.errors + grid.errors > 0 {
        eprintln!("gallery_load: some answers were errors or lacked their content (first ones above)");
        std::process::exit(1);
    }
}
