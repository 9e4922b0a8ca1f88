#!/usr/bin/env bash
# The GPU check: one command on a machine with one GPU and no network, at most 8 minutes (stage limits).
#
#   benchmarks/gpu_check.sh OUT_DIR                 # on the GPU
#   benchmarks/gpu_check.sh OUT_DIR --cpu-dry-run   # the same steps on the CPU with tiny shapes
#
# 1. install: a fresh virtual environment in a temporary directory that sees the interpreter's own
#    packages (torch, transformers, ...), symprune installed from this checkout, and what else it
#    needs from the wheelhouse (benchmarks/make_wheelhouse.sh), pip with --no-index;
# 2. tests: the `gpu` tests (tests/test_gpu.py -m gpu, with SYMPRUNE_REQUIRE_GPU=1: no CUDA fails
#    them); the dry run runs the whole file, whose CPU cases exercise the same checks;
# 3. speed: benchmarks/prune_speed.py on a synthetic LLaMA-2-7B in bfloat16 with 128 x 2,048 random
#    calibration tokens: perplexity against a bare forward loop, then the floor and Wanda, 3 repeats
#    (a time target is judged on the median of at least 3), against the targets of profile gpu in
#    benchmarks/targets.yaml (60 s, 1.15 x the floor in block passes), and Wanda's peak GPU memory;
# 4. offload: placement=offload on a synthetic LLaMA-2-13B (16 x 2,048 tokens: memory is per batch),
#    Wanda's peak GPU memory against profile gpu_offload (8 GiB; 2 blocks + activations + statistics);
# 5. OUT_DIR/gpu_check.md and gpu_check.json: every stage, the tests' counts, every target.
# Every file in OUT_DIR starts with the command that produced it. The stages stop after 75, 315 and
# 90 s (8 minutes in all); a benchmark stopped so leaves what it measured so far, marked incomplete.
#
# Environment: PYTHON, the interpreter whose torch is used (default python3); WHEELHOUSE (default
# wheelhouse). Exit status 0: every stage completed, every test passed and (GPU) every target held.
set -uo pipefail

usage() { sed -n '2,23p' "$0"; exit 2; }
[ $# -ge 1 ] && [ "${1#-}" = "$1" ] || usage
COMMAND="benchmarks/gpu_check.sh $*"
OUT="$1"
shift
DRY_RUN=0
for argument in "$@"; do
    case "$argument" in
        --cpu-dry-run) DRY_RUN=1 ;;
        *) usage ;;
    esac
done

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
WHEELHOUSE="${WHEELHOUSE:-wheelhouse}"
if ! ls "$WHEELHOUSE"/*.whl > /dev/null 2>&1; then
    echo "no wheels in $WHEELHOUSE: build it first with benchmarks/make_wheelhouse.sh" >&2
    exit 2
fi
WHEELHOUSE="$(cd "$WHEELHOUSE" && pwd)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
VENV="$WORK/venv"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=disabled

if [ "$DRY_RUN" = 1 ]; then
    DEVICE=cpu SPEED_SIZE=tiny OFFLOAD_SIZE=tiny
    SPEED_DATA=(calibration.nsamples=16 calibration.seqlen=128 eval.perplexity.seqlen=128 eval.perplexity.max_windows=4)
    OFFLOAD_DATA=(calibration.nsamples=8 calibration.seqlen=128)
    TESTS=(tests/test_gpu.py)
else
    DEVICE=cuda SPEED_SIZE=llama2_7b OFFLOAD_SIZE=llama2_13b
    SPEED_DATA=(calibration.nsamples=128 calibration.seqlen=2048 eval.perplexity.seqlen=2048 eval.perplexity.max_windows=8)
    OFFLOAD_DATA=(calibration.nsamples=16 calibration.seqlen=2048)
    TESTS=(tests/test_gpu.py -m gpu)
    export SYMPRUNE_REQUIRE_GPU=1
fi
SPEED="speed_${SPEED_SIZE}"
OFFLOAD="offload_${OFFLOAD_SIZE}"
STAGES="$WORK/stages"
: > "$STAGES"

# stage NAME SECONDS LOG COMMAND...: COMMAND's output in LOG (after a line naming COMMAND), stopped after SECONDS
stage() {
    local name="$1" seconds="$2" log="$3"
    shift 3
    local shown
    printf -v shown '%q ' "$@"
    echo "== $name (at most $seconds s)"
    printf 'Produced by `%s` (stage "%s" of `%s`)\n' "${shown% }" "$name" "$COMMAND" > "$log"
    timeout --kill-after=20 "$seconds" "$@" >> "$log" 2>&1
    local status=$?
    tail -n 25 "$log"
    echo "$name $status" >> "$STAGES"
    echo "== $name: exit status $status"
}

install() {
    set -x
    "$PYTHON" -m venv "$VENV" || return
    local site
    site="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" || return
    # the interpreter's own packages stay visible in the environment, wherever they are installed
    "$PYTHON" -c 'import sys; print("\n".join(p for p in sys.path if p.endswith(("site-packages", "dist-packages"))))' \
        > "$site/base-interpreter.pth" || return
    "$VENV/bin/python" -m pip install --no-index --find-links "$WHEELHOUSE" -r requirements/gpu-check.txt || return
    "$VENV/bin/python" -m pip install --no-index --find-links "$WHEELHOUSE" --no-deps -e . || return
    "$VENV/bin/python" -c 'import accelerate, torch, transformers, symprune.run.runner
print("torch", torch.__version__, "transformers", transformers.__version__, "accelerate", accelerate.__version__,
      "CUDA", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")'
}
export -f install
export PYTHON VENV WHEELHOUSE

stage install 300 "$OUT/install.log" bash -c install
if grep -q "^install 0$" "$STAGES"; then
    stage tests 75 "$OUT/gpu_tests.txt" "$VENV/bin/python" -m pytest "${TESTS[@]}" -q -rA -p no:cacheprovider
    stage speed 315 "$OUT/$SPEED.log" "$VENV/bin/python" benchmarks/prune_speed.py \
        --methods wanda --repeats 3 --targets gpu --json "$OUT/$SPEED.json" --out "$OUT/$SPEED.md" \
        model=synthetic "model.size=$SPEED_SIZE" model.dtype=bfloat16 calibration=random eval=perplexity_random \
        "${SPEED_DATA[@]}" "device=$DEVICE"
    stage offload 90 "$OUT/$OFFLOAD.log" "$VENV/bin/python" benchmarks/prune_speed.py \
        --methods wanda --repeats 1 --no-evaluation --targets gpu_offload \
        --json "$OUT/$OFFLOAD.json" --out "$OUT/$OFFLOAD.md" \
        model=synthetic "model.size=$OFFLOAD_SIZE" model.dtype=bfloat16 calibration=random eval=perplexity_random \
        placement=offload "${OFFLOAD_DATA[@]}" "device=$DEVICE"
fi

"$PYTHON" - "$OUT" "$STAGES" "$COMMAND" "$DRY_RUN" "$SPEED" "$OFFLOAD" <<'SUMMARY'
"""gpu_check.md and gpu_check.json: the stages, the tests' counts and every target of the benchmarks."""
import datetime
import json
import re
import sys
from pathlib import Path

out, stages_file, command, dry_run, *benchmarks = sys.argv[1:]
out, dry_run = Path(out), dry_run == "1"
stages = dict(line.split() for line in Path(stages_file).read_text().splitlines())
tests_log = out / "gpu_tests.txt"
counts = {}
if tests_log.exists():
    summary_lines = [line for line in tests_log.read_text().splitlines() if re.search(r"\d+ (passed|failed|skipped|error)", line)]
    if summary_lines:
        counts = {kind: int(number) for number, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary_lines[-1])}
results = {}
for name in benchmarks:
    path = out / f"{name}.json"
    results[name] = json.loads(path.read_text()) if path.exists() else None
targets = [target | {"benchmark": name} for name, data in results.items() if data for target in data["targets"]]
failed_targets = [t for t in targets if t["passed"] is not True]
stage_ok = all(status == "0" for status in stages.values()) and set(stages) >= {"install", "tests", "speed", "offload"}
tests_ok = counts.get("passed", 0) > 0 and not counts.get("failed") and not counts.get("error") and not counts.get("errors")
complete = all(data and data.get("complete") for data in results.values())
ok = stage_ok and tests_ok and complete and (dry_run or not failed_targets)
gpu = next((data["machine"]["gpu"] for data in results.values() if data and data["machine"]["gpu"]), None)
where = "CPU dry run (tiny shapes: the targets are one GPU's, shown here only to exercise the checks)" if dry_run else f"GPU {gpu}"

lines = [f"Produced by `{command}`", "", f"GPU check, {datetime.date.today()}, {where}.", "",
         "| stage | exit status |", "|---|---|"]
lines += [f"| {name} | {status}{' (time limit)' if status in ('124', '137') else ''} |" for name, status in stages.items()]
lines += ["", f"Tests: {', '.join(f'{n} {kind}' for kind, n in counts.items()) or 'no summary line'} (gpu_tests.txt).", ""]
if targets:
    lines += ["| benchmark | target | measured | limit | result |", "|---|---|---|---|---|"]
    for t in targets:
        measured = "–" if t["measured"] is None else f"{t['measured']:.3f}"
        limit = "–" if t["limit"] is None else f"{t['limit']:.3f}"
        result = {True: "pass", False: "FAIL", None: "not measured"}[t["passed"]]
        lines.append(f"| {t['benchmark']} | `{t['target']}` | {measured} | {limit} | {result} |")
for name, data in results.items():
    text = (out / f"{name}.md").read_text().split("\n", 1)[1] if data else "no results\n"
    lines += ["", f"## {name}{'' if data and data.get('complete') else ' (incomplete)'}", text.rstrip()]
lines += ["", f"Overall: {'ok' if ok else 'NOT ok'}."]
(out / "gpu_check.md").write_text("\n".join(lines) + "\n")
body = json.dumps({"date": str(datetime.date.today()), "dry_run": dry_run, "gpu": gpu, "stages": stages, "tests": counts,
                   "targets": targets, "complete": complete, "ok": ok}, indent=2)
(out / "gpu_check.json").write_text("{" + f'"command": {json.dumps(command)},\n' + body[2:] + "\n")
print("\n".join(lines))
sys.exit(0 if ok else 1)
SUMMARY
