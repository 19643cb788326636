#!/usr/bin/env python3
"""Reference token ids from Hugging Face for qi's tokenizer tests (developer-only, never run in CI).

Writes data/fixtures/tokenizers/{smollm2,gpt2,neox,gguf-pre-variants}.json as
[{"text": ..., "ids": [...]}, ...], every encoding WITHOUT BOS or any other added special token,
and wikitext2-test.json: token count, first ids and an FNV-1a checksum of the ids of the whole
WikiText-2 test split for each tokenizer.

    /work/venv/py/bin/python scripts/make_tokenizer_fixtures.py [--shared DIR]

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
"""
import argparse
import json
import os
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("QI_SHARED") or str(ROOT.parent / "shared")
    ap.add_argument("--shared", default=default, help="shared data folder (default: QI_SHARED or ../shared)")
    shared = Path(ap.parse_args().shared)
    if not shared.is_dir():
        raise SystemExit(f"shared data folder not found: {shared}")
    smollm2(shared)
    gpt2(shared)
    neox(shared)
    OUT.joinpath("wikitext2-test.json").write_text(json.dumps(WIKITEXT, indent=1) + "\n")
    print(f"wrote data/fixtures/tokenizers/wikitext2-test.json {WIKITEXT}")


if __name__ == "__main__":
    main()
