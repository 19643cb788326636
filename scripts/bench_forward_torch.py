#!/usr/bin/env python3
"""PyTorch peer for qi's forward-pass benchmark.

Loads SmolLM2-135M-Instruct from its GGUF file through transformers (weights dequantized to
float32, eager attention), builds a seeded batch of random non-special token ids, and times one
forward pass with output_hidden_states=True and output_attentions=True under
torch.inference_mode(): 1 warm-up run, then --runs timed runs. Prints one JSON line:

    {"impl":"torch","median_s":…,"min_s":…,"runs":…,"threads":…,"batch":8,"seq":128}

Needs torch, transformers, gguf, accelerate (not a CI dependency; run by developers).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = (Path(os.environ.get("QI_SHARED", ROOT.parent / "shared"))
                 / "models" / "smollm2-135m-instruct" / "SmolLM2-135M-Instruct.Q4_1.gguf")


def main() -> int:
    ap = argparse.ArgumentParser(description="PyTorch forward benchmark (qi's peer)")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="GGUF file")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--runs", type=int, default=5, help="timed runs (after 1 warm-up)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (default: torch's own choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--verbose", action="store_true", help="per-run times on stderr")
    args = ap.parse_args()
    if args.runs < 1:
        ap.error("--runs must be >= 1")

    os.environ.setdefault("TQDM_DISABLE", "1")  # transformers' GGUF de-quantization progress bar
    import gguf
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    path = args.model.resolve()
    if not path.is_file():
        print(f"bench_forward_torch: model not found: {path}", file=sys.stderr)
        return 2
    model = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32, attn_implementation="eager"
    ).eval()

    # Random ids over the normal (non-control) tokens listed in the GGUF.
    reader = gguf.GGUFReader(str(path))
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    allowed = torch.tensor([i for i, t in enumerate(types) if t == gguf.TokenType.NORMAL])
    gen = torch.Generator().manual_seed(args.seed)
    pick = torch.randint(0, len(allowed), (args.batch, args.seq), generator=gen)
    input_ids = allowed[pick]

    def forward():
        out = model(input_ids=input_ids, output_hidden_states=True, output_attentions=True,
                    use_cache=False)
        assert len(out.attentions) == model.config.num_hidden_layers
        return out

    times = []
    with torch.inference_mode():
        forward()  # warm-up
        for _ in range(args.runs):
            t0 = time.perf_counter()
            out = forward()
            times.append(time.perf_counter() - t0)
            del out
            if args.verbose:
                print(f"run {len(times)}: {times[-1]:.3f} s", file=sys.stderr)
    print(json.dumps({
        "impl": "torch",
        "median_s": round(statistics.median(times), 6),
        "min_s": round(min(times), 6),
        "runs": args.runs,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "seq": args.seq,
    }, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
