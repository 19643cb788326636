#!/usr/bin/env bash
# The whole study job, qi against the PyTorch pipeline it replaces, on the same machine in the same
# run: load the reference, quantize RTN-4 and GPTQ-4 (64 × 512 calibration tokens), induction over
# 5 seeds × 50 sequences and perplexity on 20 WikiText-2 windows, for the reference and both twins.
#   scripts/bench_job.sh QI_BINARY [MODEL]      (default: SmolLM2 from the shared folder)
# qi runs studies/peer_job.toml (its model replaced by MODEL) with no twin cache into a fresh
# results folder; torch runs scripts/peer_job_torch.py with $QI_TORCH_PYTHON (a python with torch,
# transformers, gguf, accelerate) on the tokens `qi inputs` exports, so both see the same data.
# They alternate for $ROUNDS rounds (default 2), each timed as a whole process (wall clock); the
# ratio is the median over rounds of qi / torch. Both sides' perplexities are printed so that a
# reader sees they computed the same thing. Prints one JSON line per round (for the `peers` report
# kind; `grep '^{'` keeps them) and the summary.
set -euo pipefail
QI="$1"; shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export QI_SHARED="${QI_SHARED:-$ROOT/../shared}"  # C4 and WikiText-2 for the calibration and perplexity windows
MODEL="${1:-${QI_SHARED:-$ROOT/../shared}/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}"
ROUNDS="${ROUNDS:-2}"
PY="${QI_TORCH_PYTHON:?set QI_TORCH_PYTHON to a python with torch, transformers, gguf and accelerate}"
MODEL="$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")"
[ -f "$MODEL" ] || { echo "bench_job.sh: $MODEL not found" >&2; exit 2; }
WORK="$(mktemp -d "${TMPDIR:-/tmp}/qi-bench-job.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
sed "s|^  { source = .*|  { source = \"$MODEL\", name = \"$(basename "$MODEL" .gguf)\" },|" "$ROOT/studies/peer_job.toml" > "$WORK/job.toml"
"$QI" inputs --model "$MODEL" --out "$WORK/inputs.json" 2>/dev/null
ms() { echo $(( $(date +%s%N) / 1000000 )); }
PEER="$("$PY" -c 'import torch, transformers; print(f"PyTorch {torch.__version__.split(chr(43))[0]} + transformers {transformers.__version__}")')"
lines=()
for r in $(seq 1 "$ROUNDS"); do
  t=$(ms)
  "$QI" study run "$WORK/job.toml" --no-cache --results "$WORK/results-$r" > "$WORK/qi-$r.log" 2>&1 ||
    { echo "bench_job.sh: qi failed, see below" >&2; tail -20 "$WORK/qi-$r.log" >&2; exit 1; }
  q=$(( $(ms) - t ))
  "$QI" study collect --results "$WORK/results-$r" --out "$WORK/qi-$r.parquet" > /dev/null 2>&1
  qppl=$("$QI" show "$WORK/qi-$r.parquet" --metric perplexity --columns spec,value 2>/dev/null | tail -n +3 | tr -d ' ' | tr '\n' ' ')
  # qi's time per stage from its cells' records, named as the torch side's stages: the reference's
  # load, each twin's quantization (charged to the first cell that used it) and each analysis
  qstages=$(python3 - "$WORK/results-$r" <<'PY'
import glob, json, sys
st = {}
for f in glob.glob(sys.argv[1] + "/*.json"):
    c = json.load(open(f))
    if "analysis_s" not in c:
        continue
    add = lambda k, v: st.__setitem__(k, round(st.get(k, 0.0) + v, 3))
    add("load", c.get("reference_load_s", 0.0))
    if c["spec"] != "none":
        add(c["spec"].split(":")[0], c.get("twin_s", 0.0))
    add(c["analysis"], c["analysis_s"])
print(json.dumps(st, sort_keys=True))
PY
)
  t=$(ms)
  tj=$("$PY" "$ROOT/scripts/peer_job_torch.py" --model "$MODEL" --inputs "$WORK/inputs.json" --threads "$(nproc)")
  tt=$(( $(ms) - t ))
  # one line per round for the `peers` report block (docs/performance.md)
  echo "{\"round\":$r,\"job\":\"whole job (load, RTN-4, GPTQ-4, induction, perplexity)\",\"model\":\"$MODEL\",\"peer\":\"$PEER\",\"qi_s\":$(( q / 1000 )).$(printf %03d $(( q % 1000 ))),\"peer_s\":$(( tt / 1000 )).$(printf %03d $(( tt % 1000 ))),\"qi_perplexity\":\"$qppl\",\"qi_stages_s\":$qstages,\"peer_detail\":$tj}"
  lines+=("$q $tt")
done
python3 - "${lines[@]}" <<'PY'
import statistics, sys
pairs = [tuple(float(x) / 1000 for x in s.split()) for s in sys.argv[1:]]
ratios = [q / t for q, t in pairs]
print(f"qi per round: {', '.join(f'{q:.0f}' for q, _ in pairs)} s; torch: {', '.join(f'{t:.0f}' for _, t in pairs)} s")
print(f"ratio qi/torch (median over rounds): {statistics.median(ratios):.2f}  (per round: {', '.join(f'{r:.2f}' for r in ratios)})")
PY
