//! Describe-and-Dissect engine. The method, its defaults and where this implementation departs
//! from the paper are described in `docs/method.md`.

pub mod assets;
pub mod clip_dissect;
pub mod concepts;
pub mod crops;
pub mod dtop;
pub mod error;
pub mod fuzz;
pub mod imagenet;
pub mod llm;
pub mod model;
pub mod partition;
pub mod preprocess;
pub mod probe;
pub mod record;
pub mod services;
pub mod text_encoder;

pub use error::{Error, Result};
