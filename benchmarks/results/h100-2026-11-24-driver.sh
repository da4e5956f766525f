#!/bin/bash
# (Kept as a record of the 2026-11-24 H100 session. It ran from the repo root with .gpu/ holding: whl/ (av, webdataset,
# braceexpand, deepspeed 0.19.8 and its pydantic/hjson needs, transformers 5.20.2, typing-extensions), bench/ (these
# benchmarks), cli.py (h100-2026-11-24-cli.py here) and patched/ (an experimental copy of iv2_kernels, p_* items).)
# GPU driver: bash .gpu/run.sh ITEM... (run from the repo root). Each item's output goes to $LOG/<item>.log,
# one summary line per item; after every item all logs are packed into $OUT/logs.tgz (+ summary.txt).
set +e
ROOT=$PWD
G=$ROOT/.gpu
OUT=${OUT:-/tmp/out}
LOG=/tmp/gpulogs
DRY=${DRY:-0}
mkdir -p "$LOG" "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
if [ "$DRY" = 1 ]; then
    PY=(uv run python)
else
    PY=(python3)
    if [ ! -f /tmp/site/.done ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            "$G"/whl/*.whl > "$LOG/pip.log" 2>&1 && touch /tmp/site/.done
        echo "pip install rc=$?" >> "$LOG/summary.txt"
    fi
    # our packages read their own version from installed metadata: give each a minimal dist-info
    for pp in "$ROOT"/pyproject.toml "$ROOT"/packages/*/pyproject.toml; do
        n=$(grep -m1 '^name = ' "$pp" | cut -d'"' -f2); v=$(grep -m1 '^version = ' "$pp" | cut -d'"' -f2)
        d=/tmp/site/${n//-/_}-$v.dist-info; mkdir -p "$d"
        printf 'Metadata-Version: 2.1\nName: %s\nVersion: %s\n' "$n" "$v" > "$d/METADATA"
    done
    export PYTHONPATH=/tmp/site:$(ls -d "$ROOT"/packages/*/src | tr '\n' :)$ROOT/src
fi
B=$G/bench
STEPS=${STEPS:-50}

run() {  # run NAME TIMEOUT_S CMD...
    local name=$1 t=$2 start rc
    shift 2
    start=$(date +%s)
    echo "### $name: $*" > "$LOG/$name.log"
    timeout -k 10 "$t" "$@" >> "$LOG/$name.log" 2>&1
    rc=$?
    echo "$name rc=$rc $(( $(date +%s) - start ))s" | tee -a "$LOG/summary.txt"
    cp "$LOG/summary.txt" "$OUT/summary.txt"
    tar czf "$OUT/logs.tgz" -C "$LOG" .
    return $rc
}


item() {
    case $1 in
    env) run env 120 bash -c "nvidia-smi; ${PY[*]} -c 'import torch, triton, transformers, peft, deepspeed, av, webdataset; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"triton\", triton.__version__, \"transformers\", transformers.__version__, \"peft\", peft.__version__, \"deepspeed\", deepspeed.__version__, \"av\", av.__version__); print(torch.cuda.get_device_name(), torch.cuda.get_device_properties(0))'; nvcc --version | tail -2" ;;
    kernels_test) run kernels_test 300 "${PY[@]}" -m pytest -q -x -p no:cacheprovider packages/iv2-kernels/tests/test_cuda.py ;;
    cuda_check) run cuda_check 300 "${PY[@]}" packages/iv2-kernels/tests/cuda_check.py ;;
    rmsnorm) run rmsnorm 150 "${PY[@]}" "$B/kernels_rmsnorm.py" --device cuda --markdown ;;
    rmsnorm_res) run rmsnorm_res 150 "${PY[@]}" "$B/kernels_rmsnorm.py" --device cuda --residual --markdown ;;
    contrastive) run contrastive 200 "${PY[@]}" "$B/kernels_contrastive.py" --device cuda --dtype bfloat16 --batch 4096 12288 32768 --markdown ;;
    contrastive_f32) run contrastive_f32 60 "${PY[@]}" "$B/kernels_contrastive.py" --device cuda --dtype float32 --markdown ;;
    encoders) run encoders 300 "${PY[@]}" "$B/encoders_forward.py" --device cuda --dtype bfloat16 --batch 8 --iters 20 --models internvideo2-tiny internvideo2-b14 internvideo2-1b ;;
    encoders_compile) run encoders_compile 220 "${PY[@]}" "$B/encoders_forward.py" --device cuda --dtype bfloat16 --batch 8 --iters 20 --compile --models internvideo2-b14 internvideo2-1b ;;
    retrieval) run retrieval 300 "${PY[@]}" "$B/align_retrieval.py" --device cuda --sizes 1000 10000 --threads 4 --markdown ;;
    chat_tiny) run chat_tiny 200 "${PY[@]}" "$B/chat_batch.py" --device cuda --videos 32 --batch 8 ;;
    chat_wide) run chat_wide 300 "${PY[@]}" "$B/chat_batch.py" --device cuda --videos 64 --batch 8 --new-tokens 32 --llm-hidden 4096 --llm-layers 4 --llm-dtype bfloat16 ;;
    align_step) run align_step 200 "${PY[@]}" "$B/align_step.py" --device cuda --precision bf16 --repeats 20 --markdown ;;
    distill_step) run distill_step 200 "${PY[@]}" "$B/distill_step.py" --device cuda --rounds 20 --batch 8 ;;
    chat_train) run chat_train 420 "${PY[@]}" "$G/cli.py" iv2_chat train tiny-synthetic-quick "instruct.max_steps=$STEPS" instruct.precision=fp16 \
            instruct.strategy=ddp "hd.max_steps=$STEPS" hd.hd=true hd.lr=1e-3 "hd.data=[mcqa]" hd.batch_size=8 hd.precision=bf16 \
            hd.strategy=deepspeed hd.zero_stage=1 train.logging.every_steps=5 data.root=/tmp/corpus-chat \
            train.output_dir=/tmp/chat-run torch_threads=0 ${CHAT_EXTRA}
        ;;
    chat_hd) run chat_hd 300 "${PY[@]}" "$G/cli.py" iv2_chat train tiny-synthetic-quick instruct.max_steps=0 "hd.max_steps=$STEPS" hd.hd=true \
            hd.lr=1e-3 "hd.data=[mcqa]" hd.batch_size=8 hd.precision=bf16 hd.strategy=deepspeed hd.zero_stage=1 \
            train.logging.every_steps=5 data.root=/tmp/corpus-chat train.output_dir=/tmp/chat-hd torch_threads=0 ${CHAT_EXTRA}
        ;;
    align_train) run align_train 300 "${PY[@]}" "$G/cli.py" iv2_align train tiny-synthetic-quick train.distributed.precision=bf16 \
            data.corpus=/tmp/corpus-align data.corpus_clips=256 train.output_dir=/tmp/align-run ${ALIGN_EXTRA} ;;
    distill_train) run distill_train 150 "${PY[@]}" "$G/cli.py" iv2_distill train tiny-synthetic-quick train.distributed.precision=bf16 \
            train.output_dir=/tmp/distill-run ${DISTILL_EXTRA} ;;
    distill_teachers) run distill_teachers 120 env CUDA_VISIBLE_DEVICES= "${PY[@]}" "$G/cli.py" iv2_distill teachers tiny-synthetic-quick \
            train.output_dir=/tmp/distill-run ${DISTILL_EXTRA} ;;
    # experiments with a patched copy of iv2_kernels (.gpu/patched): eps cast to fp32 in-kernel, fp32 dot precision from env
    p_contrastive_tf32x3) run p_contrastive_tf32x3 90 env IV2_FP32_DOT=tf32x3 PYTHONPATH="$G/patched:$PYTHONPATH" "${PY[@]}" "$B/kernels_contrastive.py" --device cuda --dtype float32 --markdown ;;
    p_cuda_check) run p_cuda_check 150 env IV2_FP32_DOT=tf32x3 PYTHONPATH="$G/patched:$PYTHONPATH" "${PY[@]}" packages/iv2-kernels/tests/cuda_check.py ;;
    p_encoders_compile) run p_encoders_compile 280 env PYTHONPATH="$G/patched:$PYTHONPATH" "${PY[@]}" "$B/encoders_forward.py" --device cuda --dtype bfloat16 --batch 8 --iters 20 --compile --models internvideo2-b14 internvideo2-1b ;;
    contrastive_64k) run contrastive_64k 200 "${PY[@]}" "$B/kernels_contrastive.py" --device cuda --dtype bfloat16 --batch 16384 65536 --skip-plain-above 65536 --markdown ;;
    enc1b_b32) run enc1b_b32 110 "${PY[@]}" "$B/encoders_forward.py" --device cuda --dtype bfloat16 --batch 32 --iters 10 --models internvideo2-1b ;;
    enc1b_b32_torch) run enc1b_b32_torch 70 env IV2_KERNELS=torch "${PY[@]}" "$B/encoders_forward.py" --device cuda --dtype bfloat16 --batch 32 --iters 10 --models internvideo2-1b ;;
    compile_check) run compile_check 120 env IV2_KERNELS_COMPILE_CHECK=1 "${PY[@]}" -m pytest -q -x -p no:cacheprovider packages/iv2-kernels/tests/test_compile.py ;;
    *) echo "unknown item $1" | tee -a "$LOG/summary.txt" ;;
    esac
}

for name in "$@"; do
    item "$name"
    # the chat hd phase alone, when the two-phase run failed (so the deepspeed/bf16 path is still exercised)
    if [ "$name" = chat_train ] && ! grep -q "^chat_train rc=0" "$LOG/summary.txt"; then item chat_hd; fi
done
# small result files of the training runs (loss curves, metrics)
for run in chat-run chat-hd align-run distill-run; do
    [ -d /tmp/$run ] || continue
    mkdir -p "$LOG/$run"
    (cd /tmp/$run && find . -maxdepth 2 \( -name 'metrics.json' -o -name 'metrics.jsonl' -o -name '*.json' \) -size -200k \
        -exec cp --parents {} "$LOG/$run/" \;)
done
tar czf "$OUT/logs.tgz" -C "$LOG" .
echo "=== summary"; cat "$LOG/summary.txt"
for f in "$LOG"/*.log; do echo "=== $(basename "$f") (tail)"; tail -n "${TAILN:-6}" "$f"; done
