//! Describe-and-Dissect engine. See `../shared/SPEC.md` for the method and its defaults.

pub mod assets;
pub mod crops;
pub mod dtop;
pub mod error;
pub mod imagenet;
pub mod model;
pub mod preprocess;
pub mod probe;
pub mod record;

pub use error::{Error, Result};
