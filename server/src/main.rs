//! `dnd`: DnD Studio's server and command line.

mod admin_secret;
mod cli;
mod http;
mod images;
mod job_events;
mod page_cache;
mod security;
mod study_http;
mod uploads;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use studio::config::Config;
use studio::dissection::activation_dir;
use studio::methods::Method;
use studio::{builtin, clip_dissect, db, dissection, evaluate, labels, study_images};

#[derive(Parser)]
#[command(name = "dnd", version, about = "DnD Studio: describe and dissect the neurons of vision networks")]
struct Cli {
    /// Configuration file (TOML). Default: $DND_CONFIG, else ./dnd-studio.toml if present.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the web application (the default).
    Serve,
    /// Print the effective configuration (after environment overrides; secrets not shown) and exit.
    Config,
    /// Make a new admin secret, print it once and keep only its digest (the server uses it from
    /// its next start; `admin.secret` in the config, when set, wins over it).
    AdminSecret,
    /// Record every neuron's mean and max activation over a probing set (cached and resumable).
    Record {
        /// efficientnet-lite0, efficientnet-lite2, or a TorchScript file (manifest beside it).
        #[arg(long, default_value = "efficientnet-lite0")]
        model: String,
        /// `builtin` or a folder of images.
        #[arg(long, default_value = "builtin")]
        probe: String,
        /// Layer to record (repeatable); a typo lists the valid names.
        #[arg(long = "layer", required = true)]
        layers: Vec<String>,
        #[arg(long, default_value_t = 32)]
        batch: usize,
    },
    /// Show one neuron's top images, their attention crops and the re-ranked D_top (docs/method.md, Step 1).
    Crops {
        #[arg(long, default_value = "efficientnet-lite0")]
        model: String,
        #[arg(long, default_value = "builtin")]
        probe: String,
        #[arg(long)]
        layer: String,
        #[arg(long)]
        unit: usize,
        /// Spatial summary of a map: mean (default) or max.
        #[arg(long, default_value = "mean")]
        summary: String,
    },
    /// Describe-and-Dissect many neurons of a layer (Steps 1–3), store the labels; resumable.
    Dissect {
        /// efficientnet-lite0, efficientnet-lite2, or a TorchScript file (manifest beside it).
        #[arg(long, default_value = "efficientnet-lite0")]
        model: String,
        #[arg(long)]
        layer: String,
        /// Units: `0-49`, `3,7,9`, `0-9,20`, or `random:50`.
        #[arg(long)]
        neurons: String,
        /// Seed of `random:N`.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// `builtin` or a folder of images.
        #[arg(long, default_value = "builtin")]
        probe: String,
        /// mean, topk-squared, image-products or topk-squared-image-products (default).
        #[arg(long, default_value = "topk-squared-image-products")]
        scoring: String,
        /// Spatial summary of a map: mean (default) or max.
        #[arg(long, default_value = "mean")]
        summary: String,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// On a classifier layer: captions of unit c never name class c, so the embedded
        /// captioner (itself an ImageNet classifier) cannot read out the answer. Labels are stored
        /// under the source "leak-free", beside the ordinary ones.
        #[arg(long)]
        leak_free: bool,
        /// Leave out Step 2's grounded candidate (the WordNet concept most captions' ImageNet
        /// classes share; docs/method.md): the LLM's answers only, as in the paper.
        #[arg(long)]
        no_grounded_candidates: bool,
    },
    /// CLIP-Dissect labels computed natively (soft-WPMI) for a recorded layer; needs
    /// services.clip_torchscript and services.clip_tokenizer.
    ClipDissect {
        /// efficientnet-lite0, efficientnet-lite2, or a TorchScript file (manifest beside it).
        #[arg(long, default_value = "efficientnet-lite0")]
        model: String,
        #[arg(long)]
        layer: String,
        /// `builtin` or a folder of images.
        #[arg(long, default_value = "builtin")]
        probe: String,
        /// Concept list, one per line (default: CLIP-Dissect's 20k common English words).
        #[arg(long)]
        concepts: Option<PathBuf>,
        /// Units: `0-49`, `3,7,9` or `random:50` (default: every unit of the layer).
        #[arg(long)]
        units: Option<String>,
        /// Seed of `random:N`.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 32)]
        batch: usize,
    },
    /// Final-layer evaluation: mean mpnet cosine between each method's label and the class's
    /// synonym line, over all labelled units and over the units whose class the probing set covers.
    EvaluateFinal {
        #[arg(long, default_value = "efficientnet-lite0")]
        model: String,
        #[arg(long, default_value = "classifier")]
        layer: String,
        /// The probing set coverage is decided on: `builtin` or a folder.
        #[arg(long, default_value = "builtin")]
        probe: String,
        /// How many neurons to show side by side.
        #[arg(long, default_value_t = 10)]
        examples: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Label quality of every method with labels on a model, measured on images no step saw:
    /// final-layer cosine (all and covered units), simulation score per layer, neurons as
    /// classifiers (AUROC). See docs/method.md, "Measuring labels".
    Quality {
        #[arg(long, default_value = "efficientnet-lite0")]
        model: String,
        /// `builtin` or a folder: the set whose evaluation split is measured on.
        #[arg(long, default_value = "builtin")]
        probe: String,
        /// Layer to measure (repeatable; default: every layer with labels).
        #[arg(long = "layer")]
        layers: Vec<String>,
        /// A labelled image folder, one sub-folder per class, for the AUROC, or `fashion-mnist`
        /// for the labelled set that set-up installs (default: the probing set's evaluation
        /// images, one class per folder).
        #[arg(long)]
        classes: Option<PathBuf>,
        /// How many classifier neurons to show side by side.
        #[arg(long, default_value_t = 10)]
        examples: usize,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Import another method's labels (CLIP-Dissect, MILAN, NetDissect-Lite tally, FALCON, DnD CSV).
    ImportLabels {
        /// Model slug, as in /m/{slug}.
        #[arg(long)]
        model: String,
        /// The CSV file.
        file: PathBuf,
        /// dnd, clip-dissect, milan, netdissect, falcon or other (default: from the file's format).
        #[arg(long)]
        method: Option<String>,
        /// Model layer, for formats without a layer column (NetDissect tally, DnD CSVs).
        #[arg(long)]
        layer: Option<String>,
        /// Map a layer name of the file onto the model's: --map file_name=model_name (repeatable).
        #[arg(long = "map")]
        map: Vec<String>,
        /// Distinguishes several sources of one method (e.g. two MILAN checkpoints).
        #[arg(long, default_value = "")]
        source: String,
        /// Leave out the rows of layers the model does not have (reported per layer with row
        /// counts) instead of refusing the file, e.g. `conv1` of the public ResNet-50 files.
        #[arg(long)]
        skip_unknown_layers: bool,
    },
}

fn config_path(cli: &Cli) -> Option<PathBuf> {
    cli.config.clone().or_else(|| std::env::var_os("DND_CONFIG").map(PathBuf::from)).or_else(|| {
        let default = PathBuf::from("dnd-studio.toml");
        default.exists().then_some(default)
    })
}

fn init_logging() {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter =
        EnvFilter::try_from_env("DND_LOG").unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=info"));
    // Logs go to stderr, so a command's own output (`dnd quality --json`) can be piped.
    // DND_LOG_FORMAT=json gives one JSON object per line (request logs included).
    if std::env::var("DND_LOG_FORMAT").as_deref() == Ok("json") {
        fmt().with_env_filter(filter).with_writer(std::io::stderr).json().init();
    } else {
        let color = std::io::IsTerminal::is_terminal(&std::io::stderr());
        fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(color).init();
    }
}

fn main() {
    // libtorch's OpenMP workers spin after each parallel region by default; the concept pipeline
    // alternates libtorch with the in-process LLM's own thread pool, and spinning workers slowed
    // the LLM ~5× on 2 cores. Must be set before libtorch starts its threads.
    if std::env::var_os("OMP_WAIT_POLICY").is_none() {
        std::env::set_var("OMP_WAIT_POLICY", "PASSIVE");
    }
    let cli = Cli::parse();
    init_logging();
    if let Err(e) = run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let path = config_path(&cli);
    let config = Config::load(path.as_deref(), std::env::vars())?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Config => {
            println!("{:#?}", config.redacted());
            Ok(())
        }
        Command::Serve => runtime()?.block_on(serve(config)),
        Command::AdminSecret => {
            let secret = admin_secret::renew(&config.storage.data_dir)?;
            if !config.admin.secret.is_empty() {
                eprintln!("note: admin.secret is set in the configuration; the server uses that one, not this");
            }
            eprintln!(
                "New admin secret (only its digest is kept, in {}; restart the server to use it):",
                config.storage.data_dir.join(admin_secret::HASH_FILE).display()
            );
            println!("{secret}");
            Ok(())
        }
        Command::Record { model, probe, layers, batch } => cli::record(&config, &model, &probe, &layers, batch),
        Command::Dissect {
            model,
            layer,
            neurons,
            seed,
            probe,
            scoring,
            summary,
            batch,
            leak_free,
            no_grounded_candidates,
        } => {
            let scoring = dissection::ScoringFunction::parse(&scoring).with_context(|| {
                let known: Vec<&str> = dissection::ScoringFunction::ALL.iter().map(|f| f.as_str()).collect();
                format!("--scoring `{scoring}`: expected one of {}", known.join(", "))
            })?;
            let summary = parse_summary(&summary)?;
            let args = dissection::DissectArgs {
                model,
                layer,
                neurons,
                seed,
                probe,
                scoring,
                summary,
                batch,
                leak_free,
                grounded_candidates: !no_grounded_candidates,
            };
            cli::dissect(&config, &args)
        }
        Command::ClipDissect { model, layer, probe, concepts, units, seed, batch } => cli::clip_dissect(
            &config,
            &clip_dissect::ClipDissectArgs { model, layer, probe, concepts, units, seed, batch },
        ),
        Command::EvaluateFinal { model, layer, probe, examples, json } => {
            cli::evaluate_final(&config, &model, &probe, &layer, examples, json)
        }
        Command::Quality { model, probe, layers, classes, examples, json } => {
            cli::quality(&config, &evaluate::QualityArgs { model, probe, layers, classes, examples }, json)
        }
        Command::Crops { model, probe, layer, unit, summary } => {
            cli::crops(&config, &model, &probe, &layer, unit, parse_summary(&summary)?)
        }
        Command::ImportLabels { model, file, method, layer, map, source, skip_unknown_layers } => {
            let method = method
                .map(|m| {
                    Method::parse(&m).with_context(|| {
                        let known: Vec<&str> = Method::all().iter().map(|m| m.as_str()).collect();
                        format!("unknown method `{m}` ({})", known.join(", "))
                    })
                })
                .transpose()?;
            let mapping = map
                .iter()
                .map(|m| {
                    m.split_once('=')
                        .map(|(a, b)| (a.to_string(), b.to_string()))
                        .with_context(|| format!("--map `{m}`: expected FILE_LAYER=MODEL_LAYER"))
                })
                .collect::<anyhow::Result<_>>()?;
            let bytes = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            runtime()?.block_on(async {
                let db = db::open(&config.database_path()).await?;
                let options = labels::ImportOptions {
                    method,
                    source_name: &source,
                    layer: layer.as_deref(),
                    layer_mapping: mapping,
                    skip_unknown_layers,
                };
                let s = labels::import_file(&db, &model, &name, &bytes, &options).await?;
                println!(
                    "imported {} labels for {} neurons of {model} from {name} ({} format, method {}, import #{})",
                    s.labels, s.neurons, s.format, s.method, s.import_id
                );
                if !s.skipped_layers.is_empty() {
                    println!(
                        "left out rows of layers {model} does not have: {}",
                        labels::import::describe_skipped(&s.skipped_layers)
                    );
                }
                anyhow::Ok(())
            })
        }
    }
}

fn parse_summary(s: &str) -> anyhow::Result<dissection::Summary> {
    dissection::Summary::parse(s).with_context(|| format!("--summary `{s}`: expected mean or max"))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

/// What pages and server functions get: the database, the admin secret, the study image source,
/// and the study's answers committed through `ratings_writer`.
fn server_context(
    config: &Config,
    db: db::Pool,
    ratings_writer: db::Pool,
) -> anyhow::Result<app::state::ServerContext> {
    let admin_secret_digest = admin_secret::load_or_create(&config.admin.secret, &config.storage.data_dir)?;
    Ok(app::state::ServerContext {
        db: db.clone(),
        admin_secret_digest: admin_secret_digest.into(),
        top_images: std::sync::Arc::new(study_images::RecordedTopImages {
            db: db.clone(),
            activation_root: activation_dir(config),
        }),
        submissions: study::submit::SubmissionQueue::start_with_writer(db, ratings_writer),
        login_limiter: Default::default(),
        secure_cookies: config.server.secure_cookies(),
        jobs: Default::default(),
        concepts: Default::default(),
        blind_gallery: config.study.blind_gallery,
    })
}

/// How long a stopping server waits for the running job to reach a checkpoint.
const JOB_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(30);

async fn serve(config: Config) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.storage.data_dir)
        .with_context(|| format!("creating data folder {}", config.storage.data_dir.display()))?;
    let db = db::open(&config.database_path()).await?;
    builtin::register(&db, &config.storage.assets_dir).await;
    let ratings_writer = db::open_writer(&config.database_path(), config.study.ratings_durability()).await?;
    let ctx = server_context(&config, db.clone(), ratings_writer)?;
    app::api::set_clip_configured(clip_dissect::clip_configured(&config.services));
    let shutdown = studio::shutdown::Shutdown::on_signals();
    let runner = studio::jobs::runner::spawn(config.clone(), db.clone(), ctx.jobs.clone(), shutdown.clone());
    {
        // Live views end their streams at shutdown, or the HTTP server would wait for them.
        let (signals, shutdown) = (ctx.jobs.clone(), shutdown.clone());
        tokio::spawn(async move {
            shutdown.requested().await;
            signals.close();
        });
    }

    let listener = tokio::net::TcpListener::bind(config.server.bind)
        .await
        .with_context(|| format!("cannot listen on {} (config key server.bind)", config.server.bind))?;
    tracing::info!(address = %config.server.bind, "DnD Studio listening on http://{}", config.server.bind);
    // The peer address feeds the admin login's rate limit (server/src/security.rs).
    let app = http::router(&config, ctx).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().requested())
        .await
        .context("HTTP server failed")?;
    // The job in progress stops between neurons and goes back to the queue; a neuron that takes
    // longer than this is redone at the next start.
    if tokio::time::timeout(JOB_STOP_GRACE, runner).await.is_err() {
        tracing::warn!("the running job did not stop in time; it resumes at the next start");
    }
    db.close().await;
    tracing::info!("stopped cleanly");
    Ok(())
}
