//! The progress line of `starling simulate` on stderr (indicatif): sent, acked, messages per
//! second. Only on a terminal and with `--format table`, so scripts and tests get clean output.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::connection::Acks;

/// How often the line is redrawn; the rate is measured over this window.
const REFRESH: Duration = Duration::from_millis(500);

/// Whether to show the line: stderr is a terminal and the summary is text.
pub fn visible(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

/// The line, redrawn by its own task until [`Progress::finish`] (or drop).
pub struct Progress {
    bar: ProgressBar,
    task: JoinHandle<()>,
}

impl Progress {
    /// Starts the line (hidden unless `visible`), reading `sent` and the connections' acks.
    pub fn start(visible: bool, sent: Arc<AtomicU64>, acks: Vec<Arc<Acks>>) -> Progress {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(None, target);
        if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed} {msg}") {
            bar.set_style(style);
        }
        let task = tokio::spawn(redraw(bar.clone(), sent, acks));
        Progress { bar, task }
    }

    /// Removes the line.
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Redraws every [`REFRESH`] until aborted.
async fn redraw(bar: ProgressBar, sent: Arc<AtomicU64>, acks: Vec<Arc<Acks>>) {
    let mut last = (Instant::now(), 0u64);
    let mut tick = tokio::time::interval(REFRESH);
    loop {
        tick.tick().await;
        let now = Instant::now();
        let sent = sent.load(Ordering::Relaxed);
        let acked: u64 = acks.iter().map(|a| a.acked()).sum();
        let secs = now.duration_since(last.0).as_secs_f64();
        let rate = if secs > 0.0 {
            sent.saturating_sub(last.1) as f64 / secs
        } else {
            0.0
        };
        last = (now, sent);
        bar.set_message(format!("sent {sent}, acked {acked}, {rate:.0} msg/s"));
        bar.tick();
    }
}
