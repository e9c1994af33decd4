//! The rating study: human 1–5 ratings of neuron descriptions collected exactly as the paper's
//! Mechanical Turk study did (top-10 images, every description rated, pick the best, invalid
//! answers flagged), then the paper's Table 3/4 results and inter-rater agreement.
//!
//! Without the `db` feature the crate is only the types shared with the browser, the unit specs
//! and the statistics; with it, the SQLite side: set-up, raters, task assignment, submissions,
//! results and exports.

pub mod rng;
pub mod stats;
pub mod types;
pub mod units;

#[cfg(feature = "db")]
pub mod admin;
#[cfg(feature = "db")]
pub mod assign;
#[cfg(feature = "db")]
mod error;
#[cfg(feature = "db")]
pub mod export;
#[cfg(feature = "fixture")]
pub mod fixture;
#[cfg(feature = "db")]
pub mod login_limit;
#[cfg(feature = "db")]
pub mod raters;
#[cfg(feature = "db")]
pub mod results;
#[cfg(feature = "db")]
pub mod setup;
#[cfg(feature = "db")]
pub mod submit;
#[cfg(feature = "db")]
pub mod task_cache;
#[cfg(feature = "db")]
pub mod tokens;
#[cfg(feature = "db")]
mod write_gate;
#[cfg(feature = "db")]
pub use error::{Result, StudyError};
