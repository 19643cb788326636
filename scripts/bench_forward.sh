#!/usr/bin/env bash
# Forward-pass benchmark, qi vs PyTorch transformers on the same machine in the same run:
# SmolLM2, batch 8 x 128, caching every hook_resid_post and hook_pattern (torch: hidden states
# and attentions). Usage: scripts/bench_forward.sh QI_BINARY [MODEL] ; torch is taken from
# $QI_TORCH_PYTHON (a python with torch + transformers + gguf + accelerate); without it only qi runs.
set -euo pipefail
QI="$1"; shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL="${1:-${QI_SHARED:-$ROOT/../shared}/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}"
RUNS="${RUNS:-5}"
qi_json=$("$QI" bench-forward --model "$MODEL" --batch 8 --seq 128 --runs "$RUNS")
echo "$qi_json"
if [ -n "${QI_TORCH_PYTHON:-}" ]; then
  torch_json=$("$QI_TORCH_PYTHON" "$ROOT/scripts/bench_forward_torch.py" --model "$MODEL" --batch 8 --seq 128 --runs "$RUNS" --threads 2)
  echo "$torch_json"
  python3 - "$qi_json" "$torch_json" <<'PY'
import json, sys
q, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"ratio qi/torch (median): {q['median_s'] / t['median_s']:.2f}   (min: {q['min_s'] / t['min_s']:.2f})")
PY
else
  echo "(set QI_TORCH_PYTHON to a python with torch+transformers to measure the ratio)"
fi
