//! DnD Studio's service layer: what the web app and the `dnd` command line both call.
//!
//! The engine (`dissect`) and the rating study (`study`) know nothing of storage or front ends;
//! the front ends (`server`: HTTP and the command line; `app`: pages) know nothing of the engine.
//! This crate sits between them and owns the product's state: configuration, the SQLite database
//! and its migrations, the registry of models, probing sets and layers, dissection runs and their
//! store, labels (import, export, the current label), label evaluation and native CLIP-Dissect.
//! It prints nothing: long work reports progress through callbacks ([`engine::OnStep`],
//! [`dissection::RunObserver`]) and answers reports for a front end to show.

pub mod builtin;
pub mod clip_dissect;
pub mod config;
pub mod db;
pub mod dissection;
pub mod engine;
pub mod evaluate;
pub mod labels;
pub mod registry;
pub mod study_images;
#[cfg(any(test, feature = "test-support"))]
pub mod test_support;
