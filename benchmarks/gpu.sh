#!/usr/bin/env bash
# Every measurement of the GPU issue, run on the GPU machine from the project root, in two parts
# that each fit one device call (10 minutes):
#
#   bash benchmarks/gpu.sh studies   # real studies end to end with MLflow: workers per GPU, packing
#   bash benchmarks/gpu.sh engine    # bench.py on CUDA (reference vs engine, packing K=1..64),
#                                    # the GPU-only options on vs off, and the profiler
#
# It writes JSON, Markdown and logs to $OUT (the device tool's folder; ./gpu-out elsewhere), at
# most 8 files, and exits 1 naming every step that failed (the other steps still run).
# QUICK=1 checks the script anywhere in a few minutes (tiny studies, few repeats): not a measurement.
# results/gpu.md was written from the folders brought back (a generator for it is still to be written).
# MLflow and Optuna travel as wheels in .whl/ (../shared/gpu/fetch-wheels.sh); the machine has torch.
set -uo pipefail
part=${1:?usage: gpu.sh studies|engine}
out=${OUT:-$PWD/gpu-out}
mkdir -p "$out"
if ! python3 -c 'import mlflow, optuna' 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
    || { echo "gpu.sh: the wheels in .whl/ did not install" >&2; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
fi
# Fail before any measurement when a carried package is missing (a trial's worker would only say it later).
python3 -c 'import mlflow, optuna, mlflow.entities, ablate.tracking._tracker' \
  || { echo "gpu.sh: MLflow or Optuna does not import: a wheel is missing from .whl/" >&2; exit 1; }
export PYTHONUNBUFFERED=1 ABLATE_DATA_DIR=$PWD/data
failed=()
step() {  # step NAME COMMAND...: run it, its output to the terminal and to $out/NAME.log
  local name=$1 started=$SECONDS
  shift
  echo "=== $name: $*"
  if "$@" 2>&1 | tee "$out/$name.log"; then
    echo "=== $name: ok, $((SECONDS - started)) s"
  else
    echo "=== $name: FAILED after $((SECONDS - started)) s"
    failed+=("$name")
  fi
}
python3 - > "$out/env.json" <<'PY'
import json, platform, shutil, subprocess, torch
query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
smi = subprocess.run(query, capture_output=True, text=True).stdout.strip() if shutil.which("nvidia-smi") else None
print(json.dumps({"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "nvidia_smi": smi,
                  "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
                  "cpu_count": __import__("os").cpu_count()}))
PY
cat "$out/env.json"
case $part in
  studies)
    step studies python3 benchmarks/studies.py --json "$out/studies.json" \
      ${QUICK:+--quick --variants linearity:1 ablations:1:16} ;;
  engine)
    ks=1,4,16,64 repeats=2
    [ -n "${QUICK:-}" ] && ks=1,2 repeats=1
    step epochs timeout 150 python3 benchmarks/bench.py --sections epochs --repeats $repeats \
      --json "$out/epochs.json" --out /tmp/epochs.md
    step options timeout 300 python3 benchmarks/gpu_options.py --json "$out/options.json" ${QUICK:+--quick}
    step packing timeout 170 python3 benchmarks/bench.py --sections packing --ks $ks --repeats 1 \
      --json "$out/packing.json" --out /tmp/packing.md ;;
  *) echo "gpu.sh: unknown part $part (studies or engine)" >&2; exit 2 ;;
esac
if [ ${#failed[@]} -gt 0 ]; then
  echo "gpu.sh $part: FAILED steps: ${failed[*]}" >&2
  exit 1
fi
echo "gpu.sh $part: every step ok"
