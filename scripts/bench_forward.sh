#!/usr/bin/env bash
# Forward-pass benchmark, qi vs PyTorch transformers on the same machine in the same run:
# SmolLM2, batch 8 x 128, caching every hook_resid_post and hook_pattern (torch: hidden states
# and attentions). Usage: scripts/bench_forward.sh QI_BINARY [MODEL] ; torch is taken from
# $QI_TORCH_PYTHON (a python with torch + transformers + gguf + accelerate); without it only qi runs.
# The two alternate for $ROUNDS rounds (default 3) of $RUNS timed runs each (default 5), so that
# a shared machine's slow and fast minutes fall on both; the reported ratio is the median over
# rounds of each round's median ratio. Each round prints one JSON line (`grep '^{'` keeps them)
# that the `peers` report kind of `qi report` renders.
set -euo pipefail
QI="$1"; shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL="${1:-${QI_SHARED:-$ROOT/../shared}/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}"
RUNS="${RUNS:-5}"
ROUNDS="${ROUNDS:-3}"
if [ -z "${QI_TORCH_PYTHON:-}" ]; then
  "$QI" bench-forward --model "$MODEL" --batch 8 --seq 128 --runs "$RUNS"
  echo "(set QI_TORCH_PYTHON to a python with torch+transformers to measure the ratio)"
  exit 0
fi
PEER="$("$QI_TORCH_PYTHON" -c 'import torch, transformers; print(f"PyTorch {torch.__version__.split(chr(43))[0]} + transformers {transformers.__version__}")')"
lines=()
for r in $(seq 1 "$ROUNDS"); do
  q=$("$QI" bench-forward --model "$MODEL" --batch 8 --seq 128 --runs "$RUNS")
  t=$("$QI_TORCH_PYTHON" "$ROOT/scripts/bench_forward_torch.py" --model "$MODEL" --batch 8 --seq 128 --runs "$RUNS" --threads 2)
  # one line per round for the `peers` report block (docs/performance.md)
  python3 - "$r" "$MODEL" "$PEER" "$q" "$t" <<'PY'
import json, sys
r, model, peer, q, t = sys.argv[1:]
q, t = json.loads(q), json.loads(t)
print(json.dumps({"round": int(r), "job": "forward 8 × 128, cached", "model": model, "peer": peer,
                  "qi_s": q["median_s"], "peer_s": t["median_s"], "qi": q, "peer_detail": t}, ensure_ascii=False))
PY
  lines+=("$q" "$t")
done
python3 - "${lines[@]}" <<'PY'
import json, statistics, sys
rows = [json.loads(s) for s in sys.argv[1:]]
pairs = list(zip(rows[0::2], rows[1::2]))
ratios = [q["median_s"] / t["median_s"] for q, t in pairs]
qs, ts = [q["median_s"] for q, _ in pairs], [t["median_s"] for _, t in pairs]
print(f"qi median per round: {', '.join(f'{x:.2f}' for x in qs)} s; torch: {', '.join(f'{x:.2f}' for x in ts)} s")
print(f"ratio qi/torch per round: {', '.join(f'{r:.2f}' for r in ratios)}")
print(f"ratio qi/torch (median over rounds): {statistics.median(ratios):.2f}   "
      f"(best runs: {min(q['min_s'] for q, _ in pairs) / min(t['min_s'] for _, t in pairs):.2f})")
PY
