//! Progress of the service layer's long steps on stderr: a bar on a terminal; elsewhere (a log
//! file, CI, nohup), where a bar would be hidden and the command silent for minutes, a plain line
//! when a step starts, at most every [`PLAIN_EVERY`] while it runs, and when it ends, each with
//! the rate and an ETA.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};
use studio::dissection::human_duration;

/// How often a plain progress line is printed while a step runs.
const PLAIN_EVERY: Duration = Duration::from_secs(10);

/// One step's progress (`name`, counting `unit`s: images, neurons).
pub struct StepProgress {
    name: String,
    unit: &'static str,
    message: String,
    view: View,
}

enum View {
    Bar(ProgressBar),
    Plain { started: Instant, last_line: Option<Instant>, done: usize, total: usize },
}

impl StepProgress {
    pub fn new(name: &str, unit: &'static str) -> StepProgress {
        let view = if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(0);
            let template =
                format!("{{prefix:>8}} [{{bar:40}}] {{pos}}/{{len}} {unit}{{msg}}, {{per_sec}}, eta {{eta}}");
            bar.set_style(ProgressStyle::with_template(&template).expect("valid template").progress_chars("=> "));
            bar.set_prefix(name.to_string());
            View::Bar(bar)
        } else {
            View::Plain { started: Instant::now(), last_line: None, done: 0, total: 0 }
        };
        StepProgress { name: name.to_string(), unit, message: String::new(), view }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `done` of `total` finished.
    pub fn set(&mut self, done: usize, total: usize) {
        match &mut self.view {
            View::Bar(bar) => {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            }
            View::Plain { done: d, total: t, last_line, .. } => {
                let changed = (*d, *t) != (done, total);
                (*d, *t) = (done, total);
                let due = last_line.is_none_or(|at| at.elapsed() >= PLAIN_EVERY);
                if last_line.is_none() || (changed && (due || done >= total)) {
                    self.print_line();
                }
            }
        }
    }

    /// A note shown beside the count (e.g. "2 failed").
    pub fn set_message(&mut self, message: String) {
        self.message = if message.is_empty() { message } else { format!(" ({message})") };
        if let View::Bar(bar) = &self.view {
            bar.set_message(self.message.clone());
        }
    }

    /// What the step is busy with right now (a chunk's LLM round, …): beside a bar's count, or a
    /// plain line of its own, since such a phase can last minutes without the count moving.
    pub fn set_activity(&mut self, activity: &str) {
        match &self.view {
            View::Bar(bar) => bar.set_message(format!("{} · {activity}", self.message)),
            View::Plain { .. } => eprintln!("{}: {activity}", self.name),
        }
    }

    /// Prints a line above the bar (or as is, without one).
    pub fn println(&self, line: &str) {
        match &self.view {
            View::Bar(bar) => bar.suspend(|| eprintln!("{line}")),
            View::Plain { .. } => eprintln!("{line}"),
        }
    }

    pub fn finish(self) {
        if let View::Bar(bar) = self.view {
            bar.finish_and_clear();
        }
    }

    fn print_line(&mut self) {
        let View::Plain { started, last_line, done, total } = &mut self.view else { return };
        *last_line = Some(Instant::now());
        let secs = started.elapsed().as_secs_f64();
        let pct = if *total > 0 { 100.0 * *done as f64 / *total as f64 } else { 0.0 };
        let (unit, name, message) = (self.unit, &self.name, &self.message);
        let pace = match *done {
            0 => String::new(),
            d if d as f64 >= secs => format!(", {:.1} {unit}/s", d as f64 / secs),
            d => format!(", {:.1} s each", secs / d as f64),
        };
        let eta = if *done == 0 || *done >= *total {
            String::new()
        } else {
            format!(", eta {}", human_duration(Duration::from_secs_f64(secs / *done as f64 * (*total - *done) as f64)))
        };
        eprintln!("{name}: {done}/{total} {unit} ({pct:.0} %){message}{pace}{eta}");
    }
}

/// One [`StepProgress`] per step of a report: a new step ends the last.
#[derive(Default)]
pub struct StepBars {
    current: Option<StepProgress>,
}

impl StepBars {
    /// The progress of `step` (counting `unit`s), begun when the step is new.
    pub fn enter(&mut self, step: &str, unit: &'static str) -> &mut StepProgress {
        if self.current.as_ref().is_none_or(|p| p.name() != step) {
            self.finish();
        }
        self.current.get_or_insert_with(|| StepProgress::new(step, unit))
    }

    /// Prints a line above the current bar (or as is, without one).
    pub fn println(&self, line: &str) {
        match &self.current {
            Some(p) => p.println(line),
            None => eprintln!("{line}"),
        }
    }

    pub fn finish(&mut self) {
        if let Some(p) = self.current.take() {
            p.finish();
        }
    }
}

/// Runs `work` showing each step it reports; bars are gone before its result is shown.
pub fn with_step_bars<T>(work: impl FnOnce(studio::engine::OnStep<'_>) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let mut bars = StepBars::default();
    let result = work(&mut |step, done, total| bars.enter(step, "images").set(done, total));
    bars.finish();
    result
}
