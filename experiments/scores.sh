#!/usr/bin/env bash
# WikiText-2 perplexity of every score / method at 50% unstructured, 4:8 and 2:4 on the real
# SmolLM2-135M-Instruct model with the offline data, as one table (experiments/results/scores.md).
# About 3 minutes per run on one CPU core (dense GGUF weights cached after the first); 33 runs.
set -euo pipefail
cd "$(dirname "$0")/.."
export SYMPRUNE_ASSETS="${SYMPRUNE_ASSETS:-$(cd ../shared/assets && pwd)}"
SWEEP="${SWEEP:-outputs/experiments/scores}"
PYTHON="${PYTHON:-python}"
COMMON=(calibration=wikitext2 calibration.nsamples=32 calibration.seqlen=512
        eval.perplexity.datasets=[wikitext2] eval.perplexity.seqlen=1024 eval.perplexity.max_windows=8
        logger=none progress=false)
PATTERNS=sparsity=unstructured,nm_4_8,nm_2_4

# magnitude also measures the dense model once per pattern column
"$PYTHON" -m symprune -m score=magnitude "$PATTERNS" eval.dense=true "${COMMON[@]}" hydra.sweep.dir="$SWEEP/magnitude"
"$PYTHON" -m symprune -m score=wanda,ri,ria,ria_l2,ria_linf,stochria,symmetric,general_sym,sparsegpt "$PATTERNS" \
    eval.dense=false "${COMMON[@]}" hydra.sweep.dir="$SWEEP/scores"
"$PYTHON" -m symprune -m score=stochria score.beta=0.5 "$PATTERNS" eval.dense=false "${COMMON[@]}" \
    hydra.sweep.dir="$SWEEP/stochria_beta05"

"$PYTHON" -m symprune.tables pivot "$SWEEP" --rows score,overrides:score. --columns sparsity \
    --baseline metrics.perplexity.wikitext2.dense --out experiments/results/scores.md
cat experiments/results/scores.md
