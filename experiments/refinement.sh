#!/usr/bin/env bash
# none / DSnoT / R²-DSnoT (reweight grow, prune, both) on Wanda and RIA at 60% and 70% unstructured
# sparsity, at two calibration sizes, on the real SmolLM2-135M-Instruct model with the offline data:
# WikiText-2 perplexity (experiments/results/refinement.md) and the refinement's own bookkeeping
# (experiments/results/refinement_error.md). 40 runs plus one dense run; the first masks are per
# output row (sparsity.group=row), as in the DSnoT reference, for both scores. Calibration: 8 or 32
# WikiText-2 samples of 512 tokens; perplexity: 8 windows of 1,024 tokens. About 4-15 minutes per run
# on a busy 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export SYMPRUNE_ASSETS="${SYMPRUNE_ASSETS:-$(cd ../shared/assets && pwd)}"
SWEEP="${SWEEP:-outputs/experiments/refinement}"
PYTHON="${PYTHON:-python}"
BASE=(calibration=wikitext2 calibration.seqlen=512 sparsity=unstructured sparsity.group=row eval.dense=false
      eval.perplexity.datasets=[wikitext2] eval.perplexity.seqlen=1024 eval.perplexity.max_windows=8
      logger=none progress=false)
COMMON=("${BASE[@]}" sparsity.ratio=0.6,0.7 score=wanda,ria)

# the dense model once: magnitude at ratio 0 prunes nothing and needs no calibration
"$PYTHON" -m symprune score=magnitude sparsity.ratio=0.0 refine=none "${BASE[@]}" hydra.run.dir="$SWEEP/dense"
for nsamples in 8 32; do
    "$PYTHON" -m symprune -m calibration.nsamples=$nsamples refine=none,dsnot "${COMMON[@]}" \
        hydra.sweep.dir="$SWEEP/n$nsamples-dsnot"
    "$PYTHON" -m symprune -m calibration.nsamples=$nsamples refine=r2dsnot refine.reweight=grow,prune,both \
        "${COMMON[@]}" hydra.sweep.dir="$SWEEP/n$nsamples-r2dsnot"
done

"$PYTHON" -m symprune.tables pivot "$SWEEP"/n* --rows refine,refine.reweight --columns score,sparsity.ratio,calibration.nsamples \
    --out experiments/results/refinement.md
"$PYTHON" experiments/refinement_error.py "$SWEEP"/n* --out experiments/results/refinement_error.md
cat experiments/results/refinement.md experiments/results/refinement_error.md
