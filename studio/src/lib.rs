//! DnD Studio's service layer: what the web app and the `dnd` command line both call.
//!
//! The engine (`dissect`) and the rating study (`study`) know nothing of storage or front ends;
//! the front ends (`server`: HTTP and the command line; `app`: pages) know nothing of the engine.
//! This crate sits between them and owns the product's state: configuration, the SQLite database
//! and its migrations, the registry of models, probing sets and layers, dissection runs and their
//! store, labels (import, export, the current label, concept search), label evaluation and native
//! CLIP-Dissect.
//! It prints nothing: long work reports progress through callbacks ([`engine::OnStep`],
//! [`dissection::RunObserver`]) and answers reports for a front end to show.
//!
//! Without the `service` feature only the types front ends share with the browser bundle are
//! built ([`jobs`]' requests and views, [`gallery`]'s and [`catalog`]'s views, [`methods`]); everything else needs it.

#[cfg(feature = "service")]
pub mod builtin;
pub mod catalog;
#[cfg(feature = "service")]
pub mod clip_dissect;
#[cfg(feature = "service")]
pub mod concept_search;
#[cfg(feature = "service")]
pub mod config;
#[cfg(feature = "service")]
pub mod db;
#[cfg(feature = "service")]
pub mod dissection;
#[cfg(feature = "service")]
pub mod engine;
#[cfg(feature = "service")]
pub mod evaluate;
pub mod gallery;
pub mod jobs;
#[cfg(feature = "service")]
pub mod labels;
pub mod methods;
#[cfg(feature = "service")]
pub mod registry;
#[cfg(feature = "service")]
pub mod shutdown;
#[cfg(feature = "service")]
pub mod study_images;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
