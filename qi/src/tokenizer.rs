//! Text ⇄ token ids for the models qi studies.
//!
//! A thin wrapper over HF `tokenizers`, buildable from the three places our tokenizers live: a
//! `tokenizer.json`, GPT-2's `vocab.json` + `merges.txt`, or the vocabulary embedded in a GGUF file.
//! Encoding never adds special tokens on its own (BOS only when asked; [`Tokenizer::adds_bos`] says
//! whether the model's own tokenizer would), so the ids an analysis sees are exactly the text's;
//! [`Tokenizer::special_ids`] tells samplers which ids to leave out.
use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::quantized::gguf_file::{self, Value};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

/// llama.cpp's token types (`tokenizer.ggml.token_type`) that change how a token is handled:
/// control tokens are special, user-defined ones encode whole. Normal (1), unknown (2), unused (5)
/// and byte (6) tokens are plain vocabulary entries (byte tokens are found by their `<0xNN>` name).
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// `tokenizer.ggml.model` values qi can build: byte-level BPE and SentencePiece.
pub const SUPPORTED_GGUF_MODELS: &[&str] = &["gpt2", "llama"];

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
    /// Whether the model's own tokenizer puts BOS/EOS around a text by default.
    add_bos: bool,
    add_eos: bool,
    warnings: Vec<String>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("pad", &self.pad)
            .field("add_bos", &self.add_bos)
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
    /// [`Tokenizer::with_bos`] and friends. [`Tokenizer::adds_bos`] is the config's
    /// `add_bos_token` (false without one). Padding and truncation settings in the file are
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
        let (named, adds) = if config.is_file() {
            match read_config_special_tokens(&config) {
                Ok(found) => found,
                Err(e) => {
                    warnings.push(format!("{e:#}; recognising BOS/EOS/PAD by name instead"));
                    Default::default()
                }
            }
        } else {
            Default::default()
        };
        let [bos, eos, pad] = named;
        let [add_bos, add_eos] = adds.map(|a| a.unwrap_or(false));
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
        let mut tok = Self::finish(inner, bos, eos, pad, BTreeSet::new(), warnings);
        tok.add_bos = add_bos;
        tok.add_eos = add_eos;
        Ok(tok)
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

    /// Builds the tokenizer a GGUF file describes, giving the ids transformers gives for it.
    ///
    /// Where transformers' GGUF loader departs from the model's own tokenizer (it skips SmolLM's
    /// digit split and Qwen2's NFC step), qi follows the model's own tokenizer.
    ///
    /// Two kinds of vocabulary (`tokenizer.ggml.model`) are supported:
    ///
    /// - `"gpt2"`: byte-level BPE from `tokenizer.ggml.tokens` and `tokenizer.ggml.merges`.
    ///   `tokenizer.ggml.pre` chooses how text is split before BPE: GPT-2's regex (missing,
    ///   "default", "gpt2"), digits split off one by one first ("smollm", "starcoder", ...),
    ///   Llama 3's regex ("llama-bpe", "llama3") or Qwen2's ("qwen2", which also composes text to
    ///   NFC first, as Qwen's own tokenizer does); any other value falls back to GPT-2 and leaves a
    ///   note in [`Tokenizer::warnings`], since ids may then differ from the model's own tokenizer.
    /// - `"llama"`: SentencePiece BPE with byte fallback (`<0x41>` tokens for characters the
    ///   vocabulary lacks) and spaces written as "▁". The merges are `tokenizer.ggml.merges` if the
    ///   file has them, otherwise every split of a token into two tokens, best first: by
    ///   `tokenizer.ggml.scores`, or for Gemma files (`general.architecture` gemma, gemma2,
    ///   gemma3) by position in the file, as transformers does (Gemma files give byte, control
    ///   and user-defined tokens placeholder scores that would misplace their merges).
    ///   Gemma files store runs of spaces as real spaces; they are respelled with "▁". Gemma text
    ///   gets no leading "▁"; Llama-style files get one at the start of the text unless
    ///   `tokenizer.ggml.add_space_prefix` is false, Phi-3 files one at the start of every piece
    ///   of text between special tokens (a normalizer). Characters whose bytes have no `<0xNN>`
    ///   token become the unknown token (Gemma) or are dropped (others, as transformers does);
    ///   [`Tokenizer::warnings`] says when the vocabulary lacks byte tokens.
    ///
    /// In both, control tokens (type 3) and the BOS/EOS/PAD/UNK tokens become special tokens and
    /// user-defined ones (type 4) plain added tokens, so both encode whole (e.g. `<|im_start|>`,
    /// `<start_of_turn>`). `tokenizer.ggml.add_bos_token` (default: true for "llama", false for
    /// "gpt2", as llama.cpp reads it) is reported by [`Tokenizer::adds_bos`]; encoding still adds
    /// BOS only when asked.
    pub fn from_gguf_metadata(metadata: &HashMap<String, Value>) -> Result<Self> {
        let model = gguf_str(metadata, "tokenizer.ggml.model")?
            .context("GGUF metadata has no tokenizer.ggml.model: the file carries no tokenizer")?;
        if !SUPPORTED_GGUF_MODELS.contains(&model) {
            bail!(
                "tokenizer.ggml.model = {model:?} is not supported: qi builds tokenizers from GGUF \
                 metadata for {} only (\"gpt2\": byte-level BPE, \"llama\": SentencePiece); for \
                 another kind, load the model's tokenizer.json with Tokenizer::from_file",
                SUPPORTED_GGUF_MODELS.iter().map(|m| format!("{m:?}")).collect::<Vec<_>>().join(", ")
            );
        }
        let tokens = gguf_strings(metadata, "tokenizer.ggml.tokens")?;
        if tokens.is_empty() {
            bail!("tokenizer.ggml.tokens: expected a non-empty array of strings, found an empty array");
        }
        let n = tokens.len();
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
        let sentencepiece = model == "llama";
        let add_bos = gguf_bool(metadata, "tokenizer.ggml.add_bos_token")?.unwrap_or(sentencepiece);
        let add_eos = gguf_bool(metadata, "tokenizer.ggml.add_eos_token")?.unwrap_or(false);

        let (mut inner, spelling) = if sentencepiece {
            let unk_token = unk.map(|id| tokens[id as usize]).or_else(|| {
                tokens.contains(&"<unk>").then_some("<unk>")
            });
            (
                sentencepiece_from_gguf(metadata, &tokens, unk_token, &mut warnings)?,
                Spelling::AsIs,
            )
        } else {
            byte_level_from_gguf(metadata, &tokens, &mut warnings)?
        };

        // Tokens that must encode whole.
        let mut special = BTreeSet::new();
        let mut special_tokens = Vec::new();
        let mut user_tokens = Vec::new();
        let named: BTreeSet<u32> = [bos, eos, pad, unk].into_iter().flatten().collect();
        for (i, &token) in tokens.iter().enumerate() {
            let ty = token_types.as_ref().map(|t| t[i]);
            let is_special = ty == Some(TOKEN_TYPE_CONTROL) || named.contains(&(i as u32));
            if !is_special && ty != Some(TOKEN_TYPE_USER_DEFINED) {
                continue;
            }
            if is_special {
                special.insert(i as u32);
            }
            match &spelling {
                // Only tokens spelled in the byte alphabet can be added: any other would get a new
                // id past the model's vocabulary (transformers skips them too).
                Spelling::ByteLevel(in_alphabet) if !in_alphabet(token) => {
                    warnings.push(format!(
                        "token {i} {token:?} (type {}) is not spelled in the byte alphabet; it will not encode whole",
                        ty.unwrap_or(TOKEN_TYPE_CONTROL)
                    ));
                    continue;
                }
                // User-defined tokens the vocabulary respelled (Gemma's space runs) are left to the
                // merges, as transformers does.
                Spelling::AsIs if !is_special && inner.token_to_id(token).is_none() => {
                    continue
                }
                _ => {}
            }
            if is_special {
                special_tokens.push(AddedToken::from(token.to_string(), true));
            } else {
                user_tokens.push(AddedToken::from(token.to_string(), false).normalized(false));
            }
        }
        inner.add_special_tokens(special_tokens).map_err(|e| anyhow!("tokenizer.ggml.tokens: cannot add special tokens: {e}"))?;
        inner.add_tokens(user_tokens).map_err(|e| anyhow!("tokenizer.ggml.tokens: cannot add user-defined tokens: {e}"))?;
        let mut tok = Self::finish(inner, bos, eos, pad, special, warnings);
        tok.vocab_size = tok.vocab_size.max(n);
        tok.add_bos = add_bos;
        tok.add_eos = add_eos;
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
            add_bos: false,
            add_eos: false,
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

    /// Whether the model's own tokenizer starts every text with BOS (GGUF
    /// `tokenizer.ggml.add_bos_token`; tokenizer_config.json `add_bos_token`): true for Gemma,
    /// false for Qwen2.5 and GPT-2. Use it as the default for `add_bos` in [`Tokenizer::encode`].
    pub fn adds_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// Whether the model's own tokenizer ends every text with EOS (`add_eos_token`; rarely true).
    pub fn adds_eos(&self) -> bool {
        self.add_eos && self.eos.is_some()
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

/// How a GGUF vocabulary spells its tokens, for deciding which can be added whole.
enum Spelling {
    /// Byte-level BPE: only tokens in GPT-2's byte alphabet are real vocabulary entries.
    ByteLevel(Box<dyn Fn(&str) -> bool>),
    /// SentencePiece: tokens are spelled as text (with "▁" for spaces).
    AsIs,
}

/// The byte-level BPE (`tokenizer.ggml.model = "gpt2"`) of a GGUF file, without added tokens.
fn byte_level_from_gguf(
    metadata: &HashMap<String, Value>,
    tokens: &[&str],
    warnings: &mut Vec<String>,
) -> Result<(tokenizers::Tokenizer, Spelling)> {
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

    // Vocabulary in the byte alphabet. Tokens written otherwise (llama.cpp keeps some added
    // tokens as raw text) are respelled byte by byte, as transformers does.
    let table = bytes_char();
    let alphabet: BTreeSet<char> = table.iter().copied().collect();
    let in_alphabet = move |t: &str| t.chars().all(|c| alphabet.contains(&c));
    let spelled: Vec<String> = tokens
        .iter()
        .map(|t| {
            if in_alphabet(t) {
                t.to_string()
            } else {
                t.bytes().map(|b| table[b as usize]).collect()
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
    check_byte_alphabet(spelled.iter().map(String::as_str), warnings);

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
        "llama-bpe" | "llama3" | "llama-v3" => (split_pre_tokenizer(LLAMA3_SPLIT)?, false, true),
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
        inner
            .with_normalizer(Some(NFC))
            .map_err(|e| anyhow!("cannot set the NFC normalizer: {e}"))?;
    }
    Ok((inner, Spelling::ByteLevel(Box::new(in_alphabet))))
}

/// How a SentencePiece GGUF's text is prepared, which transformers picks by architecture.
#[derive(Clone, Copy, PartialEq, Debug)]
enum SpmStyle {
    /// Spaces become "▁", nothing prepended; merges ranked by position; space runs respelled.
    Gemma,
    /// "▁" prepended once, to the start of the text (Metaspace); merges ranked by score.
    Llama { prefix: bool },
    /// "▁" prepended to every piece of text between added tokens (a normalizer).
    Phi3,
}

/// The SentencePiece BPE (`tokenizer.ggml.model = "llama"`) of a GGUF file, without added tokens.
fn sentencepiece_from_gguf(
    metadata: &HashMap<String, Value>,
    tokens: &[&str],
    unk_token: Option<&str>,
    warnings: &mut Vec<String>,
) -> Result<tokenizers::Tokenizer> {
    let n = tokens.len();
    let style = match gguf_str(metadata, "general.architecture")?.unwrap_or("") {
        "gemma" | "gemma2" | "gemma3" => SpmStyle::Gemma,
        "phi3" => SpmStyle::Phi3,
        _ => SpmStyle::Llama {
            prefix: gguf_bool(metadata, "tokenizer.ggml.add_space_prefix")?.unwrap_or(true),
        },
    };
    let scores = match gguf_floats(metadata, "tokenizer.ggml.scores")? {
        Some(s) if s.len() != n => bail!(
            "tokenizer.ggml.scores: expected one score per token ({n}), found {}",
            s.len()
        ),
        s => s,
    };
    let spelled: Vec<String> = tokens
        .iter()
        .map(|&t| {
            // Gemma files store a run of spaces as the spaces themselves; the tokenizer (and the
            // merges through it) know it as "▁▁...".
            if style == SpmStyle::Gemma && t.contains(' ') && t.chars().all(python_isspace) {
                "▁".repeat(t.chars().count())
            } else {
                t.to_string()
            }
        })
        .collect();
    let mut vocab: HashMap<&str, u32> = HashMap::with_capacity(n);
    for (i, t) in spelled.iter().enumerate() {
        vocab.insert(t.as_str(), i as u32);
    }
    if vocab.len() != n {
        warnings.push(format!(
            "tokenizer.ggml.tokens: {} tokens share a spelling with another; the later id wins",
            n - vocab.len()
        ));
    }
    let missing_bytes: Vec<String> = (0..=255u8)
        .map(|b| format!("<0x{b:02X}>"))
        .filter(|t| !vocab.contains_key(t.as_str()))
        .collect();
    if !missing_bytes.is_empty() {
        let shown = if missing_bytes.len() > 8 {
            format!("{} ...", missing_bytes[..8].join(" "))
        } else {
            missing_bytes.join(" ")
        };
        warnings.push(format!(
            "vocabulary lacks {} of the 256 byte tokens ({shown}); characters needing them {}",
            missing_bytes.len(),
            if style == SpmStyle::Gemma {
                "encode as the unknown token"
            } else {
                "are dropped, as transformers does"
            }
        ));
    }

    let merges = match metadata.get("tokenizer.ggml.merges") {
        Some(_) => gguf_strings(metadata, "tokenizer.ggml.merges")?
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).with_context(|| {
                    format!("tokenizer.ggml.merges[{i}] = {m:?}: expected two tokens separated by a space")
                })
            })
            .collect::<Result<Vec<_>>>()?,
        None => {
            let rank: Vec<f64> = match (style, &scores) {
                (SpmStyle::Gemma, _) => (0..n).map(|i| -(i as f64)).collect(),
                (_, Some(s)) => s.iter().map(|&x| x as f64).collect(),
                (_, None) => bail!(
                    "GGUF metadata has neither tokenizer.ggml.merges nor tokenizer.ggml.scores: a \
                     SentencePiece vocabulary needs one of them to know which pieces merge first"
                ),
            };
            derive_merges(&spelled, &vocab, &rank)
        }
    };
    let vocab: Vocab = vocab.into_iter().map(|(t, i)| (t.to_string(), i)).collect();
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    // transformers' GemmaTokenizer names its unknown token; LlamaTokenizer's has none (unknown
    // characters without byte tokens are then dropped).
    if let (SpmStyle::Gemma, Some(unk)) = (style, unk_token) {
        builder = builder.unk_token(unk.to_string());
    }
    let bpe = builder
        .build()
        .map_err(|e| anyhow!("tokenizer.ggml.tokens/merges: cannot build SentencePiece BPE: {e}"))?;

    let mut inner = tokenizers::Tokenizer::new(bpe);
    let replace = |from: &str, to: &str| {
        Replace::new(from, to).map_err(|e| anyhow!("cannot build the {from:?} -> {to:?} replacement: {e}"))
    };
    let mut decoders: Vec<DecoderWrapper> = vec![
        replace("▁", " ")?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    match style {
        SpmStyle::Gemma => {
            inner
                .with_normalizer(Some(replace(" ", "▁")?))
                .map_err(|e| anyhow!("cannot set the normalizer: {e}"))?;
            // GemmaTokenizer's split on " "; after the normalizer no " " is left, so it only
            // matters for text that skipped normalization. Kept to mirror it exactly.
            let split = Split::new(
                SplitPattern::String(" ".into()),
                SplitDelimiterBehavior::MergedWithPrevious,
                false,
            )
            .map_err(|e| anyhow!("cannot build the space split: {e}"))?;
            inner.with_pre_tokenizer(Some(split));
        }
        SpmStyle::Llama { prefix } => {
            let scheme = if prefix { PrependScheme::First } else { PrependScheme::Never };
            inner.with_pre_tokenizer(Some(Metaspace::new('▁', scheme, false)));
            if prefix {
                decoders.push(Strip::new(' ', 1, 0).into());
            }
        }
        SpmStyle::Phi3 => {
            let normalizer = NormalizerSequence::new(vec![
                Prepend::new("▁".into()).into(),
                replace(" ", "▁")?.into(),
            ]);
            inner
                .with_normalizer(Some(normalizer))
                .map_err(|e| anyhow!("cannot set the normalizer: {e}"))?;
            decoders.push(Strip::new(' ', 1, 0).into());
        }
    }
    inner.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(inner)
}

/// Python's `str.isspace` for one character (Rust's `char::is_whitespace` leaves out 0x1C..=0x1F).
fn python_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// The merges a SentencePiece vocabulary implies, as transformers derives them: every split of a
/// token into two tokens, best `rank` first; a token's splits with a longer left piece first, then
/// by the pieces' ids. Ties keep vocabulary order.
fn derive_merges(
    spelled: &[String],
    vocab: &HashMap<&str, u32>,
    rank: &[f64],
) -> Vec<(String, String)> {
    struct Cand {
        left: u32,
        right: u32,
        rank: f64,
        left_chars: usize,
        right_chars: usize,
    }
    let mut seen = std::collections::HashSet::with_capacity(spelled.len());
    let mut all = Vec::new();
    let mut local = Vec::new();
    for token in spelled {
        // A token spelled twice counts once, with the rank of its last id (a Python dict).
        if !seen.insert(token.as_str()) {
            continue;
        }
        let id = vocab[token.as_str()];
        let total = token.chars().count();
        local.clear();
        for (k, (at, _)) in token.char_indices().enumerate().skip(1) {
            let (l, r) = token.split_at(at);
            if let (Some(&left), Some(&right)) = (vocab.get(l), vocab.get(r)) {
                local.push(Cand {
                    left,
                    right,
                    rank: rank[id as usize],
                    left_chars: k,
                    right_chars: total - k,
                });
            }
        }
        local.sort_by_key(|c| (c.left, c.right));
        all.append(&mut local);
    }
    // Stable, best first.
    all.sort_by(|a, b| {
        b.rank
            .partial_cmp(&a.rank)
            .unwrap_or(Ordering::Equal)
            .then(b.left_chars.cmp(&a.left_chars))
            .then(b.right_chars.cmp(&a.right_chars))
    });
    all.into_iter()
        .map(|c| {
            (
                spelled[c.left as usize].clone(),
                spelled[c.right as usize].clone(),
            )
        })
        .collect()
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

/// `bos_token`/`eos_token`/`pad_token` of a tokenizer_config.json (strings or `{"content": ...}`),
/// and its `add_bos_token`/`add_eos_token` flags.
type ConfigTokens = ([Option<String>; 3], [Option<bool>; 2]);

fn read_config_special_tokens(path: &Path) -> Result<ConfigTokens> {
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
    let flag = |key: &str| json.get(key).and_then(serde_json::Value::as_bool);
    Ok((
        [get("bos_token"), get("eos_token"), get("pad_token")],
        [flag("add_bos_token"), flag("add_eos_token")],
    ))
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

fn gguf_bool(m: &HashMap<String, Value>, key: &str) -> Result<Option<bool>> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => bail!("{key}: expected a bool, found {}", value_kind(v)),
    }
}

fn gguf_floats(m: &HashMap<String, Value>, key: &str) -> Result<Option<Vec<f32>>> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match *v {
                Value::F32(x) => Ok(x),
                Value::F64(x) => Ok(x as f32),
                ref other => bail!(
                    "{key}: expected an array of floats, found {} at index {i}",
                    value_kind(other)
                ),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some),
        Some(v) => bail!("{key}: expected an array of floats, found {}", value_kind(v)),
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
