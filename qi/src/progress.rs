//! Progress bars for long work (hidden automatically when stderr is not a terminal, or when
//! `QI_PROGRESS=0`).
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if std::env::var("QI_PROGRESS").as_deref() == Ok("0") {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    pb.set_style(ProgressStyle::with_template("{msg:>14} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta}").unwrap().progress_chars("=> "));
    pb.set_message(what.to_string());
    pb
}
