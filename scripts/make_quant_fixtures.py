#!/usr/bin/env python3
"""Write the quantizer reference fixtures: one weight matrix quantized by the reference
implementations themselves, so qi's quantizers can be checked code for code.

Run by developers only (torch and bitsandbytes are not CI dependencies); the outputs under
data/fixtures/quant/ are committed.

    /path/to/venv/bin/python scripts/make_quant_fixtures.py

Writes:
  data/fixtures/quant/ggml.safetensors  gguf-py's `gguf.quants.quantize` / `dequantize` (the
      Python port of ggml-quants.c's reference row quantizers) for Q4_0, Q4_1, Q5_0, Q5_1, Q8_0:
      `weight` f32 [rows, cols]; `<type>.blocks` u8, the GGUF block bytes; `<type>.dequant` f32.
  data/fixtures/quant/bnb.safetensors  bitsandbytes on the CPU: `functional.quantize_4bit` /
      `dequantize_4bit` for nf4 and fp4, block 64, with and without `compress_statistics`
      (`<type>[_dq].codes` u8 unpacked one per weight, `.absmax` f32 as used to dequantize,
      `.dequant` f32), and `int8_vectorwise_quant` / `int8_vectorwise_dequant`
      (`int8.codes` the int8 codes as f32, `int8.absmax` f32 per row, `int8.dequant` f32).

Needs: numpy, safetensors, gguf; torch and bitsandbytes for the second file (skipped with a
message when absent).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

OUT = Path(__file__).resolve().parent.parent / "data" / "fixtures" / "quant"
GGML_TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"]


def weight() -> np.ndarray:
    """16 x 256 f32 with the cases a quantizer gets wrong: Gaussian rows of different scales, a
    heavy-tailed row, an all-zero block, a block whose extremes tie in magnitude with opposite
    signs, a constant block, a single outlier, tiny values, and values on the midpoint between two
    grid points of a block (rounding direction)."""
    rng = np.random.default_rng(20261205)
    w = rng.standard_normal((16, 256)).astype(np.float32) * 0.02
    w[1] *= 10.0
    w[2] = (rng.standard_t(2, 256) * 0.01).astype(np.float32)
    w[3, :64] = 0.0  # all-zero block (every type's block size divides 64)
    w[4, :32] = np.linspace(-0.5, 0.5, 32, dtype=np.float32)  # max and min tie in magnitude
    w[4, 32:64] = 0.0625  # constant block
    w[5, 100] = 3.0  # one outlier
    w[6] *= 1e-6  # tiny
    # row 7, block 0: absmax 1.27 so Q8_0's step is 0.01; values half-way between grid points
    w[7, :32] = (np.arange(32, dtype=np.float32) - 16.0) * 0.01 + 0.005
    w[7, 31] = 1.27
    return np.ascontiguousarray(w)


def ggml(w: np.ndarray) -> None:
    import gguf
    from gguf import GGMLQuantizationType, quants

    tensors = {"weight": w}
    for name in GGML_TYPES:
        qtype = getattr(GGMLQuantizationType, name)
        blocks = quants.quantize(w, qtype)
        tensors[f"{name.lower()}.blocks"] = np.ascontiguousarray(blocks.reshape(-1))
        tensors[f"{name.lower()}.dequant"] = np.ascontiguousarray(quants.dequantize(blocks, qtype).astype(np.float32))
    version = getattr(gguf, "__version__", None) or _dist_version("gguf")
    save_file(tensors, str(OUT / "ggml.safetensors"), metadata={"source": f"gguf-py {version} gguf.quants", "script": "scripts/make_quant_fixtures.py"})
    print(f"wrote {OUT / 'ggml.safetensors'} (gguf {version})")


def bnb(w: np.ndarray) -> None:
    try:
        import torch
        import bitsandbytes as bnb_mod
        import bitsandbytes.functional as F
    except ImportError as e:
        print(f"skipping bnb.safetensors: {e}")
        return
    t = torch.from_numpy(w.copy())
    tensors = {"weight": w}
    for qt in ["nf4", "fp4"]:
        for dq in [False, True]:
            packed, state = F.quantize_4bit(t, blocksize=64, quant_type=qt, compress_statistics=dq)
            deq = F.dequantize_4bit(packed, state)
            p = packed.reshape(-1).numpy()
            codes = np.empty(p.size * 2, dtype=np.uint8)
            codes[0::2] = p >> 4  # bitsandbytes packs the first value in the high nibble
            codes[1::2] = p & 0x0F
            if dq:
                # the 8-bit quantized statistics, as dequantize_4bit reconstructs them
                absmax = F.dequantize_blockwise(state.absmax, state.state2) + state.offset
            else:
                absmax = state.absmax
            key = qt + ("_dq" if dq else "")
            tensors[f"{key}.codes"] = codes[: w.size]
            tensors[f"{key}.absmax"] = absmax.float().numpy().reshape(-1)
            tensors[f"{key}.dequant"] = deq.float().numpy()
    cb, scb, _ = F.int8_vectorwise_quant(t)
    tensors["int8.codes"] = cb.numpy().astype(np.float32)  # candle reads no i8 from safetensors
    tensors["int8.absmax"] = scb.float().numpy()
    tensors["int8.dequant"] = F.int8_vectorwise_dequant(cb, scb).float().numpy()
    save_file(
        tensors,
        str(OUT / "bnb.safetensors"),
        metadata={"source": f"bitsandbytes {bnb_mod.__version__} (CPU), torch {torch.__version__}", "script": "scripts/make_quant_fixtures.py"},
    )
    print(f"wrote {OUT / 'bnb.safetensors'} (bitsandbytes {bnb_mod.__version__})")


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    w = weight()
    ggml(w)
    bnb(w)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
