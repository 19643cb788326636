#!/usr/bin/env python3
"""Write the Hugging Face reference fixtures that qi's tests compare against.

Run by developers only (torch is not a CI dependency); the outputs under data/fixtures/ are
committed. See data/fixtures/README.md for the layout and conventions.

    /path/to/venv/bin/python scripts/make_fixtures.py            # everything
    /path/to/venv/bin/python scripts/make_fixtures.py --only llama,smollm2
    /path/to/venv/bin/python scripts/make_fixtures.py --only qwen2,qwen2.5-coder

Needs: torch, transformers (5.x), safetensors, numpy, gguf, and accelerate (for the SmolLM2
part, which loads a GGUF file through transformers).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
from collections import Counter
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

import gguf
import transformers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    Qwen2Config,
)

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "data" / "fixtures"
SHARED = Path(os.environ.get("QI_SHARED", ROOT.parent / "shared"))
SMOLLM2_DIR = SHARED / "models" / "smollm2-135m-instruct"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

BATCH, SEQ = 2, 16
VOCAB = 320

# Re-initialisation (instead of HF's tiny-std init, which makes attention near-uniform).
WEIGHT_STD = 0.25  # target std of matrix weights and embeddings ...
WEIGHT_GAIN = 2.0  # ... capped at WEIGHT_GAIN / sqrt(fan_in) so activations stay bounded
NORM_STD = 0.1  # norm weights: 1 + NORM_STD * N(0, 1)
BIAS_STD = 0.1  # biases: BIAS_STD * N(0, 1)

# Files save_pretrained may write that a loader does not need.
KEEP_FILES = {"config.json", "model.safetensors", "generation_config.json"}


# --------------------------------------------------------------------------------------------
# tiny random models


def tiny_configs() -> dict[str, tuple[transformers.PretrainedConfig, int]]:
    """name -> (config, seed). Seeds are fixed so each fixture is independent of the others."""
    common_neox = dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=64,
        vocab_size=VOCAB,
        hidden_act="gelu",
        tie_word_embeddings=False,
        attention_bias=True,
    )
    common_llama = dict(
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        max_position_embeddings=64,
        vocab_size=VOCAB,
        tie_word_embeddings=False,
    )
    return {
        # bos/eos default to 50256, outside this vocabulary; 0 keeps the config valid.
        "gpt2": (
            GPT2Config(
                n_embd=64, n_layer=2, n_head=4, n_positions=64, vocab_size=VOCAB,
                bos_token_id=0, eos_token_id=0,
            ),
            1001,
        ),
        "neox": (
            GPTNeoXConfig(**common_neox, rotary_pct=0.25, use_parallel_residual=True),
            1002,
        ),
        "neox-sequential": (
            GPTNeoXConfig(
                **common_neox, rotary_pct=0.5, rotary_emb_base=5000, use_parallel_residual=False
            ),
            1003,
        ),
        "llama": (LlamaConfig(**common_llama), 1004),
        "llama-tied": (
            LlamaConfig(
                **{**common_llama, "num_key_value_heads": 1, "num_hidden_layers": 3,
                   "tie_word_embeddings": True}
            ),
            1005,
        ),
    }


def expected_config_values(name: str) -> dict:
    """Values the saved config.json must express (checked after saving)."""
    if name == "gpt2":
        return {"n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 64, "vocab_size": VOCAB,
                "activation_function": "gelu_new", "tie_word_embeddings": True}
    if name.startswith("neox"):
        seq = name == "neox-sequential"
        return {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                "intermediate_size": 256, "max_position_embeddings": 64, "vocab_size": VOCAB,
                "hidden_act": "gelu", "tie_word_embeddings": False, "attention_bias": True,
                "use_parallel_residual": not seq,
                "rope_parameters.partial_rotary_factor": 0.5 if seq else 0.25,
                "rope_parameters.rope_theta": 5000 if seq else 10000}
    tied = name == "llama-tied"
    return {"hidden_size": 64, "intermediate_size": 160,
            "num_hidden_layers": 3 if tied else 2, "num_attention_heads": 4,
            "num_key_value_heads": 1 if tied else 2, "head_dim": 16,
            "rope_parameters.rope_theta": 100000.0, "rms_norm_eps": 1e-5,
            "max_position_embeddings": 64, "vocab_size": VOCAB, "hidden_act": "silu",
            "tie_word_embeddings": tied}


def check_config_json(path: Path, expected: dict) -> None:
    cfg = json.loads(path.read_text())
    for key, want in expected.items():
        got = cfg
        for part in key.split("."):
            got = got[part]
        if isinstance(want, float):
            ok = math.isclose(got, want, rel_tol=1e-9)
        else:
            ok = got == want
        if not ok:
            raise SystemExit(f"{path}: {key} = {got!r}, expected {want!r}")


def reinit_(model: torch.nn.Module, seed: int) -> None:
    """Seeded re-initialisation of every parameter (tied parameters are visited once)."""
    gen = torch.Generator().manual_seed(seed)
    conv1d = transformers.pytorch_utils.Conv1D
    fan_in_dim = {}
    for mod_name, mod in model.named_modules():
        if isinstance(mod, conv1d):
            fan_in_dim[f"{mod_name}.weight"] = 0  # GPT-2 Conv1D stores [in, out]
        elif isinstance(mod, torch.nn.Linear):
            fan_in_dim[f"{mod_name}.weight"] = 1  # nn.Linear stores [out, in]
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            if name.endswith("bias"):
                p.copy_(BIAS_STD * noise)
            elif p.ndim == 1:  # LayerNorm / RMSNorm weight
                p.copy_(1.0 + NORM_STD * noise)
            elif name in fan_in_dim:
                fan_in = p.shape[fan_in_dim[name]]
                p.copy_(min(WEIGHT_STD, WEIGHT_GAIN / math.sqrt(fan_in)) * noise)
            else:  # embeddings (token, position)
                p.copy_(WEIGHT_STD * noise)


def make_input_ids(seed: int, vocab: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (BATCH, SEQ), generator=gen, dtype=torch.int64)
    assert not torch.equal(ids[0], ids[1])
    return ids


def final_norm(model) -> torch.nn.Module:
    base = model.base_model
    for attr in ("ln_f", "final_layer_norm", "norm"):
        if hasattr(base, attr):
            return getattr(base, attr)
    raise AssertionError("no final norm")


def decoder_layers(model):
    base = model.base_model
    for attr in ("h", "layers"):
        if hasattr(base, attr):
            return getattr(base, attr)
    raise AssertionError("no layer list")


@torch.no_grad()
def run_reference(model, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """input_ids, logits, hidden_states.{i}, attentions.{l} as in HF (float32, no mask)."""
    n_layers = model.config.num_hidden_layers
    # Capture the raw output of the last decoder layer to check HF's hidden_states[-1] semantics.
    raw = {}

    def hook(_mod, _args, out):
        raw["last"] = out[0] if isinstance(out, tuple) else out

    handle = decoder_layers(model)[-1].register_forward_hook(hook)
    try:
        out = model(input_ids=input_ids, output_hidden_states=True, output_attentions=True,
                    use_cache=False, return_dict=True)
    finally:
        handle.remove()
    hs, att = out.hidden_states, out.attentions
    assert len(hs) == n_layers + 1, len(hs)
    assert len(att) == n_layers, len(att)
    # HF semantics: hidden_states[-1] is the final-norm output, not the last layer's output.
    torch.testing.assert_close(hs[-1], final_norm(model)(raw["last"]), rtol=0, atol=0)
    ref = {"input_ids": input_ids.to(torch.int64).contiguous(),
           "logits": out.logits.float().contiguous()}
    for i, h in enumerate(hs):
        ref[f"hidden_states.{i}"] = h.float().contiguous()
    for l, a in enumerate(att):
        ref[f"attentions.{l}"] = a.float().contiguous()
    return ref


def describe(name: str, ref: dict[str, torch.Tensor]) -> str:
    logits = ref["logits"]
    n_att = sum(1 for k in ref if k.startswith("attentions."))
    maxp = torch.stack([ref[f"attentions.{l}"].amax(-1).mean() for l in range(n_att)])
    n_hs = sum(1 for k in ref if k.startswith("hidden_states."))
    hs_max = max(ref[f"hidden_states.{i}"].abs().max().item() for i in range(n_hs))
    return (f"{name}: |logit| max {logits.abs().max():.2f}, std {logits.std():.2f}; "
            f"mean max-attention-prob per layer {[round(x, 2) for x in maxp.tolist()]}; "
            f"|hidden| max {hs_max:.1f}")


def clean_dir(path: Path) -> None:
    for f in path.iterdir():
        if f.name not in KEEP_FILES:
            if f.is_dir():
                shutil.rmtree(f)
            else:
                f.unlink()


def make_tiny(name: str, config, seed: int, expected: dict | None = None):
    out = FIXTURES / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager",
                                             dtype=torch.float32)
    reinit_(model, seed)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    clean_dir(out)
    check_config_json(out / "config.json", expected or expected_config_values(name))

    # Reload from disk so the reference is exactly what a loader of this folder sees.
    loaded = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager",
                                                  dtype=torch.float32).eval()
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), (n1, n2)
    input_ids = make_input_ids(seed + 100, config.vocab_size)
    ref = run_reference(loaded, input_ids)
    torch.testing.assert_close(ref["logits"], run_reference(model, input_ids)["logits"],
                               rtol=0, atol=0)
    assert ref["logits"].abs().max() < 30
    save_file(ref, str(out / "reference.safetensors"))
    print(describe(name, ref))
    return loaded, input_ids


# --------------------------------------------------------------------------------------------
# GGUF (llama.cpp layout) for the tiny llama


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable unicode char table."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


BPE_TEXT = (
    "The quick brown fox jumps over the lazy dog. In the beginning there was the word, and the "
    "word was with the model, and the model was a transformer. Attention is all you need; the "
    "residual stream carries the information from one layer to the next, and the heads read "
    "from it and write to it. There are induction heads that attend to the token after the "
    "previous occurrence of the current token, and there are other heads that attend to the "
    "beginning of the sentence. The tokenizer splits the text into tokens, then the embedding "
    "turns them into vectors, and the unembedding turns the last vectors into logits."
)


def tiny_bpe(n_merges: int) -> tuple[list[str], list[str]]:
    """256 byte tokens (id == byte value) then n_merges merged tokens learned on BPE_TEXT."""
    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    words = Counter(
        tuple(b2u[b] for b in w.encode("utf-8"))
        for w in re.findall(r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+", BPE_TEXT)
    )
    merges: list[str] = []
    known = set(tokens)
    while len(merges) < n_merges:
        pairs: Counter = Counter()
        for w, c in words.items():
            for a, b in zip(w, w[1:]):
                if a + b not in known:
                    pairs[(a, b)] += c
        assert pairs, "BPE_TEXT too short for the requested merges"
        (a, b), _ = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        merges.append(f"{a} {b}")
        tokens.append(a + b)
        known.add(a + b)
        new_words: Counter = Counter()
        for w, c in words.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words[tuple(out)] += c
        words = new_words
    assert len(set(tokens)) == len(tokens)
    return tokens, merges


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute (HF rotate-half -> llama.cpp rotary rows)."""
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


Q8_TENSOR = "blk.1.ffn_down.weight"


def write_llama_gguf(model, path: Path) -> np.ndarray:
    """Write `model` (HF Llama) as llama.cpp would; returns the dequantized Q8_0 tensor."""
    cfg = model.config
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = cfg.hidden_size // n_head
    assert cfg.vocab_size == 256 + 64
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}

    tensors: list[tuple[str, np.ndarray]] = [("token_embd.weight", sd["model.embed_tokens.weight"])]
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        tensors += [
            (f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"]),
            (f"blk.{i}.attn_q.weight", llama_cpp_permute(sd[p + "self_attn.q_proj.weight"], n_head)),
            (f"blk.{i}.attn_k.weight", llama_cpp_permute(sd[p + "self_attn.k_proj.weight"], n_kv)),
            (f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"]),
            (f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"]),
            (f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"]),
            (f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"]),
            (f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"]),
            (f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"]),
        ]
    tensors += [("output_norm.weight", sd["model.norm.weight"]),
                ("output.weight", sd["lm_head.weight"])]

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_name("qi tiny llama fixture")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokens, merges = tiny_bpe(cfg.vocab_size - 256)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.NORMAL] * len(tokens))
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)

    deq = None
    for name, t in tensors:
        t = np.ascontiguousarray(t, dtype=np.float32)
        if name == Q8_TENSOR:
            q = gguf.quants.quantize(t, gguf.GGMLQuantizationType.Q8_0)
            deq = gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0).astype(np.float32)
            assert deq.shape == t.shape
            w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert deq is not None
    return deq


def check_gguf(path: Path, model, deq: np.ndarray) -> None:
    """Read the file back: shapes, types, values, and undo the permutation."""
    r = gguf.GGUFReader(str(path))
    cfg = model.config
    f = r.fields
    assert f["general.architecture"].contents() == "llama"
    assert f["llama.attention.head_count_kv"].contents() == cfg.num_key_value_heads
    assert len(f["tokenizer.ggml.tokens"].contents()) == cfg.vocab_size
    by_name = {t.name: t for t in r.tensors}
    for t in r.tensors:
        want = (gguf.GGMLQuantizationType.Q8_0 if t.name == Q8_TENSOR
                else gguf.GGMLQuantizationType.F32)
        assert t.tensor_type == want, (t.name, t.tensor_type)
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    q = np.array(by_name["blk.0.attn_q.weight"].data)
    k = np.array(by_name["blk.0.attn_k.weight"].data)

    def unpermute(w, n):  # transformers' reverse_permute_weights
        dim = w.shape[0] // n // 2
        return w.reshape(n, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)

    attn = model.model.layers[0].self_attn
    assert np.array_equal(unpermute(q, n_head), attn.q_proj.weight.detach().numpy())
    assert np.array_equal(unpermute(k, n_kv), attn.k_proj.weight.detach().numpy())
    qd = gguf.quants.dequantize(np.array(by_name[Q8_TENSOR].data), by_name[Q8_TENSOR].tensor_type)
    assert np.array_equal(qd, deq)
    err = np.abs(deq - model.model.layers[1].mlp.down_proj.weight.detach().numpy()).max()
    print(f"llama/model.gguf: {len(r.tensors)} tensors; {Q8_TENSOR} Q8_0 max |err| {err:.2e}")


def make_llama_gguf(model, input_ids: torch.Tensor) -> None:
    out = FIXTURES / "llama"
    path = out / "model.gguf"
    deq = write_llama_gguf(model, path)
    check_gguf(path, model, deq)
    # Reference for the GGUF: same model with blk.1 down_proj replaced by the Q8_0 values.
    config = model.config
    qmodel = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager",
                                                  dtype=torch.float32).eval()
    with torch.no_grad():
        qmodel.model.layers[1].mlp.down_proj.weight.copy_(torch.from_numpy(deq))
    ref = run_reference(qmodel, input_ids)
    save_file(ref, str(out / "reference_gguf.safetensors"))
    print(describe("llama (gguf, Q8_0 blk.1.ffn_down)", ref))

    # Independent check: transformers' own GGUF loader must reproduce that reference.
    try:
        gmodel = AutoModelForCausalLM.from_pretrained(
            out, gguf_file="model.gguf", attn_implementation="eager", dtype=torch.float32
        ).eval()
    except Exception as e:  # pragma: no cover - depends on the transformers version
        print(f"  (skipped transformers GGUF cross-check: {type(e).__name__}: {e})")
        return
    gref = run_reference(gmodel, input_ids)
    for key, val in ref.items():
        torch.testing.assert_close(gref[key], val, rtol=1e-5, atol=1e-5)
    assert config.num_key_value_heads == gmodel.config.num_key_value_heads
    print("  transformers' GGUF loader reproduces reference_gguf.safetensors")


# --------------------------------------------------------------------------------------------
# Qwen2: tiny random model (HF dir + GGUF) and the real Qwen2.5-Coder GGUFs


def qwen2_config() -> Qwen2Config:
    """Like Qwen2.5-0.5B in shape: GQA, q/k/v biases (always on in Qwen2), tied embeddings,
    rope theta 1e6, rms eps 1e-6, no sliding window."""
    return Qwen2Config(
        hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, rope_theta=1000000.0, rms_norm_eps=1e-6,
        max_position_embeddings=64, vocab_size=VOCAB, tie_word_embeddings=True,
        use_sliding_window=False, bos_token_id=0, eos_token_id=0,
    )


QWEN2_EXPECTED = {
    "model_type": "qwen2", "hidden_size": 64, "intermediate_size": 160, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 2, "rope_parameters.rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6, "max_position_embeddings": 64, "vocab_size": VOCAB,
    "hidden_act": "silu", "tie_word_embeddings": True, "use_sliding_window": False,
}
QWEN2_SEED = 1006


def write_qwen2_gguf(model, path: Path) -> np.ndarray:
    """Write the tiny Qwen2 as convert_hf_to_gguf.py's Qwen2Model would: arch `qwen2`, q/k rows
    NOT permuted (llama.cpp runs Qwen2 with NeoX-style rotary), biases as blk.N.attn_{q,k,v}.bias,
    tied embeddings (no output.weight). blk.1.ffn_down.weight is Q8_0; returns it dequantized."""
    cfg = model.config
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    tensors: list[tuple[str, np.ndarray]] = [("token_embd.weight", sd["model.embed_tokens.weight"])]
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        tensors += [
            (f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"]),
            (f"blk.{i}.attn_q.weight", sd[p + "self_attn.q_proj.weight"]),
            (f"blk.{i}.attn_q.bias", sd[p + "self_attn.q_proj.bias"]),
            (f"blk.{i}.attn_k.weight", sd[p + "self_attn.k_proj.weight"]),
            (f"blk.{i}.attn_k.bias", sd[p + "self_attn.k_proj.bias"]),
            (f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"]),
            (f"blk.{i}.attn_v.bias", sd[p + "self_attn.v_proj.bias"]),
            (f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"]),
            (f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"]),
            (f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"]),
            (f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"]),
            (f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"]),
        ]
    tensors.append(("output_norm.weight", sd["model.norm.weight"]))
    assert "lm_head.weight" not in sd or np.array_equal(sd["lm_head.weight"],
                                                        sd["model.embed_tokens.weight"])

    w = gguf.GGUFWriter(str(path), "qwen2")
    w.add_name("qi tiny qwen2 fixture")
    w.add_block_count(cfg.num_hidden_layers)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokens, merges = tiny_bpe(cfg.vocab_size - 256)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.NORMAL] * len(tokens))
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    w.add_add_bos_token(False)
    deq = None
    for name, t in tensors:
        t = np.ascontiguousarray(t, dtype=np.float32)
        if name == Q8_TENSOR:
            q = gguf.quants.quantize(t, gguf.GGMLQuantizationType.Q8_0)
            deq = gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0).astype(np.float32)
            w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert deq is not None
    return deq


def make_qwen2() -> None:
    model, input_ids = make_tiny("qwen2", qwen2_config(), QWEN2_SEED, QWEN2_EXPECTED)
    out = FIXTURES / "qwen2"
    attn = model.model.layers[0].self_attn
    assert attn.q_proj.bias.abs().min() > 0 and attn.o_proj.bias is None
    assert "lm_head.weight" not in safetensors_keys(out / "model.safetensors")  # tied
    path = out / "model.gguf"
    deq = write_qwen2_gguf(model, path)
    qmodel = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager",
                                                  dtype=torch.float32).eval()
    with torch.no_grad():
        qmodel.model.layers[1].mlp.down_proj.weight.copy_(torch.from_numpy(deq))
    ref = run_reference(qmodel, input_ids)
    save_file(ref, str(out / "reference_gguf.safetensors"))
    print(describe("qwen2 (gguf, Q8_0 blk.1.ffn_down)", ref))
    # Independent check: transformers' own GGUF loader reads the file to the same reference.
    gmodel = AutoModelForCausalLM.from_pretrained(
        out, gguf_file="model.gguf", attn_implementation="eager", dtype=torch.float32
    ).eval()
    assert gmodel.config.model_type == "qwen2" and gmodel.config.tie_word_embeddings
    gref = run_reference(gmodel, input_ids)
    for key, val in ref.items():
        torch.testing.assert_close(gref[key], val, rtol=1e-5, atol=1e-5)
    print("  transformers' GGUF loader reproduces qwen2/reference_gguf.safetensors")


def safetensors_keys(path: Path) -> set[str]:
    from safetensors import safe_open
    with safe_open(str(path), "pt") as f:
        return set(f.keys())


QWEN_MODELS = Path(os.environ.get("QI_MODELS", Path.home() / ".cache" / "qi" / "models"))
QWEN_GGUFS = {"0.5b": "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
              "1.5b": "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"}
QWEN_WIKI_TOKENS = 64  # WikiText-2 prefix length (token ids from transformers' tokenizer)
QWEN_LOGIT_POS = [0, 1, 7, 31, 63]  # positions whose logits are stored (in part, see below)
QWEN_VOCAB_SLICE = 4096  # logits of ids [0, 4096) at those positions ...
QWEN_TOP_K = 64  # ... plus the top 64 (ids and values) and the logsumexp over the whole vocabulary
QWEN_INDUCTION_LEN = 25  # r in [BOS] r r
QWEN_INDUCTION_SEED = 7


def wikitext_prefix() -> str:
    return (SHARED / "data" / "wikitext-2-raw" / "wiki.test.raw").read_text(encoding="utf-8")[:2000]


def induction_ids(tok, vocab: int) -> list[int]:
    """[BOS] r r with r = QWEN_INDUCTION_LEN ids drawn (seeded) from non-special ids < 32000."""
    gen = torch.Generator().manual_seed(QWEN_INDUCTION_SEED)
    special = set(tok.all_special_ids)
    r: list[int] = []
    while len(r) < QWEN_INDUCTION_LEN:
        t = int(torch.randint(0, min(vocab, 32000), (1,), generator=gen))
        if t not in special and t not in r:
            r.append(t)
    bos = tok.bos_token_id if tok.bos_token_id is not None else 151643
    return [bos] + r + r


@torch.no_grad()
def make_qwen_coder(size: str) -> None:
    """Reference logits and induction stripe scores of a real Qwen2.5-Coder GGUF (4-bit),
    loaded by transformers and dequantized to float32."""
    name = QWEN_GGUFS[size]
    path = QWEN_MODELS / name
    if not path.exists():
        print(f"qwen2.5-coder-{size}: {path} not found; skipped")
        return
    out = FIXTURES / f"qwen2.5-coder-{size}"
    out.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(QWEN_MODELS, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        QWEN_MODELS, gguf_file=name, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    cfg = model.config
    ids = tok(wikitext_prefix(), add_special_tokens=False)["input_ids"][:QWEN_WIKI_TOKENS]
    assert len(ids) == QWEN_WIKI_TOKENS
    logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0].float()
    ind = induction_ids(tok, cfg.vocab_size)
    o = model(input_ids=torch.tensor([ind]), output_attentions=True, use_cache=False)
    # Stripe score per head: mean over the second copy of the attention from position i to
    # i - r + 1 (the token after the previous occurrence of the current token).
    r = QWEN_INDUCTION_LEN
    qpos = torch.arange(r + 1, 2 * r + 1)
    scores = torch.stack([a[0][:, qpos, qpos - r + 1].mean(-1) for a in o.attentions]).float()
    at = logits[QWEN_LOGIT_POS]
    top = at.topk(QWEN_TOP_K, dim=-1)
    ref = {"input_ids": torch.tensor([ids], dtype=torch.int64),
           "logit_positions": torch.tensor(QWEN_LOGIT_POS, dtype=torch.int64),
           "logits_slice": at[:, :QWEN_VOCAB_SLICE].contiguous(),
           "top_ids": top.indices.to(torch.int64).contiguous(),
           "top_logits": top.values.contiguous(),
           "logsumexp": at.logsumexp(-1).contiguous(),
           "induction_ids": torch.tensor([ind], dtype=torch.int64),
           "induction_scores": scores.contiguous()}
    save_file(ref, str(out / "reference.safetensors"))
    meta = {
        "model": f"~/.cache/qi/models/{name}",
        "loaded_with": f"transformers {transformers.__version__} AutoModelForCausalLM."
                       "from_pretrained(gguf_file=..., dtype=float32), eager attention",
        "text": "shared/data/wikitext-2-raw/wiki.test.raw, first 2000 characters, "
                f"first {QWEN_WIKI_TOKENS} token ids of transformers' GGUF tokenizer, no BOS",
        "logit_positions": QWEN_LOGIT_POS,
        "logits_stored": f"ids [0, {QWEN_VOCAB_SLICE}) as logits_slice; top {QWEN_TOP_K} as "
                         "top_ids/top_logits; logsumexp over the full vocabulary",
        "induction": f"[BOS] r r, r = {r} seeded ids (seed {QWEN_INDUCTION_SEED}); score = mean "
                     "attention from i to i-r+1 over the second copy",
        "top_induction_heads": [[int(l), int(h), round(float(scores[l, h]), 4)]
                                for l, h in sorted(((l, h) for l in range(scores.shape[0])
                                                    for h in range(scores.shape[1])),
                                                   key=lambda x: -scores[x])[:10]],
    }
    (out / "reference.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"qwen2.5-coder-{size}: |logit| max {logits.abs().max():.2f}; "
          f"{int((scores > 0.4).sum())} heads with stripe score > 0.4")


# --------------------------------------------------------------------------------------------
# SmolLM2-135M-Instruct (real model, dequantized Q4_1 GGUF)

SMOLLM2_TEXT = "The capital of France is"
SMOLLM2_HIDDEN = [0, 1, 15, 29, 30]
SMOLLM2_ATTN = [0, 20]
SMOLLM2_NEW_TOKENS = 8


def check_smollm2_dequant(model, gguf_path: Path) -> None:
    """The model transformers loaded must be the GGUF's weights, dequantized exactly."""
    r = gguf.GGUFReader(str(gguf_path))
    by_name = {t.name: t for t in r.tensors}

    def deq(name):
        t = by_name[name]
        return torch.from_numpy(
            gguf.quants.dequantize(np.array(t.data), t.tensor_type).astype(np.float32)
        )

    cfg = model.config
    emb = deq("token_embd.weight")
    assert torch.equal(model.model.embed_tokens.weight, emb)
    assert torch.equal(model.lm_head.weight, emb)  # tied
    v = deq("blk.7.attn_v.weight")
    assert torch.equal(model.model.layers[7].self_attn.v_proj.weight, v)
    k = llama_cpp_permute(
        model.model.layers[7].self_attn.k_proj.weight.detach().numpy(), cfg.num_key_value_heads
    )
    assert np.array_equal(k, deq("blk.7.attn_k.weight").numpy())


@torch.no_grad()
def make_smollm2() -> None:
    gguf_path = SMOLLM2_DIR / SMOLLM2_FILE
    if not gguf_path.exists():
        print(f"smollm2: {gguf_path} not found; skipped")
        return
    out = FIXTURES / "smollm2"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    tok = AutoTokenizer.from_pretrained(SMOLLM2_DIR, gguf_file=SMOLLM2_FILE)
    model = AutoModelForCausalLM.from_pretrained(
        SMOLLM2_DIR, gguf_file=SMOLLM2_FILE, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    check_smollm2_dequant(model, gguf_path)

    ids = tok(SMOLLM2_TEXT, add_special_tokens=False)["input_ids"]
    bos_added = bool(ids) and ids[0] == tok.bos_token_id
    assert not bos_added
    input_ids = torch.tensor([ids], dtype=torch.int64)
    out_ = model(input_ids=input_ids, output_hidden_states=True, output_attentions=True,
                 use_cache=False, return_dict=True)
    assert len(out_.hidden_states) == model.config.num_hidden_layers + 1
    ref = {"input_ids": input_ids, "last_logits": out_.logits[0, -1].float().contiguous()}
    for i in SMOLLM2_HIDDEN:
        ref[f"hidden_states.{i}"] = out_.hidden_states[i].float().contiguous()
    for l in SMOLLM2_ATTN:
        ref[f"attentions.{l}"] = out_.attentions[l].float().contiguous()
    save_file(ref, str(out / "reference.safetensors"))

    # Greedy continuation by full recomputation (no cache, no generation config involved).
    seq = list(ids)
    for _ in range(SMOLLM2_NEW_TOKENS):
        logits = model(input_ids=torch.tensor([seq]), use_cache=False).logits
        seq.append(int(logits[0, -1].argmax()))
    new = seq[len(ids):]
    meta = {
        "model": f"shared/models/smollm2-135m-instruct/{SMOLLM2_FILE}",
        "loaded_with": f"transformers {transformers.__version__} "
                       "AutoModelForCausalLM.from_pretrained(gguf_file=..., dtype=float32), "
                       "weights dequantized to float32; eager attention",
        "text": SMOLLM2_TEXT,
        "bos_added": bos_added,
        "input_ids": ids,
        "tokens": tok.convert_ids_to_tokens(ids),
        "hidden_states": SMOLLM2_HIDDEN,
        "attentions": SMOLLM2_ATTN,
        "greedy_new_ids": new,
        "greedy_new_text": tok.decode(new),
        "greedy_full_text": tok.decode(seq),
    }
    (out / "reference.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
    print(f"smollm2: ids {ids}, |last logit| max {ref['last_logits'].abs().max():.2f}, "
          f"greedy {new} {tok.decode(new)!r}")


# --------------------------------------------------------------------------------------------
# Gemma 3 (text): tiny random Gemma3ForCausalLM, its GGUF, and the real Gemma 3 270M GGUF

GEMMA3_SEQ = 20  # longer than the sliding window, so local layers really mask
GEMMA3_WINDOW = 8
GEMMA3_LAYER_TYPES = ["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"]
GEMMA3_Q8_TENSOR = "blk.2.ffn_down.weight"
GEMMA3_REAL = Path.home() / ".cache" / "qi" / "models" / "gemma-3-270m-q4_k_m.gguf"
GEMMA3_REAL_TOKENS = 600  # WikiText-2 test prefix (transformers ids); > the 512-token window
GEMMA3_REAL_LAST = 8  # positions kept at the end of the prefix
GEMMA3_REAL_STRIDE = 16  # vocabulary stride of the kept logits
GEMMA3_REAL_HIDDEN = [0, 1, 9, 18]
GEMMA3_REAL_ATTN = [0, 5]


def gemma3_tiny_config():
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, max_position_embeddings=64,
        rms_norm_eps=1e-6, query_pre_attn_scalar=24, sliding_window=GEMMA3_WINDOW,
        layer_types=GEMMA3_LAYER_TYPES,
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 100000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 5000.0}},
        hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
        pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )


def gemma3_reinit_(model, seed: int) -> None:
    """reinit_, then Gemma norm weights w = 0.1·N(0, 1): the norm scale 1 + w is then ~1, and an
    implementation using w (or the GGUF's stored 1 + w) as the scale is far off."""
    reinit_(model, seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.sub_(1.0)


@torch.no_grad()
def make_gemma3():
    out = FIXTURES / "gemma3"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    seed = 1006
    config = gemma3_tiny_config()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=torch.float32)
    gemma3_reinit_(model, seed)
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    clean_dir(out)
    check_config_json(out / "config.json", {
        "model_type": "gemma3_text", "hidden_size": 64, "num_hidden_layers": 4, "head_dim": 32,
        "num_attention_heads": 4, "num_key_value_heads": 2, "query_pre_attn_scalar": 24,
        "sliding_window": GEMMA3_WINDOW, "layer_types": GEMMA3_LAYER_TYPES,
        "rope_parameters.full_attention.rope_theta": 100000.0,
        "rope_parameters.sliding_attention.rope_theta": 5000.0,
        "hidden_activation": "gelu_pytorch_tanh", "tie_word_embeddings": True,
        "final_logit_softcapping": None, "attn_logit_softcapping": None})
    loaded = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager",
                                                  dtype=torch.float32).eval()
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), (n1, n2)
    gen = torch.Generator().manual_seed(seed + 100)
    input_ids = torch.randint(0, VOCAB, (BATCH, GEMMA3_SEQ), generator=gen, dtype=torch.int64)
    ref = run_reference(loaded, input_ids)
    check_sliding_window(ref)
    assert ref["logits"].abs().max() < 30
    save_file(ref, str(out / "reference.safetensors"))
    print(describe("gemma3", ref))
    make_gemma3_gguf(loaded, input_ids)


def check_sliding_window(ref) -> None:
    """transformers' sliding-window mask: query q sees key k iff q - window < k <= q."""
    for l, kind in enumerate(GEMMA3_LAYER_TYPES):
        a = ref[f"attentions.{l}"]
        q = GEMMA3_SEQ - 1
        seen = (a[:, :, q, :] > 0).all(dim=(0, 1))
        first = q - GEMMA3_WINDOW + 1 if kind == "sliding_attention" else 0
        assert seen[first:].all() and not seen[:first].any(), (l, kind, seen)


def gemma3_gguf_tensors(model) -> list[tuple[str, np.ndarray]]:
    """HF tensors under llama.cpp's gemma3 names, as convert_hf_to_gguf.py writes them: every
    `*norm.weight` stored as 1 + w, q/k rows not permuted, no output.weight (tied)."""
    cfg = model.config
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    names = [("attn_norm", "input_layernorm"), ("attn_q", "self_attn.q_proj"),
             ("attn_k", "self_attn.k_proj"), ("attn_v", "self_attn.v_proj"),
             ("attn_output", "self_attn.o_proj"), ("attn_q_norm", "self_attn.q_norm"),
             ("attn_k_norm", "self_attn.k_norm"), ("post_attention_norm", "post_attention_layernorm"),
             ("ffn_norm", "pre_feedforward_layernorm"), ("ffn_gate", "mlp.gate_proj"),
             ("ffn_up", "mlp.up_proj"), ("ffn_down", "mlp.down_proj"),
             ("post_ffw_norm", "post_feedforward_layernorm")]
    shift = lambda hf, w: w + np.float32(1.0) if hf.endswith("norm.weight") else w
    tensors = [("token_embd.weight", sd["model.embed_tokens.weight"])]
    for i in range(cfg.num_hidden_layers):
        for g, hf in names:
            key = f"model.layers.{i}.{hf}.weight"
            tensors.append((f"blk.{i}.{g}.weight", shift(key, sd[key])))
    tensors.append(("output_norm.weight", shift("model.norm.weight", sd["model.norm.weight"])))
    return tensors


def write_gemma3_gguf(model, path: Path) -> np.ndarray:
    """The tiny Gemma 3 as llama.cpp's converter writes it (metadata keys of Gemma3Model's
    set_gguf_parameters), plus the layer pattern and the local rotary base under gguf-py's
    `attention.sliding_window_pattern` / `rope.freq_base_swa` keys: llama.cpp's gemma3 loader
    hard-codes a period of 6 and base 10000, which a 4-layer model with base 5000 cannot follow.
    No tokenizer (token ids only). Returns the dequantized Q8_0 tensor."""
    cfg = model.config
    w = gguf.GGUFWriter(str(path), "gemma3")
    w.add_name("qi tiny gemma3 fixture")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(cfg.num_attention_heads)
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_key_length(cfg.head_dim)
    w.add_value_length(cfg.head_dim)
    w.add_rope_freq_base(float(cfg.rope_parameters["full_attention"]["rope_theta"]))
    w.add_sliding_window(cfg.sliding_window)
    w.add_head_count_kv(cfg.num_key_value_heads)
    w.add_sliding_window_pattern([t == "sliding_attention" for t in cfg.layer_types])
    w.add_rope_freq_base_swa(float(cfg.rope_parameters["sliding_attention"]["rope_theta"]))
    w.add_vocab_size(cfg.vocab_size)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    deq = None
    for name, t in gemma3_gguf_tensors(model):
        t = np.ascontiguousarray(t, dtype=np.float32)
        if name == GEMMA3_Q8_TENSOR:
            q = gguf.quants.quantize(t, gguf.GGMLQuantizationType.Q8_0)
            deq = gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0).astype(np.float32)
            w.add_tensor(name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert deq is not None
    return deq


@torch.no_grad()
def make_gemma3_gguf(model, input_ids: torch.Tensor) -> None:
    out = FIXTURES / "gemma3"
    path = out / "model.gguf"
    deq = write_gemma3_gguf(model, path)
    r = gguf.GGUFReader(str(path))
    assert r.fields["general.architecture"].contents() == "gemma3"
    by_name = {t.name: t for t in r.tensors}
    assert np.array_equal(np.array(by_name["blk.0.attn_q_norm.weight"].data),
                          model.model.layers[0].self_attn.q_norm.weight.numpy() + np.float32(1))
    # The GGUF means what llama.cpp computes: scores scaled by 1/sqrt(key_length), not by the
    # HF config's query_pre_attn_scalar (which GGUF has no key for). Its reference is the HF model
    # with that scaling and the Q8_0 tensor.
    config = copy_config(model.config, query_pre_attn_scalar=model.config.head_dim)
    gmodel = AutoModelForCausalLM.from_config(config, attn_implementation="eager",
                                              dtype=torch.float32).eval()
    gmodel.load_state_dict(model.state_dict())
    gmodel.model.layers[2].mlp.down_proj.weight.copy_(torch.from_numpy(deq))
    ref = run_reference(gmodel, input_ids)
    check_sliding_window(ref)
    save_file(ref, str(out / "reference_gguf.safetensors"))
    print(describe("gemma3 (gguf, 1/sqrt(head_dim), Q8_0 blk.2.ffn_down)", ref))

    # transformers' GGUF loader must read back the HF weights (norms minus one, q/k unpermuted).
    try:
        tmodel = AutoModelForCausalLM.from_pretrained(out, gguf_file="model.gguf", dtype=torch.float32)
    except Exception as e:  # pragma: no cover - depends on the transformers version
        print(f"  (skipped transformers GGUF cross-check: {type(e).__name__}: {e})")
        return
    want = gmodel.state_dict()
    for name, t in tmodel.state_dict().items():
        if name in want:
            torch.testing.assert_close(t, want[name], rtol=0, atol=1e-6, msg=name)
    assert tmodel.config.sliding_window == GEMMA3_WINDOW
    print("  transformers' GGUF loader reads back the same weights")


def copy_config(config, **changes):
    c = type(config).from_dict({**config.to_dict(), **changes})
    return c


def wikitext_ids(tok, n: int) -> list[int]:
    """The first n ids of WikiText-2 test (lines joined with "\n\n", as the GPTQ protocol)."""
    path = SHARED / "data" / "wikitext-2-raw" / "wiki.test.raw"
    text = "\n\n".join(path.read_text(encoding="utf-8").split("\n"))
    ids = tok(text[:20000], add_special_tokens=True)["input_ids"]
    return ids[:n]


@torch.no_grad()
def make_gemma3_real() -> None:
    if not GEMMA3_REAL.exists():
        print(f"gemma3-real: {GEMMA3_REAL} not found; skipped")
        return
    out = FIXTURES / "gemma3-270m"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    d, f = GEMMA3_REAL.parent, GEMMA3_REAL.name
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    cfg = model.config
    assert cfg.query_pre_attn_scalar == cfg.head_dim == 256
    assert cfg.layer_types[5] == "full_attention" and cfg.layer_types[4] == "sliding_attention"
    ids = wikitext_ids(tok, GEMMA3_REAL_TOKENS)
    assert ids[0] == tok.bos_token_id == 2
    input_ids = torch.tensor([ids], dtype=torch.int64)
    o = model(input_ids=input_ids, output_hidden_states=True, output_attentions=True,
              use_cache=False, return_dict=True)
    # Full-vocabulary logits of 8 positions would be 8 MB: keep every 16th vocabulary entry, and
    # the top 10 (ids and values) over the whole vocabulary.
    last = o.logits[0, -GEMMA3_REAL_LAST:].float()
    top = last.topk(10, dim=-1)
    ref = {"input_ids": input_ids,
           "last_logits_every16": last[:, ::GEMMA3_REAL_STRIDE].contiguous(),
           "last_top_ids": top.indices.to(torch.int64).contiguous(),
           "last_top_logits": top.values.contiguous()}
    for i in GEMMA3_REAL_HIDDEN:
        ref[f"hidden_states.{i}"] = o.hidden_states[i][0, -GEMMA3_REAL_LAST:].float().contiguous()
    for l in GEMMA3_REAL_ATTN:
        ref[f"attentions.{l}"] = o.attentions[l][0, :, -GEMMA3_REAL_LAST:].float().contiguous()
    save_file(ref, str(out / "reference.safetensors"))
    meta = {
        "model": f"~/.cache/qi/models/{f}",
        "loaded_with": f"transformers {transformers.__version__} "
                       "AutoModelForCausalLM.from_pretrained(gguf_file=..., dtype=float32), eager",
        "text": "first ids of WikiText-2 test (raw, lines joined with \"\\n\\n\"), BOS first",
        "input_ids": ids,
        "last_positions": GEMMA3_REAL_LAST,
        "logits_vocab_stride": GEMMA3_REAL_STRIDE,
        "hidden_states": GEMMA3_REAL_HIDDEN,
        "attentions": GEMMA3_REAL_ATTN,
        "top1_last": int(o.logits[0, -1].argmax()),
    }
    (out / "reference.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"gemma3-real: {len(ids)} ids, |last logits| max {last.abs().max():.2f}, "
          f"top-1 of the last position {int(top.indices[-1, 0])}")


# --------------------------------------------------------------------------------------------


def main() -> None:
    names = list(tiny_configs()) + ["qwen2", "smollm2", "qwen2.5-coder", "gemma3", "gemma3-real"]
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(names)}")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else set(names)
    unknown = only - set(names)
    if unknown:
        ap.error(f"unknown fixture(s): {sorted(unknown)}")

    torch.manual_seed(0)
    torch.set_num_threads(1)  # bitwise-stable reductions across machines as far as torch allows
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"gguf {version('gguf')}, safetensors {version('safetensors')}, numpy {np.__version__}")
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for name, (config, seed) in tiny_configs().items():
        if name not in only:
            continue
        model, input_ids = make_tiny(name, config, seed)
        if name == "llama":
            make_llama_gguf(model, input_ids)
    if "qwen2" in only:
        make_qwen2()
    if "smollm2" in only:
        make_smollm2()
    if "gemma3" in only:
        make_gemma3()
    if "gemma3-real" in only:
        make_gemma3_real()
    if "qwen2.5-coder" in only:
        for size in QWEN_GGUFS:
            make_qwen_coder(size)


if __name__ == "__main__":
    sys.exit(main())
