//! Evaluation and calibration text: WikiText-2 raw and the C4 validation sample, and seeded
//! window sampling as in the GPTQ paper's data loaders.
//!
//! Calibration (GPTQ, AWQ, LLM.int8), SAE training and evaluation never see the same text
//! ([`Split`]): each C4 document belongs to one split, decided once by a stable hash of its text
//! (so it does not depend on the file's row order or on any seed), and WikiText-2's test text is
//! cut into an evaluation part (the first half, where perplexity's consecutive windows start) and
//! two quarters for calibration and SAE training.
use crate::rng::Rng;
use crate::HookedTransformer;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// A text corpus qi knows how to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Corpus {
    Wikitext2,
    C4,
}

impl std::str::FromStr for Corpus {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "wikitext2" | "wikitext" | "wikitext-2" => Ok(Corpus::Wikitext2),
            "c4" => Ok(Corpus::C4),
            _ => Err(crate::QiError::invalid("corpus", s, "expected wikitext2 or c4").into()),
        }
    }
}

/// Which use a piece of text is reserved for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Quantizer calibration (GPTQ Hessians, AWQ scales, LLM.int8 outlier columns).
    Calibration,
    /// Training data for sparse autoencoders.
    SaeTrain,
    /// Everything that is measured: analyses, SAE evaluation, perplexity.
    Eval,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Calibration, Split::SaeTrain, Split::Eval];

    pub fn name(&self) -> &'static str {
        match self {
            Split::Calibration => "calibration",
            Split::SaeTrain => "train",
            Split::Eval => "eval",
        }
    }

    /// The split of a C4 document: 40 % calibration, 40 % SAE training, 20 % evaluation, by a
    /// stable hash of its text.
    pub fn of_document(text: &str) -> Split {
        match crate::hash::mix64(crate::hash::stable_hash_u64(&["qi-c4-split-v1", text])) % 10 {
            0..=3 => Split::Calibration,
            4..=7 => Split::SaeTrain,
            _ => Split::Eval,
        }
    }

    /// The part of WikiText-2's test tokens reserved for this split: evaluation the first half,
    /// calibration the third quarter, SAE training the last quarter.
    pub fn wikitext2_range(&self, n_tokens: usize) -> std::ops::Range<usize> {
        let (half, three_q) = (n_tokens / 2, n_tokens * 3 / 4);
        match self {
            Split::Eval => 0..half,
            Split::Calibration => half..three_q,
            Split::SaeTrain => three_q..n_tokens,
        }
    }
}

impl std::str::FromStr for Split {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Split::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| crate::QiError::invalid("data split", s, "expected calibration, train or eval").into())
    }
}

/// The documents of `docs` that belong to `split` ([`Split::of_document`]), in their order.
pub fn documents_in(docs: &[String], split: Split) -> Vec<String> {
    docs.iter().filter(|d| Split::of_document(d) == split).cloned().collect()
}

/// Where a dataset comes from when no path is given: a local copy in the user's data folder
/// (`QI_DATA`) or the shared data folder (`QI_SHARED`) when one is there, else the Hub (through
/// hf-hub and its cache).
enum Source {
    Local(PathBuf),
    Hub(PathBuf),
}

fn local_or_hub(rel: &str, path: Option<&Path>, hub: (&str, &str)) -> Result<Source> {
    if let Some(p) = path {
        return Ok(Source::Local(p.to_path_buf()));
    }
    if let Some(p) = crate::shared::data_file(rel) {
        return Ok(Source::Local(p));
    }
    crate::loader::hub::dataset_file(hub.0, hub.1)
        .map(Source::Hub)
        .with_context(|| format!("no local copy ({rel} in QI_DATA or the shared data folder, QI_SHARED) and no download"))
}

/// The Hub dataset and file WikiText-2's test split comes from when there is no local copy.
pub const WIKITEXT2_HUB: (&str, &str) = ("Salesforce/wikitext", "wikitext-2-raw-v1/test-00000-of-00001.parquet");
/// The Hub dataset and file of C4's English validation shard 0; its first [`C4_HUB_DOCUMENTS`]
/// documents are the sample used when there is no local copy.
pub const C4_HUB: (&str, &str) = ("allenai/c4", "en/c4-validation.00000-of-00008.json.gz");
pub const C4_HUB_DOCUMENTS: usize = 2000;

/// WikiText-2 raw test split as one string, joined the way the GPTQ paper does (`"\n\n".join`
/// over the rows of the Hugging Face dataset `wikitext-2-raw-v1`). `path`: the raw file
/// (`wiki.test.raw`) or the dataset's parquet file; `None`: the shared folder's copy, else the Hub.
pub fn wikitext2_test(path: Option<&Path>) -> Result<String> {
    let p = match local_or_hub(crate::shared::WIKITEXT2_TEST, path, WIKITEXT2_HUB)? {
        Source::Local(p) | Source::Hub(p) => p,
    };
    if p.extension().is_some_and(|e| e == "parquet") {
        return Ok(text_column(&p)?.join("\n\n"));
    }
    let raw = std::fs::read_to_string(&p).with_context(|| format!("{}: cannot read WikiText-2 text", p.display()))?;
    Ok(wikitext2_rows(&raw).join("\n\n"))
}

/// The dataset's rows from the raw file, as the Hugging Face `wikitext` loader makes them: one row
/// per line with its newline, and `""` for a line that is only whitespace (the raw file's blank
/// lines are `" \n"`). The GPTQ protocol joins these rows, so keeping `" \n"` would evaluate other
/// text (1,467 of the test split's 4,358 rows).
pub fn wikitext2_rows(raw: &str) -> Vec<&str> {
    raw.split_inclusive('\n').map(|l| if l.trim().is_empty() { "" } else { l }).collect()
}

/// Version of the text [`wikitext2_test`] gives, part of the key of every cached result computed
/// on it (bump when the text changes).
pub const WIKITEXT2_TEXT_VERSION: u32 = 2;

/// The evaluation half of WikiText-2's test tokens ([`Split::wikitext2_range`]) under the model's
/// tokenizer: perplexity and every WikiText-2 analysis read these, never the calibration or SAE
/// training quarters. (The GPTQ paper evaluates the whole split; with 20 windows of 512 tokens
/// both read the same first windows.)
pub fn wikitext2_eval_ids(model: &HookedTransformer) -> Result<Vec<u32>> {
    let mut ids = model.tokenizer()?.encode(&wikitext2_test(None)?, false)?;
    ids.truncate(Split::Eval.wikitext2_range(ids.len()).end);
    Ok(ids)
}

/// C4 documents (the `text` field): `path` a parquet file with a `text` column or a JSON-lines
/// file (optionally gzipped, as the Hub stores C4); `None`: the shared folder's 2,000-document
/// sample, else the first [`C4_HUB_DOCUMENTS`] documents of the Hub's validation shard 0.
pub fn c4_documents(path: Option<&Path>) -> Result<Vec<String>> {
    let (p, limit) = match local_or_hub(crate::shared::C4_VALIDATION, path, C4_HUB)? {
        Source::Local(p) => (p, usize::MAX),
        Source::Hub(p) => (p, C4_HUB_DOCUMENTS),
    };
    let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
    if name.ends_with(".parquet") {
        return Ok(text_column(&p)?.into_iter().take(limit).collect());
    }
    if name.ends_with(".json.gz") || name.ends_with(".jsonl.gz") || name.ends_with(".json") || name.ends_with(".jsonl") {
        return json_lines_text(&p, limit);
    }
    anyhow::bail!("{}: expected a .parquet file with a 'text' column or JSON lines (.json[l][.gz]) with a \"text\" field", p.display())
}

/// The `text` field of each line of a JSON-lines file (gzipped when its name ends in `.gz`).
fn json_lines_text(p: &Path, limit: usize) -> Result<Vec<String>> {
    use std::io::BufRead;
    let f = std::fs::File::open(p).with_context(|| format!("{}: cannot open", p.display()))?;
    let reader: Box<dyn BufRead> = if p.extension().is_some_and(|e| e == "gz") { Box::new(std::io::BufReader::new(flate2::read::GzDecoder::new(f))) } else { Box::new(std::io::BufReader::new(f)) };
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        if out.len() >= limit {
            break;
        }
        let line = line.with_context(|| format!("{}: cannot read line {}", p.display(), i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).with_context(|| format!("{}: line {} is not JSON", p.display(), i + 1))?;
        let t = v.get("text").and_then(|t| t.as_str()).with_context(|| format!("{}: line {} has no \"text\" string", p.display(), i + 1))?;
        out.push(t.to_string());
    }
    Ok(out)
}

/// The `text` column of a parquet file.
fn text_column(p: &Path) -> Result<Vec<String>> {
    use polars::prelude::{ParquetReader, SerReader};
    let file = std::fs::File::open(p).with_context(|| format!("{}: cannot open parquet file", p.display()))?;
    let df = ParquetReader::new(file)
        .with_columns(Some(vec!["text".into()]))
        .finish()
        .with_context(|| format!("{}: not a readable parquet file with a 'text' column", p.display()))?;
    let col = df.columns().iter().find(|c| c.name().as_str() == "text").with_context(|| format!("{}: no 'text' column", p.display()))?;
    let ca = col.str().with_context(|| format!("{}: 'text' column is not a string column", p.display()))?;
    Ok(ca.iter().flatten().map(str::to_string).collect())
}

/// Non-overlapping windows of `seqlen` tokens from the start, remainder dropped (the GPTQ
/// perplexity protocol), at most `max_windows` of them.
pub fn sequential_windows(tokens: &[u32], seqlen: usize, max_windows: Option<usize>) -> Result<Vec<Vec<u32>>> {
    if seqlen == 0 {
        bail!("seqlen must be positive");
    }
    if max_windows == Some(0) {
        bail!("the number of windows must be at least 1, got 0");
    }
    let n = tokens.len() / seqlen;
    if n == 0 {
        bail!("text has {} tokens, fewer than one window of {seqlen}", tokens.len());
    }
    let n = max_windows.map_or(n, |m| m.min(n));
    Ok((0..n).map(|i| tokens[i * seqlen..(i + 1) * seqlen].to_vec()).collect())
}

/// `n` random windows of `seqlen` tokens, as GPTQ draws calibration data: pick a random document
/// long enough (more than `seqlen` tokens), then a random start inside it. `tokenize` maps a
/// document to ids; documents are tokenized lazily. Deterministic for a seed.
pub fn random_windows(docs: &[String], n: usize, seqlen: usize, seed: u64, mut tokenize: impl FnMut(&str) -> Result<Vec<u32>>) -> Result<Vec<Vec<u32>>> {
    if docs.is_empty() {
        bail!("no documents to sample calibration windows from");
    }
    let mut rng = Rng::new(seed);
    let mut cache: std::collections::HashMap<usize, Vec<u32>> = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(n);
    let mut misses = 0usize;
    while out.len() < n {
        let d = rng.below(docs.len() as u64) as usize;
        if !cache.contains_key(&d) {
            cache.insert(d, tokenize(&docs[d])?);
        }
        let ids = &cache[&d];
        if ids.len() <= seqlen {
            misses += 1;
            if misses > 100 * n.max(10) + docs.len() * 4 {
                bail!("could only draw {} of {n} calibration windows: too few documents have more than {seqlen} tokens", out.len());
            }
            continue;
        }
        let start = rng.below((ids.len() - seqlen) as u64) as usize;
        out.push(ids[start..start + seqlen].to_vec());
    }
    Ok(out)
}

/// Calibration windows from a corpus with the model's tokenizer: seeded random windows from the
/// calibration split ([`Split`]).
pub fn calibration_windows(model: &HookedTransformer, corpus: Corpus, n: usize, seqlen: usize, seed: u64) -> Result<Vec<Vec<u32>>> {
    split_windows(model, corpus, Split::Calibration, n, seqlen, seed)
}

/// `n` seeded random windows of `seqlen` tokens from one split of a corpus: C4 as GPTQ draws
/// them (a random document of that split, a random start), WikiText-2 from the split's part of
/// the test text.
pub fn split_windows(model: &HookedTransformer, corpus: Corpus, split: Split, n: usize, seqlen: usize, seed: u64) -> Result<Vec<Vec<u32>>> {
    let tok = model.tokenizer()?;
    match corpus {
        Corpus::C4 => random_windows(&documents_in(&c4_documents(None)?, split), n, seqlen, seed, |t| tok.encode(t, false))
            .with_context(|| format!("C4 {} split", split.name())),
        Corpus::Wikitext2 => {
            let ids = tok.encode(&wikitext2_test(None)?, false)?;
            windows_in_range(&ids[split.wikitext2_range(ids.len())], n, seqlen, seed).with_context(|| format!("WikiText-2 {} split", split.name()))
        }
    }
}

/// `n` seeded random windows of `seqlen` tokens from one token stream.
fn windows_in_range(ids: &[u32], n: usize, seqlen: usize, seed: u64) -> Result<Vec<Vec<u32>>> {
    if ids.len() <= seqlen {
        bail!("only {} tokens, not more than one window of {seqlen}", ids.len());
    }
    let mut rng = Rng::new(seed);
    Ok((0..n)
        .map(|_| {
            let s = rng.below((ids.len() - seqlen) as u64) as usize;
            ids[s..s + seqlen].to_vec()
        })
        .collect())
}

/// Special-token ids of the model's tokenizer plus BOS/EOS from the config (excluded from random
/// token sequences).
pub fn special_ids(model: &HookedTransformer) -> Vec<u32> {
    let mut v: Vec<u32> = model.tokenizer.as_ref().map(|t| t.special_ids()).unwrap_or_default();
    v.extend(model.cfg.bos_token_id);
    v.extend(model.cfg.eos_token_id);
    v.sort_unstable();
    v.dedup();
    v
}

/// Token windows to analyse: `wikitext2` or `c4` (from the shared folder, tokenized with the
/// model's tokenizer; both from their evaluation split, see [`Split`]: WikiText-2
/// as consecutive windows from the start, C4 as seeded random windows of random documents),
/// `c4:calibration`, `c4:train`, `c4:eval` for an explicit C4 split, `random` (seeded uniform
/// tokens, special tokens excluded; works for models without a tokenizer), or a path to a UTF-8
/// text file (consecutive windows).
pub fn text_windows(model: &HookedTransformer, source: &str, n: usize, seqlen: usize, seed: u64) -> Result<Vec<Vec<u32>>> {
    if n == 0 || seqlen < 2 {
        return Err(crate::QiError::invalid("window count/length", format!("{n}×{seqlen}"), "need at least one window of at least 2 tokens").into());
    }
    if seqlen > model.cfg.n_ctx {
        return Err(crate::QiError::invalid("seqlen", seqlen, format!("the model's context is {} tokens", model.cfg.n_ctx)).into());
    }
    let consecutive = |ids: Vec<u32>, what: &str| -> Result<Vec<Vec<u32>>> {
        let w = sequential_windows(&ids, seqlen, Some(n))?;
        if w.len() < n {
            return Err(crate::QiError::invalid("text", what, format!("has {} tokens, fewer than {n} windows of {seqlen}", ids.len())).into());
        }
        Ok(w)
    };
    match source {
        "random" => {
            let mut rng = crate::rng::Rng::new(seed);
            let exclude = special_ids(model);
            Ok((0..n).map(|_| rng.tokens(seqlen, model.cfg.d_vocab, &exclude)).collect())
        }
        "wikitext2" => consecutive(wikitext2_eval_ids(model)?, "wikitext2 (evaluation half)"),
        "c4" => split_windows(model, Corpus::C4, Split::Eval, n, seqlen, seed),
        s if s.starts_with("c4:") => split_windows(model, Corpus::C4, s[3..].parse()?, n, seqlen, seed),
        path => {
            let p = std::path::Path::new(path);
            if !p.is_file() {
                return Err(crate::QiError::invalid("text source", path, "expected wikitext2, c4, random or a path to a text file").into());
            }
            let text = std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{path}: cannot read ({e})"))?;
            consecutive(model.tokenizer()?.encode(&text, false)?, path)
        }
    }
}

/// Token windows to train an SAE on: [`text_windows`], except that `c4` and `wikitext2` read their
/// SAE-training split ([`Split::SaeTrain`]; WikiText-2 as seeded random windows of
/// its last quarter), so training text is never the text the SAE is evaluated on.
pub fn training_windows(model: &HookedTransformer, source: &str, n: usize, seqlen: usize, seed: u64) -> Result<Vec<Vec<u32>>> {
    match source {
        "c4" => split_windows(model, Corpus::C4, Split::SaeTrain, n, seqlen, seed),
        "wikitext2" => split_windows(model, Corpus::Wikitext2, Split::SaeTrain, n, seqlen, seed),
        other => text_windows(model, other, n, seqlen, seed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wikitext_rows_are_the_hugging_face_datasets_rows() {
        // the raw file's first lines; the dataset has "" for the whitespace-only ones
        let raw = " \n = Robert Boulter = \n \n Robert Boulter is an English film actor . \n";
        assert_eq!(wikitext2_rows(raw), vec!["", " = Robert Boulter = \n", "", " Robert Boulter is an English film actor . \n"]);
        assert_eq!(wikitext2_rows(raw).join("\n\n"), "\n\n = Robert Boulter = \n\n\n\n\n Robert Boulter is an English film actor . \n");
        // the real split (when the shared folder is there): 4,358 rows, 1,467 of them empty, the
        // counts of the Hugging Face dataset's test split
        if let Some(p) = crate::shared::shared_path(crate::shared::WIKITEXT2_TEST) {
            let raw = std::fs::read_to_string(p).unwrap();
            let rows = wikitext2_rows(&raw);
            assert_eq!((rows.len(), rows.iter().filter(|r| r.is_empty()).count()), (4358, 1467));
            assert!(wikitext2_test(None).unwrap().starts_with("\n\n = Robert Boulter = \n\n\n\n\n Robert Boulter is"));
        }
    }

    #[test]
    fn windows_drop_the_remainder() {
        let t: Vec<u32> = (0..10).collect();
        assert_eq!(sequential_windows(&t, 4, None).unwrap(), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
        assert_eq!(sequential_windows(&t, 4, Some(1)).unwrap().len(), 1);
        assert!(sequential_windows(&t, 11, None).unwrap_err().to_string().contains("fewer than one window of 11"));
        // zero windows would give a NaN perplexity with exit 0
        assert!(sequential_windows(&t, 4, Some(0)).unwrap_err().to_string().contains("at least 1, got 0"));
    }

    #[test]
    fn random_windows_are_seeded_and_inside_documents() {
        let docs: Vec<String> = vec!["a b c d e f g h".into(), "x".into(), "1 2 3 4 5 6 7 8 9".into()];
        let tok = |s: &str| Ok(s.split(' ').map(|w| w.as_bytes()[0] as u32).collect());
        let a = random_windows(&docs, 5, 3, 0, tok).unwrap();
        let b = random_windows(&docs, 5, 3, 0, tok).unwrap();
        assert_eq!(a, b);
        assert!(a.iter().all(|w| w.len() == 3));
        assert!(random_windows(&docs, 2, 20, 0, tok).unwrap_err().to_string().contains("too few documents"));
    }

    #[test]
    fn splits_are_stable_and_roughly_40_40_20() {
        let docs: Vec<String> = (0..2000).map(|i| format!("document number {i}")).collect();
        let count = |s| documents_in(&docs, s).len();
        let (c, t, e) = (count(Split::Calibration), count(Split::SaeTrain), count(Split::Eval));
        assert_eq!(c + t + e, docs.len());
        assert!((700..900).contains(&c) && (700..900).contains(&t) && (330..470).contains(&e), "{c} {t} {e}");
        // by content, not position: reversing the documents changes no assignment
        let rev: Vec<String> = docs.iter().rev().cloned().collect();
        let mut a = documents_in(&docs, Split::Eval);
        let mut b = documents_in(&rev, Split::Eval);
        a.sort();
        b.sort();
        assert_eq!(a, b);
        for s in Split::ALL {
            assert_eq!(s.name().parse::<Split>().unwrap(), s);
        }
        assert!("test".parse::<Split>().unwrap_err().to_string().contains("calibration, train or eval"));
    }

    #[test]
    fn wikitext2_ranges_tile_the_text_without_overlap() {
        for n in [0usize, 1, 7, 100, 299_999] {
            let r: Vec<_> = [Split::Eval, Split::Calibration, Split::SaeTrain].iter().map(|s| s.wikitext2_range(n)).collect();
            assert_eq!(r[0].start, 0);
            assert_eq!(r[0].end, r[1].start);
            assert_eq!(r[1].end, r[2].start);
            assert_eq!(r[2].end, n);
        }
        assert_eq!(Split::Eval.wikitext2_range(100), 0..50);
        assert_eq!(Split::Calibration.wikitext2_range(100), 50..75);
    }

    #[test]
    fn range_windows_stay_inside_their_range() {
        let ids: Vec<u32> = (0..1000).collect();
        let r = Split::Calibration.wikitext2_range(ids.len());
        let w = windows_in_range(&ids[r.clone()], 50, 20, 3).unwrap();
        assert_eq!(w.len(), 50);
        for win in &w {
            assert!(r.contains(&(win[0] as usize)) && r.contains(&(*win.last().unwrap() as usize)), "{win:?} outside {r:?}");
        }
        assert_eq!(w, windows_in_range(&ids[r], 50, 20, 3).unwrap());
    }
}
