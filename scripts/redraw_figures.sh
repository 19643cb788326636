#!/usr/bin/env bash
# Redraws the SmolLM2 figures of notebooks 01–08 (figures/0*_*.svg|html) and re-runs their
# findings from the committed results in data/results/ (what docs/findings.md prints), so every
# figure shows exactly the committed data. Notebook 01 computes its perplexities (8 windows); the
# others read their saved tables. Twins come from the twin cache (quantized once if missing).
# Usage: scripts/redraw_figures.sh [NOTEBOOK_NUMBER ...]   (default: all)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
R=../data/results  # notebooks run in notebooks/
run() { echo "== $1" >&2; ./dev notebooks "notebooks/$1.ipynb" "${@:2}"; }
nb() {
  case "$1" in
    01) run 01_quantizers_and_perplexity ;;
    02) run 02_activation_similarity -p results=$R/02_activations.parquet ;;
    03) run 03_attention_patterns -p results=$R/03_attention.parquet ;;
    04) run 04_logit_lens -p lens_results=$R/04_logit_lens.parquet -p ioi_results=$R/04_ioi_smollm2.parquet ;;
    05) run 05_induction_heads -p saved_results=$R/05_induction_smollm2.parquet ;;
    06) run 06_ablation_and_repair -p "saved_results=$R/06_{}_smollm2.parquet" ;;
    07) run 07_sae_features -p results=$R/07_sae_features_smollm2.parquet -p compare_results=$R/07_sae_compare_smollm2.parquet \
          -p prune_results=$R/07_prune_overlap_smollm2.parquet ;;
    08) run 08_neurons_and_calibration -p neurons_results=$R/08_neurons_smollm2.parquet \
          -p calibration_results=$R/08_calibration_smollm2.parquet -p salient_results=$R/08_salient_smollm2.parquet ;;
    *) echo "redraw_figures.sh: no notebook '$1' (01–08)" >&2; return 2 ;;
  esac
}
NBS=("$@"); [ ${#NBS[@]} -eq 0 ] && NBS=(01 02 03 04 05 06 07 08)
status=0
for n in "${NBS[@]}"; do nb "$n" || { echo "FAILED: notebook $n" >&2; status=1; }; done
exit $status
