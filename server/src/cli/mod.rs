//! The `dnd` command line's front end to the service layer: it parses nothing (main.rs does), calls
//! `studio`, and shows progress bars and reports on the terminal.

mod bars;
mod clip_dissect;
mod dissect;
mod quality;
mod record;

pub use self::clip_dissect::clip_dissect;
pub use self::dissect::dissect;
pub use quality::{evaluate_final, quality};
pub use record::{crops, record};
