//! Progress bars on the terminal for the service layer's long steps.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar counting images (a recording's forward pass, CLIP's embeddings).
pub fn image_bar() -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg:>8} [{bar:40}] {pos}/{len} images, {per_sec}, eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar
}

/// One bar per step of a [`studio::engine::OnStep`] report: a new step clears the last bar.
#[derive(Default)]
struct StepBars {
    current: Option<(String, ProgressBar)>,
}

impl StepBars {
    fn step(&mut self, step: &str, done: usize, total: usize) {
        if self.current.as_ref().is_none_or(|(s, _)| s != step) {
            self.finish();
            let bar = image_bar();
            bar.set_message(step.to_string());
            self.current = Some((step.to_string(), bar));
        }
        if let Some((_, bar)) = &self.current {
            bar.set_length(total as u64);
            bar.set_position(done as u64);
        }
    }

    fn finish(&mut self) {
        if let Some((_, bar)) = self.current.take() {
            bar.finish_and_clear();
        }
    }
}

/// Runs `work` with one bar per step it reports; the bars are gone before its result is shown.
pub fn with_step_bars<T>(work: impl FnOnce(studio::engine::OnStep<'_>) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let mut bars = StepBars::default();
    let result = work(&mut |step, done, total| bars.step(step, done, total));
    bars.finish();
    result
}
