//! Configuration: one TOML file with documented defaults (`dnd-studio.toml`), overridable per key
//! by environment variables `DND__SECTION__KEY` (e.g. `DND__SERVER__BIND=0.0.0.0:8080`).
//! Unknown keys and invalid values stop the server at start with a message naming the key.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerSection,
    pub storage: StorageSection,
    pub admin: AdminSection,
    pub study: StudySection,
    pub engine: EngineSection,
    pub services: ServicesSection,
    pub uploads: UploadsSection,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address and port to listen on.
    pub bind: SocketAddr,
    /// Folder holding the built front end (`pkg/`), as produced by scripts/build-site.sh.
    pub site_root: PathBuf,
    /// Largest accepted request body (uploads of models and zipped probing sets), in MiB.
    pub max_body_mib: u64,
    /// Requests taking longer than this are answered 408.
    pub request_timeout_secs: u64,
    /// The address people reach this server at (e.g. `https://dnd.example.org` behind a proxy);
    /// empty when it is the bind address. With `https://`, cookies are marked `Secure`.
    pub public_url: String,
}

impl ServerSection {
    /// Whether cookies must carry `Secure` (browsers then send them over HTTPS only).
    pub fn secure_cookies(&self) -> bool {
        self.public_url.starts_with("https://")
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// Where the database, activation caches, thumbnails and uploads live.
    pub data_dir: PathBuf,
    /// SQLite database file; relative paths are inside `data_dir`.
    pub database: PathBuf,
    /// Embedded-default assets prepared by scripts/setup.sh (weights, built-in probing images).
    pub assets_dir: PathBuf,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Secret for the admin area (rating studies). Empty: one is generated at first start, shown
    /// once, and only its digest kept in `<data_dir>/admin-secret.sha256`.
    pub secret: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StudySection {
    /// While a rating study is open, hide the labels of the layers it rates from visitors
    /// without an admin session (gallery, concept search, exports), so raters cannot look up
    /// which method wrote a description. Module `gallery::blinding`.
    pub blind_gallery: bool,
    /// Acknowledge a rater's answer only once its commit is synced to disk, so it survives a
    /// power loss (SQLite `synchronous=FULL` for the study's writer). `false`: it survives a
    /// killed server but a power loss may drop the last second of acknowledged answers.
    pub durable_ratings: bool,
}

impl Default for StudySection {
    fn default() -> Self {
        Self { blind_gallery: true, durable_ratings: true }
    }
}

impl StudySection {
    /// What the study's answers survive once acknowledged.
    pub fn ratings_durability(&self) -> crate::db::Durability {
        if self.durable_ratings {
            crate::db::Durability::PowerLoss
        } else {
            crate::db::Durability::ProcessCrash
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    /// CPU threads for libtorch; 0 = all cores.
    pub threads: usize,
    /// `auto` (CUDA when available, else CPU), `cpu` or `cuda`.
    pub device: String,
}

/// External model services (see the README). Each is off until its `url` is set.
#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ServicesSection {
    /// OpenAI-compatible chat endpoint used to simplify and summarize captions.
    pub llm: ChatService,
    /// OpenAI-compatible chat endpoint with vision, used to caption images.
    pub captioner: ChatService,
    /// Image generation for concept images.
    pub images: ImageService,
    /// CLIP image encoder as a TorchScript file (enables Image-Products with CLIP and CLIP-Dissect).
    pub clip_torchscript: Option<PathBuf>,
    /// CLIP's HF `tokenizer.json`, for the TorchScript's `encode_text` (with `clip_torchscript`,
    /// enables `dnd clip-dissect`).
    pub clip_tokenizer: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ChatService {
    pub url: String,
    pub model: String,
    pub api_key: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ImageService {
    /// `openai` (`/v1/images/generations`) or `automatic1111` (`/sdapi/v1/txt2img`).
    pub api: String,
    pub url: String,
    pub model: String,
    pub api_key: String,
}

/// Models and zipped probing sets uploaded from `/jobs` (see the README). Uploads are streamed
/// to disk, so these bound disk use, not memory.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct UploadsSection {
    /// Largest zipped probing set accepted, in bytes.
    pub max_zip_bytes: u64,
    /// Largest TorchScript model file accepted, in bytes.
    pub max_model_bytes: u64,
    /// Most entries a probing-set zip may hold.
    pub max_files: u64,
    /// Most bytes a probing-set zip may unpack to, all entries together.
    pub max_unpacked_bytes: u64,
    /// Largest uncompressed/compressed size ratio of one zip entry (beyond its first MiB):
    /// images hardly compress, so a higher ratio is a zip bomb.
    pub max_ratio: u64,
}

impl Default for UploadsSection {
    fn default() -> Self {
        Self {
            max_zip_bytes: 2 << 30,
            max_model_bytes: 4 << 30,
            max_files: 200_000,
            max_unpacked_bytes: 20 << 30,
            max_ratio: 100,
        }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            bind: ([127, 0, 0, 1], 3000).into(),
            site_root: PathBuf::from("target/site"),
            max_body_mib: 512,
            request_timeout_secs: 60,
            public_url: String::new(),
        }
    }
}

impl Default for StorageSection {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            database: PathBuf::from("dnd-studio.db"),
            assets_dir: default_assets_dir(),
        }
    }
}

impl Default for EngineSection {
    fn default() -> Self {
        Self { threads: 0, device: "auto".into() }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            server: ServerSection::default(),
            storage: StorageSection::default(),
            admin: AdminSection::default(),
            study: StudySection::default(),
            engine: EngineSection::default(),
            services: ServicesSection::default(),
            uploads: UploadsSection::default(),
        }
    }
}

/// Same rule as the set-up script: $DND_ASSETS, else $DND_STUDIO_CACHE/assets, else
/// ~/.cache/dnd-studio/assets.
fn default_assets_dir() -> PathBuf {
    dissect::assets::assets_dir()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: &'static str, message: String },
}

const ENV_PREFIX: &str = "DND__";

impl Config {
    /// Reads `path` (if given; a missing explicit file is an error), then applies `DND__*`
    /// environment overrides from `env`, then validates.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let (mut table, origin) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read { path: p.into(), source })?;
                let table: toml::Table = text
                    .parse()
                    .map_err(|e: toml::de::Error| ConfigError::Parse { path: p.into(), message: e.to_string() })?;
                (table, p.to_path_buf())
            }
            None => (toml::Table::new(), PathBuf::from("<defaults>")),
        };
        for (var, value) in env {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else { continue };
            let keys: Vec<String> = rest.split("__").map(|k| k.to_lowercase()).collect();
            if keys.iter().any(|k| k.is_empty()) {
                return Err(ConfigError::Env { var, message: "expected DND__SECTION__KEY".into() });
            }
            set_path(&mut table, &keys, parse_env_value(&value))
                .map_err(|message| ConfigError::Env { var: var.clone(), message })?;
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse { path: origin, message: e.message().to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// This configuration with its secrets (the admin secret, services' API keys) replaced by
    /// a placeholder, for printing (`dnd config`).
    pub fn redacted(&self) -> Config {
        let hide = |secret: &mut String| {
            if !secret.is_empty() {
                *secret = "<set; not shown>".into();
            }
        };
        let mut shown = self.clone();
        hide(&mut shown.admin.secret);
        hide(&mut shown.services.llm.api_key);
        hide(&mut shown.services.captioner.api_key);
        hide(&mut shown.services.images.api_key);
        shown
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, message: &str| Err(ConfigError::Invalid { key, message: message.into() });
        if self.server.max_body_mib == 0 {
            return invalid("server.max_body_mib", "must be at least 1");
        }
        if self.server.request_timeout_secs == 0 {
            return invalid("server.request_timeout_secs", "must be at least 1");
        }
        if self.storage.database.as_os_str().is_empty() {
            return invalid("storage.database", "must name a file");
        }
        if !self.admin.secret.is_empty() && self.admin.secret.len() < 16 {
            return invalid("admin.secret", "must be at least 16 characters (or empty to generate one)");
        }
        if !matches!(self.engine.device.as_str(), "auto" | "cpu" | "cuda") {
            return invalid("engine.device", "must be one of auto, cpu, cuda");
        }
        for (key, url) in [
            ("server.public_url", &self.server.public_url),
            ("services.llm.url", &self.services.llm.url),
            ("services.captioner.url", &self.services.captioner.url),
            ("services.images.url", &self.services.images.url),
        ] {
            if !url.is_empty() && !(url.starts_with("http://") || url.starts_with("https://")) {
                return invalid(key, "must start with http:// or https://");
            }
        }
        if !self.services.images.url.is_empty()
            && !matches!(self.services.images.api.as_str(), "openai" | "automatic1111")
        {
            return invalid("services.images.api", "must be openai or automatic1111 when services.images.url is set");
        }
        if self.services.clip_tokenizer.is_some() && self.services.clip_torchscript.is_none() {
            return invalid("services.clip_tokenizer", "is only used with services.clip_torchscript, which is not set");
        }
        for (key, value) in [
            ("uploads.max_zip_bytes", self.uploads.max_zip_bytes),
            ("uploads.max_model_bytes", self.uploads.max_model_bytes),
            ("uploads.max_files", self.uploads.max_files),
            ("uploads.max_unpacked_bytes", self.uploads.max_unpacked_bytes),
            ("uploads.max_ratio", self.uploads.max_ratio),
        ] {
            if value == 0 {
                return invalid(key, "must be at least 1");
            }
        }
        Ok(())
    }

    pub fn database_path(&self) -> PathBuf {
        self.storage.data_dir.join(&self.storage.database)
    }
}

/// Environment values are TOML scalars when they parse as one (numbers, booleans), else strings.
fn parse_env_value(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => match t.remove("v") {
            Some(v @ (toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_))) => v,
            _ => toml::Value::String(raw.to_string()),
        },
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

fn set_path(table: &mut toml::Table, keys: &[String], value: toml::Value) -> Result<(), String> {
    let (last, parents) = keys.split_last().expect("at least one key");
    let mut current = table;
    for k in parents {
        let entry = current.entry(k.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = entry.as_table_mut().ok_or_else(|| format!("`{k}` is not a section"))?;
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path), env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_apply_to_an_empty_file() {
        let c = load_str("", &[]).unwrap();
        assert_eq!(c.server.bind, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(c.database_path(), PathBuf::from("data/dnd-studio.db"));
    }

    #[test]
    fn the_shipped_config_file_parses_and_equals_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dnd-studio.toml");
        let mut c = Config::load(Some(&path), []).unwrap();
        c.storage.assets_dir = default_assets_dir();
        assert_eq!(c, Config::default());
    }

    #[test]
    fn env_overrides_win_and_are_typed() {
        let c = load_str(
            "[server]\nbind = \"127.0.0.1:1\"\n",
            &[("DND__SERVER__BIND", "127.0.0.1:4000"), ("DND__SERVER__MAX_BODY_MIB", "7"), ("OTHER", "x")],
        )
        .unwrap();
        assert_eq!(c.server.bind.port(), 4000);
        assert_eq!(c.server.max_body_mib, 7);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = load_str("[server]\nbnid = \"x\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("bnid"), "{e}");
    }

    #[test]
    fn invalid_value_is_named() {
        let e = load_str("[server]\nbind = \"not an address\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("bind") || e.contains("address"), "{e}");
        let e = load_str("[engine]\ndevice = \"tpu\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("engine.device"), "{e}");
        let e = load_str("", &[("DND__SERVICES__LLM__URL", "ftp://x")]).unwrap_err().to_string();
        assert!(e.contains("services.llm.url"), "{e}");
        let e = load_str("[admin]\nsecret = \"short\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("admin.secret"), "{e}");
    }

    #[test]
    fn clip_tokenizer_needs_clip_torchscript() {
        let e = load_str("[services]\nclip_tokenizer = \"/t.json\"\n", &[]).unwrap_err().to_string();
        assert!(e.contains("services.clip_tokenizer"), "{e}");
        let c = load_str("[services]\nclip_tokenizer = \"/t.json\"\nclip_torchscript = \"/c.pt\"\n", &[]).unwrap();
        assert_eq!(c.services.clip_tokenizer.as_deref(), Some(Path::new("/t.json")));
    }

    #[test]
    fn explicit_missing_file_is_an_error_naming_it() {
        let e = Config::load(Some(Path::new("/nonexistent/dnd.toml")), []).unwrap_err().to_string();
        assert!(e.contains("/nonexistent/dnd.toml"), "{e}");
    }

    #[test]
    fn printing_hides_the_secrets() {
        let env = [
            ("DND__ADMIN__SECRET".to_string(), "a-long-admin-secret-123".to_string()),
            ("DND__SERVICES__LLM__API_KEY".to_string(), "sk-llm-key".to_string()),
        ];
        let config = Config::load(None, env).unwrap();
        let printed = format!("{:#?}", config.redacted());
        assert!(!printed.contains("a-long-admin-secret-123") && !printed.contains("sk-llm-key"), "{printed}");
        assert_eq!(printed.matches("<set; not shown>").count(), 2, "{printed}");
        assert_eq!(config.redacted().services.captioner.api_key, "", "an unset key stays visibly unset");
        assert_eq!(config.admin.secret, "a-long-admin-secret-123", "the configuration itself is unchanged");
    }
}
