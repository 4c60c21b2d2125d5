#!/usr/bin/env bash
# The embedded model's recipe (issue 11) from stage 1d on, as one device call on a CUDA machine with no network:
# `emu3 tiny-world train` into gpu/run, its stages 1-1c taken from the shipped VQ (the output of stage 1c, copied into
# vq/, vq-compact/ and vq-decoder/, so the command resumes at stage 1d). The wheels travel in .whl/ (carry it):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     --platform any -d .whl transformers==5.24.0 diffusers==0.42.1 datasets==5.2.0 dill==0.4.1 \
#     multiprocess==0.70.19 peft==0.21.2 "importlib_metadata<9"
#   (and in .whl/alt: datasets==4.4.1 dill==0.4.0 multiprocess==0.70.18, for a machine whose pyarrow is < 24)
#
# Each stage's final folder (checkpoints left out) is packed into $OUT as soon as the command ends, also when
# TRAIN_SECONDS cuts it: a cut run resumes here from what came back (the command skips finished stages).
set -u
out=${OUT:-/tmp/tiny-gpu}
run=${RUN:-gpu/run}
mkdir -p "$out" "$run"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  >/dev/null 2>&1 || { echo "installing the carried wheels failed"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
if ! python3 -c "import datasets" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site-alt .whl/alt/*.whl \
    >/dev/null 2>&1 && export PYTHONPATH=/tmp/site-alt:$PYTHONPATH
fi
python3 -c "import torch, datasets, pyarrow, transformers; print(torch.__version__, torch.cuda.get_device_name(),
  'datasets', datasets.__version__, 'pyarrow', pyarrow.__version__, 'transformers', transformers.__version__)"
for stage in vq vq-compact vq-decoder; do
  [ -e "$run/$stage" ] || cp -r src/emu3_hf/assets/emu3-tiny/vq_model "$run/$stage"
done
start=$SECONDS
timeout "${TRAIN_SECONDS:-540}" python3 -c "import sys; from emu3_cli import main; sys.exit(main(sys.argv[1:]))" \
  tiny-world train -o "$run" --quiet "$@" > "$out/train.log" 2>&1
echo "train exit status $? after $((SECONDS - start)) s"
grep -v "Warning\|warn\|register_constant" "$out/train.log" | tail -15
for stage in vq-canonical lm pipeline pink-lora; do
  [ -d "$run/$stage" ] && tar -C "$run" --exclude='checkpoint-*' --exclude='vq-cache' -czf "$out/$stage.tgz" "$stage"
done
ls -la "$out"
