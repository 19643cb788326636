#!/usr/bin/env python3
"""Outside reference for qi's AWQ (developer-only): llmcompressor's AWQModifier on SmolLM2.

Steps:
  1. draws N calibration windows of L tokens from the C4 validation parquet (seeded: a random
     document with at least L+1 tokens, then a random offset in it, as GPTQ's C4 sampler) and
     writes them as JSON (a list of token-id lists) so that qi calibrates on the same tokens;
  2. runs llmcompressor's AWQModifier + QuantizationModifier (int, asymmetric, group G, 4 bits,
     every Linear but lm_head) with those windows, on the CPU;
  3. writes the result as an HF directory whose linear weights are the dequantized (fake-quantized)
     values and whose norms are the smoothed ones, so qi can load and evaluate it.

Pinned versions: torch 2.15, transformers 5.25, llmcompressor 0.14.0.1 and compressed-tensors
0.20.0 installed with `pip install --no-deps` (plus loguru and datasets). llmcompressor pins its
calibration cache to page-locked memory, which needs a GPU: `pin_memory` is patched to a no-op.

Usage: /work/pyenv/bin/python scripts/awq_llmcompressor.py GGUF OUT_DIR WINDOWS_JSON
           [--samples 16] [--seqlen 512] [--seed 0] [--group 64] [--bits 4]
"""
import argparse
import json
import os
import random
import time

import pyarrow.parquet as pq
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

C4 = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "c4", "c4_validation_2k.parquet")


def c4_windows(tok, n, seqlen, seed, path):
    docs = pq.read_table(path, columns=["text"]).column("text").to_pylist()
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        ids = tok(docs[rng.randrange(len(docs))], add_special_tokens=False)["input_ids"]
        if len(ids) <= seqlen:
            continue
        start = rng.randrange(len(ids) - seqlen)
        out.append(ids[start : start + seqlen])
    return out


def save_hf(model, sd, tok, out):
    """An HF directory (safetensors, config.json, tokenizer) without any quantization config."""
    if model.config.tie_word_embeddings:
        sd.pop("lm_head.weight", None)
    os.makedirs(out, exist_ok=True)
    save_file(sd, os.path.join(out, "model.safetensors"))
    cfg = model.config.to_dict()
    cfg.pop("quantization_config", None)
    json.dump(cfg, open(os.path.join(out, "config.json"), "w"), indent=1)
    tok.save_pretrained(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("out")
    ap.add_argument("windows")
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--group", type=int, default=64)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--c4", default=C4)
    args = ap.parse_args()
    torch.manual_seed(0)

    # llmcompressor reads the model's config back from its directory: a GGUF is first written out
    # as an f32 HF directory (the dequantized weights qi's loader also computes)
    f32 = args.out.rstrip("/") + "-f32"
    if not os.path.exists(os.path.join(f32, "config.json")):
        d, f = os.path.split(os.path.abspath(args.gguf))
        tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
        m = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
        save_hf(m, {k: v.float().contiguous() for k, v in m.state_dict().items()}, tok, f32)
    tok = AutoTokenizer.from_pretrained(f32)
    model = AutoModelForCausalLM.from_pretrained(f32, dtype=torch.float32)
    model.eval()

    if os.path.exists(args.windows):
        windows = json.load(open(args.windows))
    else:
        windows = c4_windows(tok, args.samples, args.seqlen, args.seed, args.c4)
        json.dump(windows, open(args.windows, "w"))
    print(f"{len(windows)} windows x {len(windows[0])} tokens")

    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import QuantizationModifier
    from llmcompressor.modifiers.transform import AWQModifier
    from llmcompressor.pipelines.cache import IntermediatesCache
    from compressed_tensors.quantization import QuantizationArgs, QuantizationScheme
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize

    IntermediatesCache.pin_memory = lambda self, *a, **k: None  # no GPU: nothing to pin

    ds = Dataset.from_dict({"input_ids": windows, "attention_mask": [[1] * len(w) for w in windows]})
    scheme = QuantizationScheme(
        targets=["Linear"],
        weights=QuantizationArgs(num_bits=args.bits, type="int", symmetric=False, strategy="group", group_size=args.group),
    )
    recipe = [AWQModifier(), QuantizationModifier(config_groups={"group_0": scheme}, ignore=["lm_head"])]
    t0 = time.time()
    oneshot(model=model, processor=tok, dataset=ds, recipe=recipe, max_seq_length=args.seqlen, num_calibration_samples=len(windows))
    print(f"llmcompressor AWQ: {time.time() - t0:.0f} s")

    # dequantized weights: what the quantized checkpoint computes
    sd = {}
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.Linear) and hasattr(m, "weight_scale"):
                qa = m.quantization_scheme.weights
                sd[name + ".weight"] = fake_quantize(m.weight, m.weight_scale, m.weight_zero_point, qa).float().contiguous()
        for k, v in model.state_dict().items():
            if k.endswith(".weight") and k not in sd and "weight_" not in k and k != "lm_head.weight":
                sd[k] = v.float().contiguous()
    save_hf(model, sd, tok, args.out)
    print(f"wrote {args.out}: {len(sd)} tensors")


if __name__ == "__main__":
    main()
