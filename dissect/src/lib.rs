//! Describe-and-Dissect engine. See `../shared/SPEC.md` for the method and its defaults.

pub mod assets;
pub mod clip_dissect;
pub mod concepts;
pub mod crops;
pub mod dtop;
pub mod error;
pub mod imagenet;
pub mod llm;
pub mod model;
pub mod preprocess;
pub mod probe;
pub mod record;
pub mod services;
pub mod text_encoder;

pub use error::{Error, Result};
