#!/usr/bin/env python3
"""Writes data/fixtures/bnb/dynamic_map.safetensors: bitsandbytes' signed 8-bit dynamic map
(`create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`), rebuilt here with torch
from that function's logic, so qi's Rust construction can be checked bit for bit against torch's
float32 linspace/mean arithmetic. Developer-only (needs torch + safetensors).

Usage: /work/venv/py/bin/python scripts/bnb_dynamic_map.py
"""
import os

import torch
from safetensors.torch import save_file


def dynamic_map(max_exponent_bits=7, total_bits=8):
    data = []
    non_sign_bits = total_bits - 1
    for i in range(max_exponent_bits):
        items = int(2 ** (i + non_sign_bits - max_exponent_bits) + 1)
        edges = torch.linspace(0.1, 1, items, dtype=torch.float32)
        mids = (edges[:-1] + edges[1:]) / 2.0
        data += ((10 ** (-(max_exponent_bits - 1) + i)) * mids).tolist()
        data += (-(10 ** (-(max_exponent_bits - 1) + i)) * mids).tolist()
    data.append(0)
    data.append(1.0)
    assert len(data) == 256
    data.sort()
    return torch.tensor(data, dtype=torch.float32)


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.join(here, "..", "data", "fixtures", "bnb", "dynamic_map.safetensors")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    m = dynamic_map()
    save_file({"code": m}, out)
    print(m[:4].tolist(), m[-4:].tolist())
    print("wrote", os.path.normpath(out))
