#!/usr/bin/env python3
"""Reference token ids from Hugging Face for qi's tokenizer tests (developer-only, never run in CI).

Writes data/fixtures/tokenizers/{smollm2,gpt2,neox,gguf-pre-variants}.json as
[{"text": ..., "ids": [...]}, ...], every encoding WITHOUT BOS or any other added special token,
and wikitext2-test.json: token count, first ids and an FNV-1a checksum of the ids of the whole
WikiText-2 test split for each tokenizer.

    /work/pyenv/bin/python scripts/make_tokenizer_fixtures.py [--shared DIR] [--models DIR] [--only NAME,...]

NAME is one of smollm2, gpt2, neox, real (the two real GGUF vocabularies below) and tiny-spm.
Needs transformers, tokenizers, gguf, numpy and (for the C4 and HumanEval texts) pyarrow.

Sources (all read from the shared data folder, QI_SHARED or ../shared beside the repo):
- smollm2: `AutoTokenizer.from_pretrained(dir, gguf_file=...)`. transformers ignores
  `tokenizer.ggml.pre = "smollm"` and keeps plain GPT-2 splitting, while SmolLM2's own
  tokenizer.json (and llama.cpp's "smollm") split every digit first. "ids" is therefore that same
  HF tokenizer with SmolLM2's real pre-tokenizer, Sequence[Digits(individual), ByteLevel]; where
  transformers' GGUF loader gives something else, its ids are kept as "hf_gguf_ids".
- gpt2: `GPT2Tokenizer.from_pretrained(dir)` on vocab.json + merges.txt, checked against a plain
  `tokenizers` BPE built from the same files. (transformers 5 silently ignores
  `GPT2TokenizerFast(vocab_file=, merges_file=)` and gives a one-token tokenizer.)
- neox: `tokenizers.Tokenizer.from_file("20B_tokenizer.json")`.
- gguf-pre-variants: the SmolLM2 GGUF vocabulary re-split with the llama-bpe (Llama 3) and qwen2
  pre-tokenizers as transformers and the models' tokenizer.json files define them; this only checks
  that qi's regexes for those `tokenizer.ggml.pre` values split text the same way.

Real GGUF vocabularies (from --models, default QI_MODELS or ~/.cache/qi/models):
- real-texts.json: a few hundred real strings, stored once: WikiText-2 test lines and headings, C4
  validation documents, HumanEval prompts, filled IOI templates, and hand-written cases (unicode,
  digits, whitespace runs, emoji and rare scripts that need SentencePiece's byte fallback, control
  characters, chat markup). Long texts are cut to a few hundred characters.
- gemma3.json / qwen2.5-coder.json: per text, the token count and FNV-1a checksum of the ids
  `AutoTokenizer.from_pretrained(dir, gguf_file=...)` gives without special tokens (the full ids
  for the hand-written cases), plus BOS facts (`add_special_tokens=True`). For Qwen, "ids" are
  transformers' Qwen2Tokenizer (NFC normalizer, as in Qwen's own tokenizer.json) over the GGUF's
  vocabulary; transformers' GGUF loader leaves NFC out, and where that changes the ids its result
  is kept as "hf_gguf".
- tiny-spm.json: a hand-made 20-token SentencePiece vocabulary written to a temporary GGUF and
  loaded by transformers as a Llama, a Gemma 3 and a Phi-3 file, with the ids of a few strings:
  qi's tests rebuild the same metadata in memory.
"""
import argparse
import json
import os
import tempfile
import unicodedata
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "data" / "fixtures" / "tokenizers"
SMOLLM2_DIR = "models/smollm2-135m-instruct"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "",
    "  leading and trailing spaces  ",
    "multiple   spaces\n\n\nand newlines\r\n\tand a tab\n",
    "12345 and 3.14, costs $1,000,000 in 2024",
    "digits after whitespace:  42 and\n\n7 and\t3 and x  9",
    "def f(x):\n    if x > 0:\n        return x ** 2  # square\n    return None\n",
    "Unicode: café naïve Ωμέγα 日本語 😀👍🏽 ½ ² ٣",
    "don't we'll they're I'M it's You'VE",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>Then, Mary and John went to the store.<|endoftext|>",
    # SmolLM2's vocabulary lacks the bytes 0x04, 0x1d and 0xf1: HF drops them, and so must we.
    "control \x04 and \x1d chars, plane-1 \U00040000 ok",
    " = Robert Boulter = \n Robert Boulter is an English film , television and theatre actor . He had a guest @-@ starring role in 2000 .\n",
]

# SmolLM2's tokenizer.json pre-tokenizer (also llama.cpp's "smollm": \p{N} first, then GPT-2's regex).
def smollm_pre():
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )


LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def fnv1a64(ids):
    """FNV-1a (64-bit) over the ids as little-endian u32 bytes: a dependency-free checksum Rust can repeat."""
    h = 0xCBF29CE484222325
    for i in ids:
        for b in int(i).to_bytes(4, "little"):
            h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def wikitext_summary(tok, shared):
    """Token count and checksum of the whole WikiText-2 test split, too big to store as ids."""
    text = (shared / "data" / "wikitext-2-raw" / "wiki.test.raw").read_text(encoding="utf-8")
    got = ids(tok, text)
    return {"n_tokens": len(got), "first_ids": got[:16], "fnv1a64": fnv1a64(got)}


WIKITEXT = {}


def ids(tok, text):
    return tok.encode(text, add_special_tokens=False).ids


def write(name, rows):
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)} ({len(rows)} entries)")


def write_rows(name, obj, rows_key):
    """Like `write`, but one line per row of obj[rows_key], to keep long id lists small."""
    OUT.mkdir(parents=True, exist_ok=True)
    head = {k: v for k, v in obj.items() if k != rows_key}
    body = ",\n".join("  " + json.dumps(r, ensure_ascii=False) for r in obj[rows_key])
    text = json.dumps(head, ensure_ascii=False, indent=1)[:-2] + f',\n "{rows_key}": [\n{body}\n ]\n}}\n'
    assert json.loads(text) == obj
    path = OUT / f"{name}.json"
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)} ({len(obj[rows_key])} {rows_key})")


def smollm2(shared):
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(str(shared / SMOLLM2_DIR), gguf_file=SMOLLM2_GGUF)
    gguf_loader = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    real = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    real.pre_tokenizer = smollm_pre()
    rows = []
    for text in TEXTS:
        row = {"text": text, "ids": ids(real, text)}
        # The transformers API itself, to be sure the backend copy above is what it uses.
        assert hf(text, add_special_tokens=False)["input_ids"] == ids(gguf_loader, text)
        if ids(gguf_loader, text) != row["ids"]:
            row["hf_gguf_ids"] = ids(gguf_loader, text)
        rows.append(row)
    write("smollm2", rows)
    WIKITEXT["smollm2"] = wikitext_summary(real, shared)
    hf_gguf = wikitext_summary(gguf_loader, shared)
    if hf_gguf != WIKITEXT["smollm2"]:
        WIKITEXT["smollm2"]["hf_gguf"] = hf_gguf

    variants = []
    for pre, split, normalizer, ignore_merges in [
        ("llama-bpe", LLAMA3_SPLIT, None, True),
        ("qwen2", QWEN2_SPLIT, normalizers.NFC(), False),
    ]:
        spec = json.loads(hf.backend_tokenizer.to_str())
        spec["model"]["ignore_merges"] = ignore_merges
        tok = Tokenizer.from_str(json.dumps(spec))
        tok.normalizer = normalizer
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
            ]
        )
        variants.append({"pre": pre, "cases": [{"text": t, "ids": ids(tok, t)} for t in TEXTS]})
    write("gguf-pre-variants", variants)


def gpt2(shared):
    from transformers import GPT2Tokenizer

    d = shared / "tokenizers" / "gpt2"
    hf = GPT2Tokenizer.from_pretrained(str(d))
    assert len(hf) == 50257, len(hf)
    plain = Tokenizer(models.BPE.from_file(str(d / "vocab.json"), str(d / "merges.txt")))
    plain.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    plain.decoder = decoders.ByteLevel()
    plain.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    rows = []
    for text in TEXTS:
        got = hf(text, add_special_tokens=False)["input_ids"]
        assert got == ids(plain, text), text
        rows.append({"text": text, "ids": got})
    write("gpt2", rows)
    WIKITEXT["gpt2"] = wikitext_summary(plain, shared)


def neox(shared):
    tok = Tokenizer.from_file(str(shared / "tokenizers" / "gpt-neox-20b" / "20B_tokenizer.json"))
    write("neox", [{"text": t, "ids": ids(tok, t)} for t in TEXTS])
    WIKITEXT["neox"] = wikitext_summary(tok, shared)


# ---------------------------------------------------------------------------------------------
# Real GGUF vocabularies: Gemma 3 (SentencePiece) and Qwen2.5-Coder (byte-level BPE, qwen2 split).

GEMMA3_GGUF = "gemma-3-270m-q4_k_m.gguf"
QWEN_GGUF = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
QWEN_15B_GGUF = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"

# Hand-written cases on top of TEXTS: what real corpora rarely show but a tokenizer must get right.
HAND_TEXTS = TEXTS + [
    "<start_of_turn>user\nWrite a haiku about rain.<end_of_turn>\n<start_of_turn>model\n",
    "<bos>Hello<eos> and <pad><mask> [multimodal] <start_of_image>",
    "<|im_start|>system\nYou are Qwen, a coding assistant.<|im_end|>\n<|im_start|>user\nSort a list.<|im_end|>\n",
    "<|fim_prefix|>def add(a, b):\n    <|fim_suffix|>\n<|fim_middle|>return a + b<|endoftext|>",
    "a  b   c    d     e      f",
    " leading single space",
    "   ",
    "\n",
    "\n\n\n\n",
    "trailing newlines\n\n",
    "x\r\ny\rz\r\n\r\n",
    "\t\tindented\n\t\t\tmore\n" + "\t" * 35 + "deep",
    " " * 40 + "x" + " " * 17,
    "-" * 50 + "\n" + "=" * 33 + "\n" + "#" * 12,
    "3.14159265358979 1e-10 0x1F 1,234,567 000123 ٣٤٥ ①② 10²",
    "rare scripts need byte fallback: 𠀀𠀁 𓀀 ꙮ ᚠᛟ 〄 𞤀 🀄 🦩🧌🪬",
    "control chars: null\x00bell\x07 line\u2028sep tag\U000e0001 del\x7f",
    "Здравствуй, мир! Γειά σου Κόσμε! مرحبا بالعالم! שלום עולם! नमस्ते दुनिया! 你好，世界！こんにちは世界！안녕하세요 세계!",
    # Not NFC: Qwen's own tokenizer composes these first, transformers' GGUF loader does not.
    "cafe\u0301 vs caf\u00e9; A\u030a vs \u00c5; \ufb01 ligature; n\u0303",
    "a literal ▁ (U+2581) and ▁▁ two of them",
    "👨‍👩‍👧‍👦 family, 🏳️‍🌈 flag, ❤️ heart, 1️⃣ keycap, 👍🏿 tone",
    'fn main() {\n    println!("{}", 1 + 2);\n}\n',
    "if (x != y && z >= 0) { return a->b[i] << 2; } // C\n",
    "SELECT name, COUNT(*) FROM users WHERE id IN (1, 2, 3) GROUP BY name;",
    '<div class="x">&nbsp;&lt;tag&gt;</div>',
    "def f():\n    \n    \n    return {'a': [1,2,3]}\t# tab comment\n",
    "Mixed CASE Words AND ALLCAPS, camelCaseIdentifiers and snake_case_names, HTTPServer",
    "I'm sure it's fine, isn't it? 'quoted' \"double\" \u2019curly\u2019 \u201cquotes\u201d \u2014 dash \u2026",
]


def real_texts(shared):
    """[{"source", "text"}]: hand-written cases, then slices of the real corpora."""
    rows = [{"source": "hand", "text": t} for t in HAND_TEXTS]

    def spaced(items, n):
        return [items[i * len(items) // n] for i in range(n)] if len(items) > n else list(items)

    wiki = (shared / "data" / "wikitext-2-raw" / "wiki.test.raw").read_text(encoding="utf-8").split("\n")
    body = [(i, l) for i, l in enumerate(wiki) if len(l.strip()) >= 40 and not l.lstrip().startswith("=")]
    heads = [(i, l) for i, l in enumerate(wiki) if l.lstrip().startswith("= ")]
    for i, line in spaced(body, 110) + spaced(heads, 10):
        rows.append({"source": f"wikitext-2 test line {i + 1}", "text": line[:300] + "\n"})

    import pyarrow.parquet as pq

    c4 = pq.read_table(shared / "data" / "c4" / "c4_validation_2k.parquet").column("text").to_pylist()
    for i in spaced(range(len(c4)), 45):
        rows.append({"source": f"c4 validation doc {i}", "text": c4[i][:300]})
    he = pq.read_table(shared / "data" / "humaneval" / "humaneval_validation.parquet")
    prompts, ids_ = he.column("prompt").to_pylist(), he.column("task_id").to_pylist()
    for i in spaced(range(len(prompts)), 40):
        rows.append({"source": f"{ids_[i]} prompt", "text": prompts[i][:600]})

    ioi = json.loads((shared / "data" / "ioi" / "ioi_templates.json").read_text())
    names, places, objects = ioi["NAMES"], ioi["PLACES"], ioi["OBJECTS"]
    templates = ioi["BABA_TEMPLATES"] + ioi["ABBA_TEMPLATES"] + ioi["ABC_TEMPLATES"]
    for k, tmpl in enumerate(spaced(templates, 20)):
        a, b, c = (names[(3 * k + j) % len(names)] for j in range(3))
        text = (tmpl.replace("[A]", a).replace("[B]", b).replace("[C]", c)
                .replace("[PLACE]", places[k % len(places)]).replace("[OBJECT]", objects[k % len(objects)]))
        rows.append({"source": "ioi template", "text": text})
    return rows


def id_summary(got, full):
    row = {"n": len(got), "fnv1a64": fnv1a64(got)}
    if full:
        row["ids"] = got
    return row


def gguf_array(path, key):
    import gguf

    field = gguf.GGUFReader(path).fields[key]
    return [bytes(field.parts[i]).decode() if field.types[-1] == gguf.GGUFValueType.STRING
            else field.parts[i].tolist() for i in field.data]


def real_gguf(shared, models):
    import transformers
    from transformers import AutoTokenizer, Qwen2Tokenizer

    texts = real_texts(shared)
    about = ("Texts for the gemma3.json and qwen2.5-coder.json fixtures, made by "
             "scripts/make_tokenizer_fixtures.py; long ones cut to a few hundred characters.")
    write_rows("real-texts", {"about": about, "texts": texts}, "texts")
    for name, gguf_file in [("gemma3", GEMMA3_GGUF), ("qwen2.5-coder", QWEN_GGUF)]:
        if not (models / gguf_file).exists():
            raise SystemExit(f"{models / gguf_file} not found (see ../shared/notes/more-models.md)")
        hf = AutoTokenizer.from_pretrained(str(models), gguf_file=gguf_file)
        gguf_loader = Tokenizer.from_str(hf.backend_tokenizer.to_str())
        ref = gguf_loader
        if name == "qwen2.5-coder":
            # Qwen's own tokenizer (Qwen2Tokenizer, its tokenizer.json) normalizes to NFC first.
            assert type(Qwen2Tokenizer(vocab={"a": 0}, merges=[]).backend_tokenizer.normalizer).__name__ == "NFC"
            ref = Tokenizer.from_str(hf.backend_tokenizer.to_str())
            ref.normalizer = normalizers.NFC()
        cases, differs = [], {}
        for k, row in enumerate(texts):
            text = row["text"]
            got = ids(ref, text)
            hf_ids = hf(text, add_special_tokens=False)["input_ids"]
            assert hf_ids == ids(gguf_loader, text), text
            cases.append(id_summary(got, row["source"] == "hand"))
            if hf_ids != got:
                assert unicodedata.normalize("NFC", text) != text, text
                differs[str(k)] = id_summary(hf_ids, True)
        with_bos = hf("Hello", add_special_tokens=True)["input_ids"]
        plain = hf("Hello", add_special_tokens=False)["input_ids"]
        adds_bos = with_bos == [hf.bos_token_id] + plain
        assert adds_bos or with_bos == plain, (with_bos, plain)
        out = {
            "gguf": gguf_file,
            "made_with": f"transformers {transformers.__version__}, tokenizers {tokenizers_version()}",
            "texts": "real-texts.json",
            "bos_id": hf.bos_token_id,
            "adds_bos": adds_bos,
            "cases": cases,
        }
        if differs:
            out["hf_gguf"] = differs
        write_rows(name, out, "cases")
        n_tokens = sum(c["n"] for c in cases)
        print(f"  {name}: {n_tokens} tokens over {len(texts)} texts; adds_bos={adds_bos}; "
              f"transformers' GGUF loader differs on {len(differs)} texts")
        if name == "gemma3":
            types = gguf_array(str(models / gguf_file), "tokenizer.ggml.token_type")
            byte_ids = {i for i, t in enumerate(types) if t == [6]}
            hand_ids = [i for c in cases if "ids" in c for i in c["ids"]]
            n_byte = sum(i in byte_ids for i in hand_ids)
            assert n_byte > 0, "no hand-written case exercises byte fallback"
            print(f"  gemma3: {n_byte} byte-fallback ids in the hand-written cases")
        WIKITEXT[name] = wikitext_summary(ref, shared)
        hf_gguf = wikitext_summary(gguf_loader, shared)
        if hf_gguf != WIKITEXT[name]:
            WIKITEXT[name]["hf_gguf"] = hf_gguf

    big = models / QWEN_15B_GGUF
    if big.exists():
        for key in ["tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"]:
            assert gguf_array(str(big), key) == gguf_array(str(models / QWEN_GGUF), key), key
        print(f"  {QWEN_15B_GGUF} has the same tokens, merges and token types as {QWEN_GGUF}")


def tokenizers_version():
    import tokenizers

    return tokenizers.__version__


# ---------------------------------------------------------------------------------------------
# A hand-made SentencePiece vocabulary, small enough to reason about, where every rule shows.
# "bc" comes before "ab" in the file but scores lower: Llama/Phi-3 files merge by score (a b ->
# "ab" first), Gemma files by position ("bc" first). "  " (two real spaces, user-defined) is how
# Gemma files store space runs; Gemma's loader respells it "▁▁". Only three byte tokens exist, so
# "é" (C3 A9) falls back to bytes while "ü" (C3 BC) becomes <unk>.
TINY_SPM = [
    ("<pad>", 0.0, 3), ("<eos>", 0.0, 3), ("<bos>", 0.0, 3), ("<unk>", 0.0, 2),
    ("<0x20>", 0.0, 6), ("<0xC3>", 0.0, 6), ("<0xA9>", 0.0, 6),
    ("▁", -1.0, 1), ("a", -2.0, 1), ("b", -3.0, 1), ("c", -4.0, 1),
    ("bc", -10.0, 1), ("ab", -5.0, 1), ("  ", -1000.0, 4), ("▁b", -6.0, 1),
    ("<mark>", -1000.0, 4), ("<unused0>", -1000.0, 5), ("▁a", -7.0, 1),
]
TINY_TEXTS = [
    "abc", "a b", "a  b", "abc abc", " a", "", "é", "ü", "üü x", "a▁b",
    "<bos>a<mark>b<eos>", "<unused0>", "\u00e9a b",
]


def tiny_spm():
    import gguf
    import transformers
    from transformers import AutoTokenizer

    tokens, scores, types = (list(x) for x in zip(*TINY_SPM))
    out = {"tokens": tokens, "scores": scores, "token_types": types, "bos_id": 2, "eos_id": 1,
           "unk_id": 3, "pad_id": 0, "made_with": f"transformers {transformers.__version__}", "archs": {}}
    with tempfile.TemporaryDirectory() as d:
        for arch in ["llama", "gemma3", "phi3"]:
            w = gguf.GGUFWriter(f"{d}/{arch}.gguf", arch)
            w.add_tokenizer_model("llama")
            w.add_token_list(tokens)
            w.add_token_scores(scores)
            w.add_token_types(types)
            w.add_bos_token_id(2)
            w.add_eos_token_id(1)
            w.add_unk_token_id(3)
            w.add_pad_token_id(0)
            w.add_add_bos_token(True)
            w.write_header_to_file()
            w.write_kv_data_to_file()
            w.write_tensors_to_file()
            w.close()
            hf = AutoTokenizer.from_pretrained(d, gguf_file=f"{arch}.gguf")
            cases = [{"text": t, "ids": hf(t, add_special_tokens=False)["input_ids"]} for t in TINY_TEXTS]
            for c in cases:
                print(f"  tiny {arch}: {c['text']!r} -> {c['ids']}")
            out["archs"][arch] = cases
    write("tiny-spm", out)


ALL = ["smollm2", "gpt2", "neox", "real", "tiny-spm"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("QI_SHARED") or str(ROOT.parent / "shared")
    ap.add_argument("--shared", default=default, help="shared data folder (default: QI_SHARED or ../shared)")
    models = os.environ.get("QI_MODELS") or str(Path.home() / ".cache" / "qi" / "models")
    ap.add_argument("--models", default=models, help="folder of real GGUFs (default: QI_MODELS or ~/.cache/qi/models)")
    ap.add_argument("--only", default=",".join(ALL), help=f"comma-separated subset of {ALL}")
    args = ap.parse_args()
    shared, models = Path(args.shared), Path(args.models)
    only = args.only.split(",")
    if unknown := set(only) - set(ALL):
        raise SystemExit(f"--only: unknown {sorted(unknown)}; choose from {ALL}")
    if not shared.is_dir():
        raise SystemExit(f"shared data folder not found: {shared}")
    if "smollm2" in only:
        smollm2(shared)
    if "gpt2" in only:
        gpt2(shared)
    if "neox" in only:
        neox(shared)
    if "real" in only:
        real_gguf(shared, models)
    if "tiny-spm" in only:
        tiny_spm()
    if WIKITEXT:
        # Update only the tokenizers made in this run.
        path = OUT.joinpath("wikitext2-test.json")
        summaries = json.loads(path.read_text()) if path.exists() else {}
        summaries.update(WIKITEXT)
        path.write_text(json.dumps(summaries, indent=1) + "\n")
        print(f"wrote data/fixtures/tokenizers/wikitext2-test.json {WIKITEXT}")


if __name__ == "__main__":
    main()
