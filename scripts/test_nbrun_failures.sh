#!/usr/bin/env bash
# qi-nb on notebooks that fail (nbrun/tests/notebooks): a cell that panics and a kernel that is
# killed. Each run must exit 1, name the failing cell, keep the executed notebook with the error in
# that cell, and not run the cells after it. Needs the notebook tooling (./dev setup-notebooks).
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
fail() { echo "test_nbrun_failures: $*" >&2; exit 1; }
for nb in cell_fails kernel_dies; do
  set +e
  log="$(./dev notebooks "nbrun/tests/notebooks/$nb.ipynb" -o "$out" --cell-timeout 120 2>&1)"
  code=$?
  set -e
  [ "$code" -eq 1 ] || { echo "$log"; fail "$nb: exit status $code, expected 1"; }
  grep -q "!! cell 1 " <<<"$log" || { echo "$log"; fail "$nb: the failing cell (index 1, the second) is not named"; }
  python3 - "$out/$nb.ipynb" "$nb" <<'PY' || fail "$nb: executed notebook check failed"
import json, sys
path, name = sys.argv[1], sys.argv[2]
cells = json.load(open(path))["cells"]
out = lambda c: "".join("".join(o.get("text", "")) + o.get("ename", "") + o.get("evalue", "") for o in c.get("outputs", []))
assert "first cell ran" in out(cells[0]), f"{name}: cell 1 output missing: {cells[0].get('outputs')}"
errs = [o for o in cells[1].get("outputs", []) if o.get("output_type") == "error"]
assert errs, f"{name}: cell 2 has no error output: {cells[1].get('outputs')}"
assert not cells[2].get("outputs"), f"{name}: cell 3 ran after the failure"
print(f"{name}: exit 1, the failing cell (index 1) named, executed notebook kept with {errs[0].get('ename')}: {errs[0].get('evalue', '')[:80]!r}")
PY
done
