#!/usr/bin/env bash
# none / DSnoT / R²-DSnoT (reweight grow, prune, both) on Wanda and RIA at 60% and 70% unstructured
# sparsity, at two calibration sizes, on the real SmolLM2-135M-Instruct model with the offline data:
# WikiText-2 perplexity (experiments/results/refinement.md) and the refinement's own bookkeeping
# (experiments/results/refinement_error.md). 40 runs; the first masks are per output row
# (sparsity.group=row), as in the DSnoT reference, for both scores.
set -euo pipefail
cd "$(dirname "$0")/.."
export SYMPRUNE_ASSETS="${SYMPRUNE_ASSETS:-$(cd ../shared/assets && pwd)}"
SWEEP="${SWEEP:-outputs/experiments/refinement}"
PYTHON="${PYTHON:-python}"
COMMON=(calibration=wikitext2 calibration.seqlen=512 sparsity=unstructured sparsity.group=row
        sparsity.ratio=0.6,0.7 score=wanda,ria
        eval.perplexity.datasets=[wikitext2] eval.perplexity.seqlen=1024 eval.perplexity.max_windows=8
        logger=none progress=false)

for nsamples in 8 32; do
    # refine=none also measures the dense model, for the table's first row
    "$PYTHON" -m symprune -m calibration.nsamples=$nsamples refine=none eval.dense=true "${COMMON[@]}" \
        hydra.sweep.dir="$SWEEP/n$nsamples-none"
    "$PYTHON" -m symprune -m calibration.nsamples=$nsamples refine=dsnot eval.dense=false "${COMMON[@]}" \
        hydra.sweep.dir="$SWEEP/n$nsamples-dsnot"
    "$PYTHON" -m symprune -m calibration.nsamples=$nsamples refine=r2dsnot refine.reweight=grow,prune,both \
        eval.dense=false "${COMMON[@]}" hydra.sweep.dir="$SWEEP/n$nsamples-r2dsnot"
done

"$PYTHON" -m symprune.tables "$SWEEP" --rows refine,refine.reweight --columns score,sparsity.ratio,calibration.nsamples \
    --baseline metrics.perplexity.wikitext2.dense --out experiments/results/refinement.md
"$PYTHON" experiments/refinement_error.py "$SWEEP" --out experiments/results/refinement_error.md
cat experiments/results/refinement.md experiments/results/refinement_error.md
