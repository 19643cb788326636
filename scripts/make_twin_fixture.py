#!/usr/bin/env python3
"""Write an externally quantized twin of the llama fixture, the way a llama.cpp user makes one:
every block linear of data/fixtures/llama/model.gguf quantized to Q8_0 by gguf-py's own quantizer
(`gguf.quants.quantize`, the Python port of ggml-quants.c), everything else and all metadata copied.
qi's tests load it with `twin:PATH` / `--twin PATH` and compare it with qi's own `q8_0` twin.

Run by developers only (gguf is not a CI dependency); the output is committed.

    /path/to/venv/bin/python scripts/make_twin_fixture.py

Writes data/fixtures/llama/twin-q8_0.gguf. Needs: numpy, gguf (0.19).
"""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import gguf
import numpy as np

DIR = Path(__file__).resolve().parent.parent / "data" / "fixtures" / "llama"
LINEAR = re.compile(r"^blk\.\d+\.(attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down)\.weight$")
# written by GGUFWriter itself
SKIP = {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count", "general.architecture"}


def main() -> None:
    src = gguf.GGUFReader(str(DIR / "model.gguf"))
    arch = src.fields["general.architecture"].contents()
    out = DIR / "twin-q8_0.gguf"
    w = gguf.GGUFWriter(str(out), arch)
    for key, field in src.fields.items():
        if key in SKIP:
            continue
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        w.add_key_value(key, field.contents(), vtype, sub_type=sub)
    n_q8 = 0
    for t in src.tensors:
        # numpy shape is the reverse of GGUF's: [rows, cols] for a [cols, rows] GGUF tensor
        shape = tuple(int(d) for d in reversed(t.shape))
        f32 = gguf.quants.dequantize(np.array(t.data), t.tensor_type).astype(np.float32).reshape(shape)
        if LINEAR.match(t.name):
            q = gguf.quants.quantize(f32, gguf.GGMLQuantizationType.Q8_0)
            w.add_tensor(t.name, q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
            n_q8 += 1
        else:
            w.add_tensor(t.name, f32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{out.relative_to(DIR.parent.parent.parent)}: {len(src.tensors)} tensors, {n_q8} Q8_0 (gguf {importlib.metadata.version('gguf')})")


if __name__ == "__main__":
    main()
