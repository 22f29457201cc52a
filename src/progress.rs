//! Progress on stderr while a run goes: a bar on a terminal, a plain line
//! every few seconds otherwise (and with JSON logs, as records), nothing
//! with `--quiet`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use walplayer_klio::console;
use walplayer_klio::progress::Progress as Display;
use walplayer_klio::stats::human_bytes;

use crate::logs::{self, LogFormat};

/// How often the plain-line form prints.
pub const LINE_EVERY: Duration = Duration::from_secs(5);

/// Progress display of one run.
pub struct Progress {
    view: View,
    files_total: u64,
    bytes_total: u64,
    files_done: u64,
    files_failed: u64,
    bytes_done: u64,
    started: Instant,
}

enum View {
    Bar(ProgressBar),
    Lines { last: Instant },
    Quiet,
}

impl Progress {
    /// A display sized for `files_total` files of `bytes_total` bytes.
    pub fn new(quiet: bool, files_total: u64, bytes_total: u64) -> Progress {
        let view = if quiet {
            View::Quiet
        } else if std::io::stderr().is_terminal() && logs::format() == LogFormat::Text {
            let bar =
                ProgressBar::with_draw_target(Some(bytes_total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {msg}",
                )
                .expect("constant template is valid")
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            View::Bar(bar)
        } else {
            View::Lines {
                last: Instant::now(),
            }
        };
        Progress {
            view,
            files_total,
            bytes_total,
            files_done: 0,
            files_failed: 0,
            bytes_done: 0,
            started: Instant::now(),
        }
    }

    fn files_text(&self) -> String {
        format!(
            "{}/{} files, {} failed, {} stored",
            self.files_done,
            self.files_total,
            self.files_failed,
            human_bytes(self.bytes_done)
        )
    }
}

impl Display for Progress {
    /// Counts one finished file.
    fn file_done(&mut self, bytes: u64, failed: bool) {
        self.files_done += 1;
        self.files_failed += failed as u64;
        self.bytes_done += bytes;
        if let View::Bar(bar) = &self.view {
            bar.set_position(self.bytes_done);
            bar.set_message(self.files_text());
        }
        self.tick();
    }

    /// Grows the totals (work discovered while running).
    fn add_total(&mut self, files: u64, bytes: u64) {
        self.files_total += files;
        self.bytes_total += bytes;
        if let View::Bar(bar) = &self.view {
            bar.set_length(self.bytes_total);
        }
    }

    /// Prints a line if one is due (plain form only).
    fn tick(&mut self) {
        if let View::Lines { last } = &mut self.view {
            if last.elapsed() >= LINE_EVERY {
                *last = Instant::now();
                let secs = self.started.elapsed().as_secs_f64().max(1e-9);
                console::say(&format!(
                    "progress: {} of {}, {:.1} MiB/s",
                    self.files_text(),
                    human_bytes(self.bytes_total),
                    self.bytes_done as f64 / (1u64 << 20) as f64 / secs
                ));
            }
        }
    }

    /// Removes the bar before the summary prints.
    fn finish(&mut self) {
        if let View::Bar(bar) = &self.view {
            bar.finish_and_clear();
        }
    }
}
