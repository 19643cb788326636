//! Text ⇄ token ids for the models qi studies.
//!
//! A thin wrapper over HF `tokenizers`, buildable from the three places our tokenizers live: a
//! `tokenizer.json`, GPT-2's `vocab.json` + `merges.txt`, or the vocabulary embedded in a GGUF file.
//! Encoding never adds special tokens on its own (BOS only when asked), so the ids an analysis sees
//! are exactly the text's; [`Tokenizer::special_ids`] tells samplers which ids to leave out.
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{self, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// The Llama 3 split regex, as in Llama 3's tokenizer.json and transformers' GGUF loader.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split regex: Llama 3's with single digits.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// `tokenizer.ggml.pre` values handled exactly; anything else falls back to GPT-2 with a warning.
pub const SUPPORTED_GGUF_PRE: &[&str] = &[
    "default",
    "gpt2",
    "gpt-2",
    "smollm",
    "starcoder",
    "refact",
    "codeshell",
    "command-r",
    "exaone",
    "llama-bpe",
    "llama3",
    "llama-v3",
    "qwen2",
];

/// A tokenizer plus the facts about it that the HF object does not carry (BOS/EOS/PAD, which ids
/// are special), so models and samplers need not guess.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Option<u32>,
    pad: Option<u32>,
    /// Special ids besides BOS/EOS/PAD (which [`Tokenizer::special_ids`] always adds).
    special: BTreeSet<u32>,
    vocab_size: usize,
    warnings: Vec<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .field("special", &self.special.len())
            .field("warnings", &self.warnings)
            .finish()
    }
}

impl Tokenizer {
    /// Loads an HF `tokenizer.json`.
    ///
    /// tokenizer.json does not say which token is BOS/EOS/PAD; they are read from a
    /// `tokenizer_config.json` beside it when there is one, otherwise recognised by name
    /// (`<|endoftext|>`, `<s>`, `<|begin_of_text|>`, `<pad>`, ...). Override with
    /// [`Tokenizer::with_bos`] and friends. Padding and truncation settings in the file are
    /// dropped: they would add tokens behind the caller's back. Decoding gives back the text as
    /// the file's normalizer left it (GPT-NeoX: NFC), so round trips are exact for NFC text.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading tokenizer file {}", path.display()))?;
        let mut inner = tokenizers::Tokenizer::from_bytes(&bytes)
            .map_err(|e| anyhow!("{}: not a valid HF tokenizer.json: {e}", path.display()))?;
        inner
            .with_truncation(None)
            .map_err(|e| anyhow!("{}: disabling truncation: {e}", path.display()))?;
        inner.with_padding(None);

        let mut warnings = Vec::new();
        let config = path.with_file_name("tokenizer_config.json");
        let named = if config.is_file() {
            match read_config_special_tokens(&config) {
                Ok(named) => named,
                Err(e) => {
                    warnings.push(format!("{e:#}; recognising BOS/EOS/PAD by name instead"));
                    [None, None, None]
                }
            }
        } else {
            [None, None, None]
        };
        let [bos, eos, pad] = named;
        let mut find = |what: &str, given: Option<String>, candidates: &[&str]| match given {
            Some(tok) => {
                let id = inner.token_to_id(&tok);
                if id.is_none() {
                    warnings.push(format!(
                        "{}: {what} token {tok:?} is not in the vocabulary; no {what} set",
                        config.display()
                    ));
                }
                id
            }
            None => candidates.iter().find_map(|t| inner.token_to_id(t)),
        };
        let bos = find(
            "BOS",
            bos,
            &[
                "<|begin_of_text|>",
                "<s>",
                "<bos>",
                "<|startoftext|>",
                "<|endoftext|>",
            ],
        );
        let eos = find(
            "EOS",
            eos,
            &["<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>"],
        );
        let pad = find("PAD", pad, &["<|padding|>", "<pad>", "<|pad|>", "[PAD]"]);
        Ok(Self::finish(
            inner,
            bos,
            eos,
            pad,
            BTreeSet::new(),
            warnings,
        ))
    }

    /// Builds GPT-2's tokenizer from `vocab.json` + `merges.txt`, exactly as HF's GPT2Tokenizer
    /// does: byte-level BPE, no prefix space, `<|endoftext|>` (if present) special and BOS = EOS.
    pub fn from_vocab_merges(
        vocab_json: impl AsRef<Path>,
        merges_txt: impl AsRef<Path>,
    ) -> Result<Self> {
        let (vocab_path, merges_path) = (vocab_json.as_ref(), merges_txt.as_ref());
        let vocab_bytes = std::fs::read(vocab_path)
            .with_context(|| format!("reading vocabulary file {}", vocab_path.display()))?;
        let vocab: HashMap<String, u32> =
            serde_json::from_slice(&vocab_bytes).with_context(|| {
                format!(
                    "{}: expected a JSON object mapping token to id",
                    vocab_path.display()
                )
            })?;
        let merges_text = std::fs::read_to_string(merges_path)
            .with_context(|| format!("reading merges file {}", merges_path.display()))?;
        let mut merges = Vec::new();
        for (n, line) in merges_text.lines().enumerate() {
            if (n == 0 && line.starts_with("#version")) || line.trim().is_empty() {
                continue;
            }
            match line.split(' ').collect::<Vec<_>>()[..] {
                [a, b] => merges.push((a.to_string(), b.to_string())),
                _ => bail!(
                    "{}:{}: expected two tokens separated by one space, found {line:?}",
                    merges_path.display(),
                    n + 1
                ),
            }
        }

        let mut warnings = Vec::new();
        check_byte_alphabet(vocab.keys().map(String::as_str), &mut warnings);
        let vocab: Vocab = vocab.into_iter().collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| anyhow!("{} + {}: {e}", vocab_path.display(), merges_path.display()))?;
        let mut inner = byte_level_tokenizer(bpe, gpt2_pre_tokenizer());
        let eot = inner.token_to_id("<|endoftext|>");
        if eot.is_some() {
            inner.add_special_tokens([AddedToken::from("<|endoftext|>", true)]).map_err(|e| anyhow!("{}: cannot add <|endoftext|>: {e}", vocab_path.display()))?;
        }
        Ok(Self::finish(
            inner,
            eot,
            eot,
            None,
            BTreeSet::new(),
            warnings,
        ))
    }

    /// Reads the tokenizer embedded in a GGUF file (see [`Tokenizer::from_gguf_metadata`]).
    pub fn from_gguf_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let mut file = std::fs::File::open(path)
            .with_context(|| format!("opening GGUF file {}", path.display()))?;
        let content = gguf_file::Content::read(&mut file)
            .with_context(|| format!("{}: reading GGUF metadata", path.display()))?;
        Self::from_gguf_metadata(&content.metadata)
            .with_context(|| format!("{}: building its tokenizer", path.display()))
    }

    /// Builds the tokenizer a GGUF file describes, as llama.cpp and transformers read it.
    ///
    /// Only `tokenizer.ggml.model = "gpt2"` (byte-level BPE) is supported. `tokenizer.ggml.pre`
    /// chooses how text is split before BPE: GPT-2's regex (missing, "default", "gpt2"), digits
    /// split off one by one first ("smollm", "starcoder", ...), Llama 3's regex ("llama-bpe",
    /// "llama3") or Qwen2's ("qwen2"); any other value falls back to GPT-2 and leaves a note in
    /// [`Tokenizer::warnings`], since ids may then differ from the model's own tokenizer.
    /// Control tokens (type 3) and the BOS/EOS/PAD/UNK tokens become special tokens, user-defined
    /// ones (type 4) plain added tokens, so both encode whole (e.g. `<|im_start|>`).
    pub fn from_gguf_metadata(metadata: &HashMap<String, Value>) -> Result<Self> {
        let model = gguf_str(metadata, "tokenizer.ggml.model")?
            .context("GGUF metadata has no tokenizer.ggml.model: the file carries no tokenizer")?;
        if model != "gpt2" {
            bail!(
                "tokenizer.ggml.model = {model:?} is not supported: only \"gpt2\" (byte-level BPE) \
                 tokenizers can be built from GGUF metadata; for a SentencePiece (\"llama\") or other \
                 vocabulary, load the model's tokenizer.json with Tokenizer::from_file"
            );
        }
        let tokens = gguf_strings(metadata, "tokenizer.ggml.tokens")?;
        if tokens.is_empty() {
            bail!("tokenizer.ggml.tokens: expected a non-empty array of strings, found an empty array");
        }
        let n = tokens.len();
        let merges = gguf_strings(metadata, "tokenizer.ggml.merges")?
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).with_context(|| {
                    format!("tokenizer.ggml.merges[{i}] = {m:?}: expected two tokens separated by a space")
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let token_types = match gguf_ints(metadata, "tokenizer.ggml.token_type")? {
            Some(t) if t.len() != n => bail!(
                "tokenizer.ggml.token_type: expected one entry per token ({n}), found {}",
                t.len()
            ),
            t => t,
        };
        let mut warnings = Vec::new();
        let mut special_id = |key: &str| -> Result<Option<u32>> {
            Ok(match gguf_u32(metadata, key)? {
                Some(id) if id as usize >= n => {
                    warnings.push(format!(
                        "{key} = {id} is outside the vocabulary ({n} tokens); ignored"
                    ));
                    None
                }
                id => id,
            })
        };
        let bos = special_id("tokenizer.ggml.bos_token_id")?;
        let eos = special_id("tokenizer.ggml.eos_token_id")?;
        let pad = special_id("tokenizer.ggml.padding_token_id")?;
        let unk = special_id("tokenizer.ggml.unknown_token_id")?;

        // Vocabulary in the byte alphabet. Tokens written otherwise (llama.cpp keeps some added
        // tokens as raw text) are respelled byte by byte, as transformers does.
        let bytes_char = bytes_char();
        let in_alphabet = |t: &str| t.chars().all(|c| bytes_char.contains(&c));
        let spelled: Vec<String> = tokens
            .iter()
            .map(|t| {
                if in_alphabet(t) {
                    t.to_string()
                } else {
                    t.bytes().map(|b| bytes_char[b as usize]).collect()
                }
            })
            .collect();
        let vocab: Vocab = spelled
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        if vocab.len() != n {
            warnings.push(format!(
                "tokenizer.ggml.tokens: {} tokens share a spelling with another; the later id wins",
                n - vocab.len()
            ));
        }
        check_byte_alphabet(spelled.iter().map(String::as_str), &mut warnings);

        let pre_name = gguf_str(metadata, "tokenizer.ggml.pre")?;
        let (pre, nfc, ignore_merges) = match pre_name.unwrap_or("default") {
            "default" | "gpt2" | "gpt-2" => (gpt2_pre_tokenizer(), false, false),
            "smollm" | "starcoder" | "refact" | "codeshell" | "command-r" | "exaone" => {
                let digits = Digits::new(true).into();
                (
                    Sequence::new(vec![digits, gpt2_pre_tokenizer()]).into(),
                    false,
                    false,
                )
            }
            "llama-bpe" | "llama3" | "llama-v3" => {
                (split_pre_tokenizer(LLAMA3_SPLIT)?, false, true)
            }
            "qwen2" => (split_pre_tokenizer(QWEN2_SPLIT)?, true, false),
            other => {
                warnings.push(format!(
                    "tokenizer.ggml.pre = {other:?} is not known to qi; splitting text with GPT-2's \
                     regex, so ids may differ from the model's own tokenizer (known: {})",
                    SUPPORTED_GGUF_PRE.join(", ")
                ));
                (gpt2_pre_tokenizer(), false, false)
            }
        };
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(ignore_merges)
            .build()
            .map_err(|e| anyhow!("tokenizer.ggml.tokens/merges: cannot build BPE: {e}"))?;
        let mut inner = byte_level_tokenizer(bpe, pre);
        if nfc {
            inner.with_normalizer(Some(NFC)).map_err(|e| anyhow!("cannot set the NFC normalizer: {e}"))?;
        }

        // Tokens that must encode whole. Only ones spelled in the byte alphabet can be: any other
        // would be added under a new id past the model's vocabulary (transformers skips them too).
        let mut special = BTreeSet::new();
        let mut special_tokens = Vec::new();
        let mut user_tokens = Vec::new();
        let named: BTreeSet<u32> = [bos, eos, pad, unk].into_iter().flatten().collect();
        for (i, token) in tokens.iter().enumerate() {
            let ty = token_types.as_ref().map(|t| t[i]);
            let is_special = ty == Some(TOKEN_TYPE_CONTROL) || named.contains(&(i as u32));
            if !is_special && ty != Some(TOKEN_TYPE_USER_DEFINED) {
                continue;
            }
            if is_special {
                special.insert(i as u32);
            }
            if !in_alphabet(token) {
                warnings.push(format!(
                    "token {i} {token:?} (type {}) is not spelled in the byte alphabet; it will not encode whole",
                    ty.unwrap_or(TOKEN_TYPE_CONTROL)
                ));
            } else if is_special {
                special_tokens.push(AddedToken::from(token.to_string(), true));
            } else {
                user_tokens.push(AddedToken::from(token.to_string(), false).normalized(false));
            }
        }
        inner.add_special_tokens(special_tokens).map_err(|e| anyhow!("tokenizer.ggml.tokens: cannot add special tokens: {e}"))?;
        inner.add_tokens(user_tokens).map_err(|e| anyhow!("tokenizer.ggml.tokens: cannot add user-defined tokens: {e}"))?;
        let mut tok = Self::finish(inner, bos, eos, pad, special, warnings);
        tok.vocab_size = tok.vocab_size.max(n);
        Ok(tok)
    }

    fn finish(
        inner: tokenizers::Tokenizer,
        bos: Option<u32>,
        eos: Option<u32>,
        pad: Option<u32>,
        mut special: BTreeSet<u32>,
        warnings: Vec<String>,
    ) -> Self {
        special.extend(
            inner
                .get_added_tokens_decoder()
                .iter()
                .filter(|(_, t)| t.special)
                .map(|(id, _)| *id),
        );
        let vocab_size = inner
            .get_vocab(true)
            .values()
            .map(|&id| id as usize + 1)
            .max()
            .unwrap_or(0);
        Self {
            inner,
            bos,
            eos,
            pad,
            special,
            vocab_size,
            warnings,
        }
    }

    /// Token ids for `text`, with the BOS id in front if `add_bos` (an error if there is none).
    /// Special tokens written in the text (e.g. `<|im_start|>`) encode to their ids.
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| anyhow!("encoding {} bytes of text: {e}", text.len()))?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        if add_bos {
            ids.push(
                self.bos
                    .context("add_bos requested, but this tokenizer has no BOS token")?,
            );
        }
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// Text for `ids`; special tokens are dropped if `skip_special`. Ids the tokenizer does not
    /// know are an error (HF silently drops them).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        if let Some((pos, id)) = ids
            .iter()
            .enumerate()
            .find(|(_, &id)| self.inner.id_to_token(id).is_none())
        {
            bail!(
                "token id {id} at position {pos} is not in the vocabulary (vocab size {})",
                self.vocab_size
            );
        }
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| anyhow!("decoding {} ids: {e}", ids.len()))
    }

    /// One more than the largest token id (the embedding rows the tokenizer can address).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }

    /// The vocabulary entry for `id`, as the tokenizer spells it (byte-level: `Ġthe` for " the").
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a vocabulary entry, spelled as in [`Tokenizer::id_to_token`].
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Sorted ids of special/control tokens (including BOS/EOS/PAD): callers exclude these when
    /// sampling random tokens.
    pub fn special_ids(&self) -> Vec<u32> {
        let mut all = self.special.clone();
        all.extend([self.bos, self.eos, self.pad].into_iter().flatten());
        all.into_iter().collect()
    }

    /// Things that were accepted but may make ids differ from the model's own tokenizer or lose
    /// text: an unknown `tokenizer.ggml.pre`, byte tokens missing from the vocabulary (SmolLM2
    /// lacks 8, all control characters or rare 4-byte lead bytes), special tokens that cannot be
    /// matched whole.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The underlying HF tokenizer, for offsets, batch encoding and the like.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Sets (or with `None` clears) the BOS token, for tokenizer.json files whose BOS is not
    /// recognised. Errors if the token is not in the vocabulary.
    pub fn with_bos(mut self, token: Option<&str>) -> Result<Self> {
        self.bos = self.lookup("BOS", token)?;
        Ok(self)
    }

    /// Sets (or clears) the EOS token; see [`Tokenizer::with_bos`].
    pub fn with_eos(mut self, token: Option<&str>) -> Result<Self> {
        self.eos = self.lookup("EOS", token)?;
        Ok(self)
    }

    /// Sets (or clears) the PAD token; see [`Tokenizer::with_bos`].
    pub fn with_pad(mut self, token: Option<&str>) -> Result<Self> {
        self.pad = self.lookup("PAD", token)?;
        Ok(self)
    }

    fn lookup(&self, what: &str, token: Option<&str>) -> Result<Option<u32>> {
        token
            .map(|t| {
                self.token_to_id(t)
                    .with_context(|| format!("{what} token {t:?} is not in the vocabulary"))
            })
            .transpose()
    }
}

/// GPT-2's own split: its regex inside ByteLevel, no prefix space.
fn gpt2_pre_tokenizer() -> PreTokenizerWrapper {
    ByteLevel::new(false, true, true).into()
}

/// A custom split regex followed by byte-level encoding (how Llama 3 / Qwen2 tokenizer.json do it).
fn split_pre_tokenizer(regex: &str) -> Result<PreTokenizerWrapper> {
    let split = Split::new(
        SplitPattern::Regex(regex.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| anyhow!("compiling pre-tokenizer regex {regex:?}: {e}"))?;
    Ok(Sequence::new(vec![
        split.into(),
        ByteLevel::new(false, true, false).into(),
    ])
    .into())
}

fn byte_level_tokenizer(bpe: BPE, pre: PreTokenizerWrapper) -> tokenizers::Tokenizer {
    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(pre));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    // Only trims offsets (add_special_tokens is always false here); kept for HF-identical offsets.
    inner.with_post_processor(Some(ByteLevel::new(false, true, true)));
    inner
}

/// GPT-2's byte → printable char table (`bytes_to_unicode`).
fn bytes_char() -> Vec<char> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 256u32;
    (0..=255u8)
        .map(|b| {
            if printable(b) {
                b as char
            } else {
                let c = char::from_u32(next).expect("256..=323 are valid chars");
                next += 1;
                c
            }
        })
        .collect()
}

/// A byte-level BPE silently drops bytes missing from its vocabulary (as HF does); say so up front.
/// Bytes that never occur in UTF-8 (0xC0, 0xC1, 0xF5..=0xFF) do not count.
fn check_byte_alphabet<'a>(tokens: impl Iterator<Item = &'a str>, warnings: &mut Vec<String>) {
    let present: BTreeSet<&str> = tokens.filter(|t| t.chars().count() == 1).collect();
    let missing: Vec<String> = bytes_char()
        .into_iter()
        .enumerate()
        .filter(|&(b, _)| !matches!(b, 0xC0 | 0xC1 | 0xF5..=0xFF))
        .filter(|(_, c)| !present.contains(c.to_string().as_str()))
        .map(|(b, _)| format!("{b:#04x}"))
        .collect();
    if !missing.is_empty() {
        let shown = if missing.len() > 16 {
            format!("{} ...", missing[..16].join(" "))
        } else {
            missing.join(" ")
        };
        warnings.push(format!(
            "vocabulary lacks the byte tokens for {} byte value(s) that UTF-8 text can contain ({}); \
             encoding silently drops those bytes, as HF does",
            missing.len(),
            shown
        ));
    }
}

/// `bos_token`/`eos_token`/`pad_token` of a tokenizer_config.json (strings or `{"content": ...}`).
fn read_config_special_tokens(path: &Path) -> Result<[Option<String>; 3]> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let get = |key: &str| match json.get(key) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Object(o)) => o
            .get("content")
            .and_then(|c| c.as_str())
            .map(str::to_string),
        _ => None,
    };
    Ok([get("bos_token"), get("eos_token"), get("pad_token")])
}

fn value_kind(v: &Value) -> String {
    match v {
        Value::Array(a) => match a.first() {
            Some(first) => format!("an array of {} ({} entries)", value_kind(first), a.len()),
            None => "an empty array".to_string(),
        },
        Value::String(_) => "a string".to_string(),
        Value::Bool(_) => "a bool".to_string(),
        other => format!("{:?}", other.value_type()).to_lowercase(),
    }
}

fn as_int(v: &Value) -> Option<i64> {
    Some(match *v {
        Value::U8(x) => x as i64,
        Value::I8(x) => x as i64,
        Value::U16(x) => x as i64,
        Value::I16(x) => x as i64,
        Value::U32(x) => x as i64,
        Value::I32(x) => x as i64,
        Value::U64(x) => i64::try_from(x).ok()?,
        Value::I64(x) => x,
        _ => return None,
    })
}

fn gguf_str<'a>(m: &'a HashMap<String, Value>, key: &str) -> Result<Option<&'a str>> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => bail!("{key}: expected a string, found {}", value_kind(v)),
    }
}

fn gguf_u32(m: &HashMap<String, Value>, key: &str) -> Result<Option<u32>> {
    match m.get(key) {
        None => Ok(None),
        Some(v) => match as_int(v).map(u32::try_from) {
            Some(Ok(id)) => Ok(Some(id)),
            Some(Err(_)) => bail!(
                "{key}: expected a token id, found {}",
                as_int(v).unwrap_or_default()
            ),
            None => bail!(
                "{key}: expected an integer token id, found {}",
                value_kind(v)
            ),
        },
    }
}

fn gguf_strings<'a>(m: &'a HashMap<String, Value>, key: &str) -> Result<Vec<&'a str>> {
    match m.get(key) {
        None => bail!("GGUF metadata has no {key} (expected an array of strings)"),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.as_str()),
                other => bail!(
                    "{key}: expected an array of strings, found {} at index {i}",
                    value_kind(other)
                ),
            })
            .collect(),
        Some(v) => bail!(
            "{key}: expected an array of strings, found {}",
            value_kind(v)
        ),
    }
}

fn gguf_ints(m: &HashMap<String, Value>, key: &str) -> Result<Option<Vec<i64>>> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                as_int(v).with_context(|| {
                    format!(
                        "{key}: expected an array of integers, found {} at index {i}",
                        value_kind(v)
                    )
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(v) => bail!(
            "{key}: expected an array of integers, found {}",
            value_kind(v)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_char_matches_gpt2_table() {
        let t = bytes_char();
        assert_eq!(t[b' ' as usize], 'Ġ');
        assert_eq!(t[b'\n' as usize], 'Ċ');
        assert_eq!(t[b'a' as usize], 'a');
        assert_eq!(t[0], 'Ā');
        let distinct: BTreeSet<char> = t.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }
}
