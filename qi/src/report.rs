//! Tables in the docs printed from committed results, so their numbers cannot drift from the data.
//! A Markdown file marks each such table as a block:
//!
//! ```text
//! <!-- qi:report study studies/sizes.toml -->
//! …what `qi report` renders for `study studies/sizes.toml`…
//! <!-- /qi:report -->
//! ```
//!
//! `qi report FILE` rewrites every block from the current results; `qi report FILE --check` fails,
//! naming each block, when one differs (a test runs it on the README). Paths in a block's command
//! are relative to the Markdown file's folder.
//!
//! Kinds: `study SPEC [RESULTS]` — a study's summary table ([`crate::size_axis::markdown`]) and its
//! finding ([`crate::size_axis::finding`]) from the study's finished cells
//! ([`crate::study::collect_study`]; default results folder [`crate::size_axis::default_results`]).
use anyhow::{anyhow, bail, Context, Result};
use std::path::Path;

const OPEN: &str = "<!-- qi:report ";
const CLOSE: &str = "<!-- /qi:report -->";

/// What the block command `cmd` renders, paths relative to `base`.
pub fn render(cmd: &str, base: &Path) -> Result<String> {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    match words.as_slice() {
        ["study", spec, rest @ ..] if rest.len() <= 1 => {
            // every model of the file, also those not on this machine: the table is of the
            // committed cells, whatever this machine holds
            let path = base.join(spec);
            let study = crate::study::Study::load(&path)?;
            let dir = rest.first().map(|r| base.join(r)).unwrap_or_else(|| crate::size_axis::default_results(&path, &study, false));
            let sizes = crate::size_axis::model_sizes(&study, &dir)?;
            let table = crate::study::summary(&crate::study::collect_study(&study, &dir)?, &sizes)?;
            Ok(format!("{}\n{}", crate::size_axis::markdown(&table)?, crate::size_axis::finding(&table)?))
        }
        _ => bail!("report block '{cmd}': unknown; expected `study SPEC [RESULTS]`"),
    }
}

/// `text` with every block re-rendered, and the commands of the blocks whose content changed.
pub fn update(text: &str, base: &Path) -> Result<(String, Vec<String>)> {
    let mut out = String::with_capacity(text.len());
    let mut stale = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let line_end = rest[start..].find('\n').map(|i| start + i + 1).ok_or_else(|| anyhow!("a `{OPEN}…-->` line without an end"))?;
        let header = rest[start..line_end].trim_end();
        let cmd = header.strip_prefix(OPEN).and_then(|h| h.strip_suffix("-->")).map(str::trim).ok_or_else(|| anyhow!("malformed report block header '{header}': expected `{OPEN}COMMAND -->` on its own line"))?;
        let close = rest[line_end..].find(CLOSE).map(|i| line_end + i).ok_or_else(|| anyhow!("report block '{cmd}' has no closing `{CLOSE}`"))?;
        let old = &rest[line_end..close];
        let new = render(cmd, base).with_context(|| format!("report block '{cmd}'"))?;
        let new = format!("{}\n", new.trim_end());
        if old != new {
            stale.push(cmd.to_string());
        }
        out.push_str(&rest[..line_end]);
        out.push_str(&new);
        rest = &rest[close..];
        out.push_str(&rest[..CLOSE.len()]);
        rest = &rest[CLOSE.len()..];
    }
    out.push_str(rest);
    Ok((out, stale))
}

/// Re-renders the blocks of the Markdown file `path` (atomically) or, with `check`, only reports
/// the stale ones. Returns the commands of the blocks that were (or would be) changed.
pub fn update_file(path: &Path, check: bool) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let (new, stale) = update(&text, base).with_context(|| path.display().to_string())?;
    if !check && new != text {
        crate::io::save_text(&new, path)?;
    }
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_blocks_are_errors_naming_them() {
        let base = Path::new(".");
        assert!(format!("{:#}", update("a\n<!-- qi:report nope x -->\nold\n<!-- /qi:report -->\n", base).unwrap_err()).contains("'nope x': unknown"));
        assert!(format!("{:#}", update("<!-- qi:report study s.toml -->\nno end\n", base).unwrap_err()).contains("no closing"));
        // text without blocks passes through unchanged
        assert_eq!(update("plain\ntext\n", base).unwrap(), ("plain\ntext\n".to_string(), vec![]));
    }
}
