//! Progress bars for long work. Every bar joins one process-wide [`MultiProgress`], so nested bars
//! (a study's overall bar, its job bar, an analysis' own bar) stack instead of overwriting each
//! other. On a terminal they redraw in place. When stderr is not a terminal (a log file, a batch
//! job, a notebook) the bars' state is printed as plain lines at most every
//! `QI_PROGRESS_EVERY` seconds (default 30), so short work prints nothing and long background
//! runs still show where they are. `QI_PROGRESS=0` hides them.
//!
//! Status lines ([`note`]) and the plain progress lines go to stderr, except inside an evcxr
//! (Jupyter) kernel: there stderr is drawn as an error, and a cache hit is not one.
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle, TermLike};
use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The process-wide stack of bars.
pub fn multi() -> &'static MultiProgress {
    static MULTI: OnceLock<MultiProgress> = OnceLock::new();
    MULTI.get_or_init(|| {
        let m = MultiProgress::new();
        if std::env::var("QI_PROGRESS").as_deref() == Ok("0") {
            m.set_draw_target(ProgressDrawTarget::hidden());
        } else if !std::io::stderr().is_terminal() {
            let every = std::env::var("QI_PROGRESS_EVERY").ok().and_then(|v| v.parse::<f64>().ok()).filter(|v| *v >= 0.0).unwrap_or(30.0);
            m.set_draw_target(ProgressDrawTarget::term_like_with_hz(Box::new(LogLines::new(Duration::from_secs_f64(every))), 1));
        }
        m
    })
}

/// Whether this process is an evcxr kernel's runtime (evcxr sets `EVCXR_IS_RUNTIME` in it).
pub fn in_notebook() -> bool {
    std::env::var_os("EVCXR_IS_RUNTIME").is_some()
}

/// Prints a status line (what was loaded, cached, left out): on stderr, or on stdout inside a
/// notebook kernel ([`in_notebook`]). Warnings and errors keep using stderr.
pub fn note(line: &str) {
    if in_notebook() {
        println!("{line}");
    } else {
        eprintln!("{line}");
    }
}

pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = multi().add(ProgressBar::new(len));
    pb.set_style(ProgressStyle::with_template("{msg:>14} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}").unwrap().progress_chars("=> "));
    pb.set_message(what.to_string());
    pb
}

/// A draw target for a stderr that is not a terminal: the lines of each redraw are collected
/// (cursor movements dropped) and printed at most once per `every`, counted from its creation.
#[derive(Debug)]
struct LogLines {
    every: Duration,
    state: Mutex<(Vec<String>, Instant)>,
}

impl LogLines {
    fn new(every: Duration) -> Self {
        LogLines { every, state: Mutex::new((Vec::new(), Instant::now())) }
    }

    /// The collected lines if `every` has passed since the last print (then the clock restarts);
    /// the buffer is emptied either way, so only the latest redraw is ever printed.
    fn take_due(&self, now: Instant) -> Option<Vec<String>> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let lines = std::mem::take(&mut st.0);
        if lines.is_empty() || now.duration_since(st.1) < self.every {
            return None;
        }
        st.1 = now;
        Some(lines)
    }

    fn push(&self, s: &str) {
        let s = s.trim_end();
        if !s.trim().is_empty() {
            self.state.lock().unwrap_or_else(|e| e.into_inner()).0.push(s.to_string());
        }
    }
}

impl TermLike for LogLines {
    fn width(&self) -> u16 {
        120
    }
    fn move_cursor_up(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        self.push(s);
        Ok(())
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        self.push(s);
        Ok(())
    }
    fn clear_line(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn flush(&self) -> std::io::Result<()> {
        if let Some(lines) = self.take_due(Instant::now()) {
            for l in lines {
                note(&l);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_print_only_the_latest_redraw_and_at_most_once_per_period() {
        let log = LogLines::new(Duration::from_secs(30));
        let t0 = log.state.lock().unwrap().1;
        log.write_line("  awq [=>  ] 1/30").unwrap();
        assert_eq!(log.take_due(t0 + Duration::from_secs(5)), None, "too early: nothing, buffer dropped");
        log.write_line("  awq [==> ] 2/30").unwrap();
        log.write_str("   ").unwrap(); // blank padding is not a line
        assert_eq!(log.take_due(t0 + Duration::from_secs(31)), Some(vec!["  awq [==> ] 2/30".to_string()]));
        log.write_line("  awq [===>] 3/30").unwrap();
        assert_eq!(log.take_due(t0 + Duration::from_secs(40)), None, "the period restarts at each print");
        log.write_line("  awq [====] 4/30").unwrap();
        assert_eq!(log.take_due(t0 + Duration::from_secs(62)).map(|v| v.len()), Some(1));
        assert_eq!(log.take_due(t0 + Duration::from_secs(200)), None, "nothing new, nothing printed");
    }
}
