//! Tokenizer tests: exact ids against HF references (data/fixtures/tokenizers, made by
//! scripts/make_tokenizer_fixtures.py), lossless round trips on real text, and clear errors on bad
//! input. Tests that need the shared data folder skip with a printed reason when it is absent.
//!
//! Everything sits in `mod tokenizer` so that `cargo test -p qi tokenizer` selects it.

mod tokenizer {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::time::Instant;

    use candle_core::quantized::gguf_file::{self, Value};
    use qi::shared::{shared_path, SMOLLM2_GGUF, WIKITEXT2_TEST};
    use qi::tokenizer::Tokenizer;
    use serde::Deserialize;

    #[derive(Deserialize)]
    struct Case {
        text: String,
        ids: Vec<u32>,
        /// transformers' GGUF loader, where it differs from the model's real tokenizer.
        #[serde(default)]
        hf_gguf_ids: Option<Vec<u32>>,
    }

    #[derive(Deserialize)]
    struct PreVariant {
        pre: String,
        cases: Vec<Case>,
    }

    fn fixture_path(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../data/fixtures/tokenizers")
            .join(name)
    }

    fn fixtures<T: serde::de::DeserializeOwned>(name: &str) -> T {
        let path = fixture_path(name);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn smollm2_metadata() -> Option<HashMap<String, Value>> {
        let path = shared_path(SMOLLM2_GGUF)?;
        let mut file = std::fs::File::open(&path).unwrap();
        Some(gguf_file::Content::read(&mut file).unwrap().metadata)
    }

    fn smollm2() -> Option<Tokenizer> {
        Some(Tokenizer::from_gguf_metadata(&smollm2_metadata()?).unwrap())
    }

    fn gpt2() -> Option<Tokenizer> {
        let vocab = shared_path("tokenizers/gpt2/vocab.json")?;
        let merges = shared_path("tokenizers/gpt2/merges.txt")?;
        Some(Tokenizer::from_vocab_merges(vocab, merges).unwrap())
    }

    fn neox() -> Option<Tokenizer> {
        Some(
            Tokenizer::from_file(shared_path("tokenizers/gpt-neox-20b/20B_tokenizer.json")?)
                .unwrap(),
        )
    }

    fn check_fixture_ids(name: &str, tok: &Tokenizer) {
        let cases: Vec<Case> = fixtures(&format!("{name}.json"));
        assert!(cases.len() >= 10);
        for case in &cases {
            let ids = tok.encode(&case.text, false).unwrap();
            assert_eq!(ids, case.ids, "{name}: ids for {:?}", case.text);
            // SmolLM2's vocabulary lacks some bytes, which encoding drops (as HF does).
            let lossy = name == "smollm2" && case.text.contains('\u{4}');
            if !lossy {
                assert_eq!(
                    tok.decode(&ids, false).unwrap(),
                    case.text,
                    "{name}: decode of {:?}",
                    case.text
                );
            }
        }
    }

    #[test]
    fn smollm2_gguf_facts() {
        let Some(meta) = smollm2_metadata() else {
            return;
        };
        assert_eq!(meta["tokenizer.ggml.pre"].to_string().unwrap(), "smollm");
        let tok = Tokenizer::from_gguf_metadata(&meta).unwrap();
        // SmolLM2 really lacks these byte tokens (HF drops such bytes too); nothing else to say.
        assert_eq!(tok.warnings().len(), 1, "{:?}", tok.warnings());
        assert!(tok.warnings()[0].contains("8 byte value(s) that UTF-8 text can contain (0x04 0x06 0x13 0x14 0x16 0x1d 0xf1 0xf2)"), "{:?}", tok.warnings());
        assert_eq!(tok.vocab_size(), 49152);
        assert_eq!(
            (tok.bos_id(), tok.eos_id(), tok.pad_id()),
            (Some(1), Some(2), Some(2))
        );
        assert_eq!(tok.special_ids(), (0..=16).collect::<Vec<u32>>());
        assert_eq!(tok.id_to_token(1).as_deref(), Some("<|im_start|>"));
        assert_eq!(tok.token_to_id("<|endoftext|>"), Some(0));
        assert_eq!(tok.inner().get_vocab_size(true), 49152);
        // from_gguf_file is the same thing read from disk.
        let from_file = Tokenizer::from_gguf_file(shared_path(SMOLLM2_GGUF).unwrap()).unwrap();
        assert_eq!(
            from_file.encode("Hello, world 42", true).unwrap(),
            tok.encode("Hello, world 42", true).unwrap()
        );
    }

    #[test]
    fn smollm2_matches_hf_ids() {
        let Some(tok) = smollm2() else { return };
        check_fixture_ids("smollm2", &tok);
        // transformers' GGUF loader ignores pre = "smollm" (no digit split); it may differ only on
        // text with numbers.
        let cases: Vec<Case> = fixtures("smollm2.json");
        for case in cases.iter().filter(|c| c.hf_gguf_ids.is_some()) {
            assert!(case.text.chars().any(char::is_numeric), "{:?}", case.text);
            println!(
                "transformers' GGUF loader differs (no digit split) on {:?}",
                case.text
            );
        }
    }

    #[test]
    fn gpt2_matches_hf_ids() {
        let Some(tok) = gpt2() else { return };
        assert_eq!(tok.vocab_size(), 50257);
        assert_eq!(
            (tok.bos_id(), tok.eos_id(), tok.pad_id()),
            (Some(50256), Some(50256), None)
        );
        assert_eq!(tok.special_ids(), vec![50256]);
        assert!(tok.warnings().is_empty(), "{:?}", tok.warnings());
        check_fixture_ids("gpt2", &tok);
    }

    #[test]
    fn neox_matches_hf_ids() {
        let Some(tok) = neox() else { return };
        assert_eq!(
            (tok.bos_id(), tok.eos_id(), tok.pad_id()),
            (Some(0), Some(0), Some(1))
        );
        assert_eq!(tok.special_ids(), vec![0, 1]);
        assert!(tok.warnings().is_empty(), "{:?}", tok.warnings());
        check_fixture_ids("neox", &tok);
    }

    /// The llama-bpe and qwen2 splits, checked on SmolLM2's vocabulary against HF's definitions.
    #[test]
    fn gguf_pre_variants_match_hf_ids() {
        let Some(mut meta) = smollm2_metadata() else {
            return;
        };
        let variants: Vec<PreVariant> = fixtures("gguf-pre-variants.json");
        for variant in variants {
            meta.insert(
                "tokenizer.ggml.pre".into(),
                Value::String(variant.pre.clone()),
            );
            let tok = Tokenizer::from_gguf_metadata(&meta).unwrap();
            assert_eq!(
                tok.warnings().len(),
                1,
                "only the missing bytes: {:?}",
                tok.warnings()
            );
            for case in &variant.cases {
                assert_eq!(
                    tok.encode(&case.text, false).unwrap(),
                    case.ids,
                    "{} on {:?}",
                    variant.pre,
                    case.text
                );
            }
        }
    }

    /// Every string in the IOI templates file, plus filled-in templates.
    fn ioi_strings() -> Option<Vec<String>> {
        let path = shared_path("data/ioi/ioi_templates.json")?;
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        fn collect(v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::String(s) => out.push(s.clone()),
                serde_json::Value::Array(a) => a.iter().for_each(|x| collect(x, out)),
                serde_json::Value::Object(o) => o.values().for_each(|x| collect(x, out)),
                _ => {}
            }
        }
        let mut out = Vec::new();
        collect(&json, &mut out);
        let first = |key: &str| json[key][0].as_str().unwrap().to_string();
        let filled: Vec<String> = out
            .iter()
            .filter(|s| s.contains("[A]"))
            .map(|s| {
                s.replace("[A]", &first("NAMES"))
                    .replace("[B]", json["NAMES"][1].as_str().unwrap())
                    .replace("[C]", json["NAMES"][2].as_str().unwrap())
                    .replace("[PLACE]", &first("PLACES"))
                    .replace("[OBJECT]", &first("OBJECTS"))
            })
            .collect();
        assert!(!filled.is_empty());
        out.extend(filled);
        Some(out)
    }

    #[derive(Deserialize)]
    struct Summary {
        n_tokens: usize,
        first_ids: Vec<u32>,
        fnv1a64: String,
    }

    /// FNV-1a over the ids as little-endian u32 bytes, as in make_tokenizer_fixtures.py.
    fn fnv1a64(ids: &[u32]) -> String {
        let mut h: u64 = 0xcbf29ce484222325;
        for b in ids.iter().flat_map(|id| id.to_le_bytes()) {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
        format!("{h:016x}")
    }

    /// Encode then decode the whole WikiText-2 test split (one 1.29 MB string) and the IOI
    /// strings; the WikiText ids must also match HF's (count, first ids, checksum).
    fn check_round_trip(name: &str, tok: Option<Tokenizer>) {
        let (Some(tok), Some(wiki), Some(ioi)) = (tok, shared_path(WIKITEXT2_TEST), ioi_strings())
        else {
            return;
        };
        let text = std::fs::read_to_string(wiki).unwrap();
        let t0 = Instant::now();
        let ids = tok.encode(&text, false).unwrap();
        let t_enc = t0.elapsed();
        let back = tok.decode(&ids, false).unwrap();
        let t_dec = t0.elapsed() - t_enc;
        println!(
            "{name}: WikiText-2 test ({} bytes) -> {} tokens; encode {:.2?}, decode {:.2?}",
            text.len(),
            ids.len(),
            t_enc,
            t_dec
        );
        let hf: HashMap<String, Summary> = fixtures("wikitext2-test.json");
        let hf = &hf[name];
        assert_eq!(
            ids.len(),
            hf.n_tokens,
            "{name}: WikiText-2 token count vs HF"
        );
        assert_eq!(
            ids[..hf.first_ids.len()],
            hf.first_ids[..],
            "{name}: first WikiText-2 ids vs HF"
        );
        assert_eq!(
            fnv1a64(&ids),
            hf.fnv1a64,
            "{name}: WikiText-2 ids checksum vs HF"
        );
        if back != text {
            let at = back
                .bytes()
                .zip(text.bytes())
                .position(|(a, b)| a != b)
                .unwrap_or(back.len().min(text.len()));
            let context = String::from_utf8_lossy(&text.as_bytes()[at.saturating_sub(60)..at]);
            panic!("{name}: WikiText-2 round trip differs at byte {at}, after {context:?}");
        }
        for s in &ioi {
            let ids = tok.encode(s, false).unwrap();
            assert_eq!(
                &tok.decode(&ids, false).unwrap(),
                s,
                "{name}: IOI round trip"
            );
        }
    }

    #[test]
    fn smollm2_round_trips_wikitext_and_ioi() {
        check_round_trip("smollm2", smollm2());
    }

    #[test]
    fn gpt2_round_trips_wikitext_and_ioi() {
        check_round_trip("gpt2", gpt2());
    }

    #[test]
    fn neox_round_trips_wikitext_and_ioi() {
        check_round_trip("neox", neox());
    }

    #[test]
    fn special_tokens_encode_whole_bos_and_skip() {
        let Some(tok) = smollm2() else { return };
        let chat = "<|im_start|>user\nhi<|im_end|>";
        let ids = tok.encode(chat, false).unwrap();
        assert_eq!(ids.first(), Some(&1));
        assert_eq!(ids.last(), Some(&2));
        assert_eq!(tok.encode(chat, true).unwrap()[..2], [1, 1]);
        assert_eq!(tok.decode(&ids, true).unwrap(), "user\nhi");
        assert_eq!(tok.decode(&ids, false).unwrap(), chat);

        let Some(neox) = neox() else { return };
        assert_eq!(neox.encode("<|endoftext|>hi", false).unwrap()[0], 0);
        assert_eq!(neox.encode("hi", true).unwrap()[0], 0);
    }

    #[test]
    fn decode_rejects_unknown_ids() {
        let Some(tok) = gpt2() else { return };
        let err = tok.decode(&[15496, 50257], false).unwrap_err().to_string();
        assert!(
            err.contains("50257") && err.contains("position 1") && err.contains("50257)"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_errors_name_the_path() {
        let err = format!(
            "{:#}",
            Tokenizer::from_file("/nonexistent/tok.json").unwrap_err()
        );
        assert!(err.contains("/nonexistent/tok.json"), "{err}");
        let err = format!(
            "{:#}",
            Tokenizer::from_vocab_merges("/nope/vocab.json", "/nope/merges.txt").unwrap_err()
        );
        assert!(err.contains("/nope/vocab.json"), "{err}");
        let err = format!(
            "{:#}",
            Tokenizer::from_gguf_file("/nope/m.gguf").unwrap_err()
        );
        assert!(err.contains("/nope/m.gguf"), "{err}");
    }

    #[test]
    fn corrupt_files_give_clear_errors() {
        let dir = std::env::temp_dir().join(format!("qi-tokenizer-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad_json = dir.join("tokenizer.json");
        std::fs::write(&bad_json, "{\"model\": [1, 2").unwrap();
        let err = format!("{:#}", Tokenizer::from_file(&bad_json).unwrap_err());
        assert!(
            err.contains("not a valid HF tokenizer.json")
                && err.contains(&bad_json.display().to_string()),
            "{err}"
        );

        let vocab = dir.join("vocab.json");
        let merges = dir.join("merges.txt");
        std::fs::write(&vocab, "[\"a\", \"b\"]").unwrap();
        std::fs::write(&merges, "#version: 0.2\na b\n").unwrap();
        let err = format!(
            "{:#}",
            Tokenizer::from_vocab_merges(&vocab, &merges).unwrap_err()
        );
        assert!(
            err.contains("expected a JSON object mapping token to id"),
            "{err}"
        );

        std::fs::write(&vocab, r#"{"a": 0, "b": 1, "ab": 2}"#).unwrap();
        std::fs::write(&merges, "#version: 0.2\na b c\n").unwrap();
        let err = format!(
            "{:#}",
            Tokenizer::from_vocab_merges(&vocab, &merges).unwrap_err()
        );
        assert!(err.contains("merges.txt:2: expected two tokens"), "{err}");

        std::fs::write(&merges, "#version: 0.2\na x\n").unwrap();
        let err = format!(
            "{:#}",
            Tokenizer::from_vocab_merges(&vocab, &merges).unwrap_err()
        );
        assert!(err.contains("merges.txt"), "{err}");

        let bad_gguf = dir.join("bad.gguf");
        std::fs::write(&bad_gguf, b"not a gguf file").unwrap();
        let err = format!("{:#}", Tokenizer::from_gguf_file(&bad_gguf).unwrap_err());
        assert!(
            err.contains("bad.gguf") && err.contains("reading GGUF metadata"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn strings(items: &[&str]) -> Value {
        Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
    }

    /// A tiny but complete byte-level GGUF vocabulary: `<|endoftext|>`, "a", "b", "ab".
    fn tiny_metadata() -> HashMap<String, Value> {
        HashMap::from([
            (
                "tokenizer.ggml.model".to_string(),
                Value::String("gpt2".into()),
            ),
            (
                "tokenizer.ggml.pre".to_string(),
                Value::String("gpt2".into()),
            ),
            (
                "tokenizer.ggml.tokens".to_string(),
                strings(&["<|endoftext|>", "a", "b", "ab"]),
            ),
            ("tokenizer.ggml.merges".to_string(), strings(&["a b"])),
            (
                "tokenizer.ggml.token_type".to_string(),
                Value::Array(vec![
                    Value::I32(3),
                    Value::I32(1),
                    Value::I32(1),
                    Value::I32(1),
                ]),
            ),
            ("tokenizer.ggml.eos_token_id".to_string(), Value::U32(0)),
        ])
    }

    fn gguf_err(meta: &HashMap<String, Value>) -> String {
        format!("{:#}", Tokenizer::from_gguf_metadata(meta).unwrap_err())
    }

    #[test]
    fn tiny_gguf_metadata_builds() {
        let tok = Tokenizer::from_gguf_metadata(&tiny_metadata()).unwrap();
        assert_eq!(
            tok.encode("abab<|endoftext|>a", false).unwrap(),
            vec![3, 3, 0, 1]
        );
        assert_eq!(tok.special_ids(), vec![0]);
        assert_eq!((tok.bos_id(), tok.eos_id()), (None, Some(0)));
        let err = tok.encode("a", true).unwrap_err().to_string();
        assert!(err.contains("no BOS"), "{err}");
        // Most bytes are missing from this vocabulary: accepted, but said.
        assert!(
            tok.warnings()
                .iter()
                .any(|w| w.contains("for 241 byte value(s)")),
            "{:?}",
            tok.warnings()
        );
    }

    #[test]
    fn gguf_missing_or_ill_typed_keys_give_clear_errors() {
        for key in [
            "tokenizer.ggml.model",
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.merges",
        ] {
            let mut meta = tiny_metadata();
            meta.remove(key);
            let err = gguf_err(&meta);
            assert!(err.contains(key), "missing {key}: {err}");
        }
        let cases: Vec<(&str, Value, &str)> = vec![
            ("tokenizer.ggml.model", Value::U32(2), "tokenizer.ggml.model: expected a string, found u32"),
            ("tokenizer.ggml.tokens", Value::String("a".into()), "tokenizer.ggml.tokens: expected an array of strings, found a string"),
            ("tokenizer.ggml.tokens", Value::Array(vec![Value::U8(1)]), "tokenizer.ggml.tokens: expected an array of strings, found u8 at index 0"),
            ("tokenizer.ggml.merges", Value::Array(vec![Value::I32(1)]), "tokenizer.ggml.merges: expected an array of strings"),
            ("tokenizer.ggml.merges", strings(&["ab"]), "tokenizer.ggml.merges[0] = \"ab\": expected two tokens separated by a space"),
            ("tokenizer.ggml.merges", strings(&["a c"]), "tokenizer.ggml.tokens/merges: cannot build BPE"),
            ("tokenizer.ggml.token_type", Value::Array(vec![Value::I32(1)]), "tokenizer.ggml.token_type: expected one entry per token (4), found 1"),
            ("tokenizer.ggml.token_type", strings(&["a", "b", "c", "d"]), "tokenizer.ggml.token_type: expected an array of integers, found a string at index 0"),
            ("tokenizer.ggml.bos_token_id", Value::String("1".into()), "tokenizer.ggml.bos_token_id: expected an integer token id, found a string"),
            ("tokenizer.ggml.eos_token_id", Value::I32(-1), "tokenizer.ggml.eos_token_id: expected a token id, found -1"),
            ("tokenizer.ggml.pre", Value::Bool(true), "tokenizer.ggml.pre: expected a string, found a bool"),
        ];
        for (key, value, expected) in cases {
            let mut meta = tiny_metadata();
            meta.insert(key.to_string(), value);
            let err = gguf_err(&meta);
            assert!(
                err.contains(expected),
                "{key}: expected {expected:?} in {err:?}"
            );
        }
    }

    #[test]
    fn gguf_unsupported_model_names_it() {
        let mut meta = tiny_metadata();
        meta.insert("tokenizer.ggml.model".into(), Value::String("llama".into()));
        let err = gguf_err(&meta);
        assert!(
            err.contains("\"llama\"") && err.contains("\"gpt2\"") && err.contains("from_file"),
            "{err}"
        );
    }

    #[test]
    fn gguf_unknown_pre_falls_back_with_warning() {
        let mut meta = tiny_metadata();
        meta.insert(
            "tokenizer.ggml.pre".into(),
            Value::String("mystery-pre".into()),
        );
        meta.insert("tokenizer.ggml.padding_token_id".into(), Value::U32(99));
        let tok = Tokenizer::from_gguf_metadata(&meta).unwrap();
        assert_eq!(tok.encode("ab", false).unwrap(), vec![3]);
        assert_eq!(tok.pad_id(), None);
        let w = tok.warnings().join("\n");
        assert!(w.contains("\"mystery-pre\"") && w.contains("GPT-2"), "{w}");
        assert!(
            w.contains("tokenizer.ggml.padding_token_id = 99 is outside the vocabulary"),
            "{w}"
        );
    }

    #[test]
    fn with_bos_overrides_and_checks() {
        let Some(tok) = neox() else { return };
        let tok = tok
            .with_bos(Some("<|padding|>"))
            .unwrap()
            .with_pad(None)
            .unwrap();
        assert_eq!((tok.bos_id(), tok.pad_id()), (Some(1), None));
        let err = tok.with_eos(Some("<nope>")).unwrap_err().to_string();
        assert!(
            err.contains("EOS token \"<nope>\" is not in the vocabulary"),
            "{err}"
        );
    }
}

mod tokenizer_json {
    use qi::tokenizer::Tokenizer;

    /// from_file reads BOS/EOS/PAD from a tokenizer_config.json beside the file; a token the
    /// config names but the vocabulary lacks is reported, not guessed.
    #[test]
    fn tokenizer_config_beside_the_file_names_special_tokens() {
        let dir = std::env::temp_dir().join(format!("qi-tokenizer-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let meta = std::collections::HashMap::from([
            (
                "tokenizer.ggml.model".to_string(),
                candle_core::quantized::gguf_file::Value::String("gpt2".into()),
            ),
            (
                "tokenizer.ggml.tokens".to_string(),
                strings(&["<|endoftext|>", "a", "b", "ab"]),
            ),
            ("tokenizer.ggml.merges".to_string(), strings(&["a b"])),
            (
                "tokenizer.ggml.eos_token_id".to_string(),
                candle_core::quantized::gguf_file::Value::U32(0),
            ),
        ]);
        let tiny = Tokenizer::from_gguf_metadata(&meta).unwrap();
        let json = dir.join("tokenizer.json");
        std::fs::write(&json, tiny.inner().to_string(false).unwrap()).unwrap();

        // Without a config: recognised by name.
        let tok = Tokenizer::from_file(&json).unwrap();
        assert_eq!(
            (tok.bos_id(), tok.eos_id(), tok.pad_id()),
            (Some(0), Some(0), None)
        );
        assert_eq!(
            tok.encode("abab<|endoftext|>", false).unwrap(),
            vec![3, 3, 0]
        );
        assert_eq!(tok.special_ids(), vec![0]);

        std::fs::write(
            dir.join("tokenizer_config.json"),
            r#"{"bos_token": {"content": "<|endoftext|>"}, "eos_token": "ab", "pad_token": "<nope>"}"#,
        )
        .unwrap();
        let tok = Tokenizer::from_file(&json).unwrap();
        assert_eq!(
            (tok.bos_id(), tok.eos_id(), tok.pad_id()),
            (Some(0), Some(3), None)
        );
        let w = tok.warnings().join("\n");
        assert!(
            w.contains("PAD token \"<nope>\" is not in the vocabulary"),
            "{w}"
        );

        std::fs::write(dir.join("tokenizer_config.json"), "{oops").unwrap();
        let tok = Tokenizer::from_file(&json).unwrap();
        assert_eq!(tok.bos_id(), Some(0));
        assert!(
            tok.warnings()
                .join("\n")
                .contains("tokenizer_config.json: not valid JSON"),
            "{:?}",
            tok.warnings()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn strings(items: &[&str]) -> candle_core::quantized::gguf_file::Value {
        use candle_core::quantized::gguf_file::Value;
        Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
    }
}
