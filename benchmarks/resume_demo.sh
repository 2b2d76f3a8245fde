#!/usr/bin/env bash
# A sweep killed part way, then run again, against the same sweep uninterrupted (docs/faults.md:
# "When a run or a sweep dies"). Usage: benchmarks/resume_demo.sh /path/to/cifar10-jpeg [workdir]
# Three jobs of ModifiedNet at 3 epochs, one at a time; `kill -9` during job 1's third epoch.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
py="$root/.venv/bin/python"
work=${2:-$(mktemp -d)}
cmd=("$root/src/train.py" -m hydra/launcher=basic lr.value=0.001,0.005,0.01 trainer.epochs=3
     data=cifar10_jpeg "data.root=$1" "data.cache_dir=$work/cache" tracking.uri=mlruns)
now() { date +%s.%N; }
mkdir -p "$work/full" "$work/killed"
"$py" -c "from cifar_sweep.data import load_dataset, ImageFolderSource as S; load_dataset(S('$1'), '$work/cache')"
cd "$work/full"; s=$(now); "$py" "${cmd[@]}" > log 2>&1; e=$(now)
echo "the whole sweep, uninterrupted: $(echo "$e - $s" | bc) s"
cd "$work/killed"
"$py" "${cmd[@]}" > log1 2>&1 &
pid=$!
until grep -q "#1 epoch 2/3" log1 2>/dev/null; do sleep 0.5; done
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
s=$(now); "$py" "${cmd[@]}" > log2 2>&1; e=$(now)
echo "the same command after the kill: $(echo "$e - $s" | bc) s"
grep -h "already finished\|continuing from\|test accuracy" log2
