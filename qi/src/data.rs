//! Evaluation and calibration text: WikiText-2 raw and the C4 validation sample, and seeded
//! window sampling as in the GPTQ paper's data loaders.
use crate::rng::Rng;
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

fn shared_or(rel: &str, path: Option<&Path>) -> Result<PathBuf> {
    match path {
        Some(p) => Ok(p.to_path_buf()),
        None => crate::shared::shared_dir()
            .map(|d| d.join(rel))
            .with_context(|| format!("no path given and the shared data folder was not found (set QI_SHARED); expected {rel} in it")),
    }
}

/// WikiText-2 raw test split as one string, joined the way the GPTQ paper does (`"\n\n".join`
/// over the dataset's rows, each row being one line of the raw file with its newline).
pub fn wikitext2_test(path: Option<&Path>) -> Result<String> {
    let p = shared_or(crate::shared::WIKITEXT2_TEST, path)?;
    let raw = std::fs::read_to_string(&p).with_context(|| format!("{}: cannot read WikiText-2 text", p.display()))?;
    let rows: Vec<String> = raw.split_inclusive('\n').map(str::to_string).collect();
    Ok(rows.join("\n\n"))
}

/// The `text` column of the C4 validation parquet file.
pub fn c4_documents(path: Option<&Path>) -> Result<Vec<String>> {
    use polars::prelude::{ParquetReader, SerReader};
    let p = shared_or(crate::shared::C4_VALIDATION, path)?;
    let file = std::fs::File::open(&p).with_context(|| format!("{}: cannot open C4 parquet file", p.display()))?;
    let df = ParquetReader::new(file)
        .with_columns(Some(vec!["text".into()]))
        .finish()
        .with_context(|| format!("{}: not a readable parquet file with a 'text' column", p.display()))?;
    let col = df.column("text").with_context(|| format!("{}: no 'text' column", p.display()))?;
    let ca = col.str().with_context(|| format!("{}: 'text' column is not a string column", p.display()))?;
    Ok(ca.iter().flatten().map(str::to_string).collect())
}

/// Non-overlapping windows of `seqlen` tokens from the start, remainder dropped (the GPTQ
/// perplexity protocol), at most `max_windows` of them.
pub fn sequential_windows(tokens: &[u32], seqlen: usize, max_windows: Option<usize>) -> Result<Vec<Vec<u32>>> {
    if seqlen == 0 {
        bail!("seqlen must be positive");
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

/// Calibration windows from a corpus with the model's tokenizer (C4 documents, or WikiText-2
/// split into paragraphs).
pub fn calibration_windows(model: &crate::HookedTransformer, corpus: Corpus, n: usize, seqlen: usize, seed: u64) -> Result<Vec<Vec<u32>>> {
    let tok = model.tokenizer()?;
    match corpus {
        Corpus::C4 => random_windows(&c4_documents(None)?, n, seqlen, seed, |t| tok.encode(t, false)),
        Corpus::Wikitext2 => {
            let ids = tok.encode(&wikitext2_test(None)?, false)?;
            let mut rng = Rng::new(seed);
            if ids.len() <= seqlen {
                bail!("WikiText-2 has only {} tokens, fewer than seqlen {seqlen}", ids.len());
            }
            Ok((0..n).map(|_| {
                let s = rng.below((ids.len() - seqlen) as u64) as usize;
                ids[s..s + seqlen].to_vec()
            }).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_drop_the_remainder() {
        let t: Vec<u32> = (0..10).collect();
        assert_eq!(sequential_windows(&t, 4, None).unwrap(), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
        assert_eq!(sequential_windows(&t, 4, Some(1)).unwrap().len(), 1);
        assert!(sequential_windows(&t, 11, None).is_err());
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
}
