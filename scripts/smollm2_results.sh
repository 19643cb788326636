#!/usr/bin/env bash
# The SmolLM2 tidy results behind docs/findings.md (data/results/0*_*.parquet), one step each,
# with the options the findings state. Usage:
#   scripts/smollm2_results.sh QI_BINARY [STEP ...]
# Steps (default: all, in this order): sae features activations attention logit-lens induction
#   calibration ioi ablation patching attribution neurons salient prune-overlap sae-compare
#   sae-relu features-relu sae-gated features-gated
# Twins come from the twin cache (QI_CACHE), so a step reuses what an earlier one quantized.
# The TopK SAE of `features` / `prune-overlap` is saved under QI_SAE_DIR (default: a cache
# folder); its config and report are copied to data/results/07_sae_topk_200k_*.json.
# Each step writes its parquet atomically and logs wall time and peak RSS (GNU time) on stderr.
set -uo pipefail
QI="$1"; shift
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/data/results"
MODEL="${QI_MODEL:-${QI_SHARED:-$ROOT/../shared}/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}"
SAE="${QI_SAE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/qi/saes/smollm2_topk_200k}"
NS=64
# The four twins most sections compare.
FOUR=(--quant "rtn:bits=4" --quant "rtn:bits=3"
      --quant "gptq:bits=4,samples=$NS,seqlen=512" --quant "gptq:bits=3,samples=$NS,seqlen=512")
# Feature survival over bit widths and methods; the g64 rows sit at AWQ-4 g64's bits per weight.
FEATURE_SPECS=(--quant "rtn:bits=8" --quant "rtn:bits=7" --quant "rtn:bits=6" --quant "rtn:bits=5"
  "${FOUR[@]}" --quant "gptq:bits=4,act_order=true,samples=$NS,seqlen=512"
  --quant "rtn:bits=4,group=64" --quant "gptq:bits=4,group=64,act_order=true,samples=$NS,seqlen=512"
  --quant "awq:bits=4,group=64,samples=32,seqlen=512" --quant nf4 --quant q4_0 --quant q8_0)
# 16 evaluation windows of 128 C4 tokens (2,032 scored tokens), as the SAE table states.
FEATURE_OPTS=(--set sae="$SAE" --set n_seqs=16 --set seq_len=128)

timed() { /usr/bin/time -f "  [%e s, peak %M KB]" "$@"; }
analyze() { # NAME FILE ARGS...
  local name="$1" file="$2"; shift 2
  timed "$QI" analyze "$name" --model "$MODEL" --name-as SmolLM2-135M-Instruct.Q4_1 --out "$OUT/$file" "$@"
}

step() {
  case "$1" in
    sae)
      # 400 steps × 512 tokens = 204,800 C4 training tokens, from the SAE-training split.
      timed "$QI" sae train --model "$MODEL" --variant topk --hook blocks.15.hook_resid_post \
        --set steps=400 --set batch_size=512 --set seq_len=128 --set seed=0 --out "$SAE" &&
      cp "$SAE/config.json" "$OUT/07_sae_topk_200k_config.json" &&
      cp "$SAE/report.json" "$OUT/07_sae_topk_200k_report.json" ;;
    sae-relu|sae-gated)
      # the ReLU and Gated SAEs of the variant rows (L1 = 1), same hook, budget and split as the TopK one
      local v="${1#sae-}" dir="${SAE}_${1#sae-}"
      timed "$QI" sae train --model "$MODEL" --variant "$v" --hook blocks.15.hook_resid_post --set l1=1 \
        --set steps=400 --set batch_size=512 --set seq_len=128 --set seed=0 --out "$dir" &&
      cp "$dir/config.json" "$OUT/07_sae_${v}_200k_config.json" &&
      cp "$dir/report.json" "$OUT/07_sae_${v}_200k_report.json" ;;
    features-relu|features-gated)
      local v="${1#features-}"
      analyze features "07_sae_features_${v}_smollm2.parquet" --quant "rtn:bits=8" --quant "rtn:bits=7" --quant "rtn:bits=6" --quant "rtn:bits=5" \
        "${FOUR[@]}" --set sae="${SAE}_${v}" --set n_seqs=16 --set seq_len=128 ;;
    features) analyze features 07_sae_features_smollm2.parquet "${FEATURE_SPECS[@]}" "${FEATURE_OPTS[@]}" ;;
    # One TopK SAE (4,608 features, k = 32) per model on 200 steps × 256 = 51,200 C4 training-split
    # tokens, plus a reference SAE from another seed; compared on the 16 × 128 evaluation windows.
    sae-compare) analyze sae-compare 07_sae_compare_smollm2.parquet --quant "rtn:bits=8" --quant "rtn:bits=4" --quant "rtn:bits=3" \
      --set n_seqs=16 --set seq_len=128 --set train_steps=200 --set seed_control=true ;;
    prune-overlap) analyze prune-overlap 07_prune_overlap_smollm2.parquet "${FOUR[@]}" "${FEATURE_OPTS[@]}" --set match_windows=4 --set match_seqlen=256 ;;
    activations) analyze activations 02_activations.parquet "${FOUR[@]}" ;;
    attention) analyze attention 03_attention.parquet "${FOUR[@]}" ;;
    logit-lens) analyze logit-lens 04_logit_lens.parquet "${FOUR[@]}" ;;
    induction) analyze induction 05_induction_smollm2.parquet "${FOUR[@]}" --seeds 5 ;;
    calibration) analyze calibration 08_calibration_smollm2.parquet "${FOUR[@]}" --set n_seqs=16 --set seq_len=128 ;;
    ioi) analyze ioi 04_ioi_smollm2.parquet "${FOUR[@]}" --set top_heads=0 ;;
    ablation) analyze ablation 06_ablation_smollm2.parquet "${FOUR[@]}" ;;
    patching) analyze patching 06_patching_smollm2.parquet "${FOUR[@]}" ;;
    attribution) analyze attribution 06_attribution_smollm2.parquet "${FOUR[@]}" --set measure_all=true ;;
    neurons) analyze neurons 08_neurons_smollm2.parquet "${FOUR[@]}" --set n_seqs=16 --set seq_len=128 --set layers='[0,5,10,15,20,25,29]' ;;
    salient) analyze salient-neurons 08_salient_smollm2.parquet --quant "rtn:bits=4" --quant "rtn:bits=3" \
      --quant "gptq:bits=4,samples=$NS,seqlen=512" --set n_seqs=16 --set seq_len=64 --set layers=3,9,15,21,27 --set ig_steps=8 ;;
    *) echo "smollm2_results.sh: unknown step '$1'" >&2; return 2 ;;
  esac
}

STEPS=("$@")
[ ${#STEPS[@]} -eq 0 ] && STEPS=(sae features activations attention logit-lens induction calibration ioi ablation patching attribution neurons salient prune-overlap sae-compare
  sae-relu features-relu sae-gated features-gated)
status=0
for s in "${STEPS[@]}"; do
  echo "== $s ($(date -u +%H:%M:%S))" >&2
  step "$s" || { echo "FAILED: $s" >&2; status=1; }
done
exit $status
