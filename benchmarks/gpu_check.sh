#!/usr/bin/env bash
# edgevid's whole GPU check in one command (meant to take under 8 minutes on one NVIDIA GPU):
#
#     bash benchmarks/gpu_check.sh [OUT]     # OUT: artifacts, engines and results (default: a new temp folder)
#
# 1. TensorRT and a CUDA GPU must be usable here (else it stops at once, saying why);
# 2. the real-GPU tests, `pytest -m gpu`: every one must run (a skipped one fails this check);
# 3. TSM and X3D-XS-online stream artifacts exported for TensorRT in FP32, FP16 and INT8: `edgevid export`
#    builds each engine on this GPU and validates it against torch, then `edgevid bench` times the engine
#    the export shipped (a rebuild there fails this check).
# 4. many cameras: a dynamic-batch TSM stream export, `edgevid bench --streams 8` on TensorRT (an
#    optimization profile for batch 1..8): 8 streams batched in one call against 8 independent contexts.
# The first failure stops it with one line, "gpu_check: FAILED: <step>", under the tool's own message.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-$(mktemp -d -t edgevid-gpu-check.XXXXXX)}"
mkdir -p "$out"
export EDGEVID_CACHE="$out/cache"  # engines of this run only, never an earlier run's
fail() { echo "gpu_check: FAILED: $*" >&2; exit 1; }
step() { echo "gpu_check: $*" >&2; }

step "1/4 TensorRT and a GPU"
python - <<'EOF' || fail "no usable NVIDIA GPU with TensorRT here (the line above says why)"
import sys
from edgevid.export.tensorrt import engine_available
ok, why = engine_available()
if not ok:
    sys.exit(f"gpu_check: {why}")
from edgevid.runtime.backends import tensorrt as rt, tensorrt_engine as te
facts = te.device_facts(rt._tensorrt(), rt._cudart(), rt._check)
print(f"gpu_check: TensorRT {facts.tensorrt} on {facts.gpu} (sm {facts.compute_capability}), "
      f"CUDA runtime {facts.cuda_runtime}, driver {facts.cuda_driver}", file=sys.stderr)
EOF

step "2/4 pytest -m gpu"
python -m pytest tests -m gpu -q -p no:cacheprovider --junitxml="$out/gpu-tests.xml" || fail "pytest -m gpu"
python - "$out/gpu-tests.xml" <<'EOF' || fail "pytest -m gpu skipped tests"
import sys
import xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
suite = root.find("testsuite") if root.tag == "testsuites" else root
tests, skipped = int(suite.get("tests")), int(suite.get("skipped"))
if tests == 0 or skipped:
    sys.exit(f"gpu_check: {skipped} of {tests} gpu tests were skipped; each must run on a GPU")
EOF

for model in tsm x3d-xs-online; do
  for precision in fp32 fp16 int8; do
    art="$out/$model-$precision"
    calib=""
    if [ "$precision" = int8 ]; then calib="--calib-size 8"; fi
    step "3/4 export + bench: $model $precision"
    # shellcheck disable=SC2086  # $calib is empty or two words
    edgevid export --model "$model" --mode stream --target tensorrt --precision "$precision" $calib \
      -o "$art" --force -q || fail "edgevid export --model $model --precision $precision"
    edgevid bench "$art" --backend tensorrt --warmup 20 --iterations 200 --json -q > "$art.bench.json" \
      || fail "edgevid bench $art"
  done
done

python - "$out" <<'EOF' || fail "a bench did not run the engine its export shipped"
import json, pathlib, sys
rows, bad = [], []
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.bench.json")):
    r = json.loads(path.read_text())
    ran, lat = r["what_ran"], r["latency_ms"]
    rows.append(f"{r['model']:<24} {r['precision']:<5} {ran['engine']:<8} {lat['p50']:8.3f} {lat['p90']:8.3f} "
                f"{r['throughput']['calls_per_s']:9.1f}")
    if ran["engine"] != "shipped":
        bad.append(path.name)
print(f"{'model':<24} {'prec':<5} {'engine':<8} {'p50 ms':>8} {'p90 ms':>8} {'steps/s':>9}")
print("\n".join(rows))
if bad:
    sys.exit(f"gpu_check: {', '.join(bad)}: the engine was rebuilt instead of the export's")
EOF
step "4/4 many cameras: 8 streams batched on TensorRT"
edgevid export --model tsm --mode stream --target onnxruntime -o "$out/tsm-dynamic" --force -q \
  || fail "edgevid export --model tsm --target onnxruntime"
edgevid bench "$out/tsm-dynamic" --backend tensorrt --streams 8 --warmup 20 --iterations 200 -q \
  | tee "$out/tsm-streams8.txt" || fail "edgevid bench --streams 8 on tensorrt"
step "PASSED in ${SECONDS} s$([ "$SECONDS" -gt 480 ] && echo ' (over the 8 minutes it is meant to take)'); results in $out"
