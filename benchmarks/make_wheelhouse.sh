#!/usr/bin/env bash
# Builds the wheelhouse that benchmarks/gpu_check.sh installs from on a GPU machine without network:
# wheels, for CPython on x86-64 Linux, of requirements/gpu-check.txt and all their dependencies, at the
# versions of requirements/constraints.txt, plus setuptools (to install symprune from its checkout).
# The machine's own torch, transformers, accelerate, ... are not included: pip keeps what is there.
#
#   benchmarks/make_wheelhouse.sh [DIR] [--python-version X.Y]   # DIR: wheelhouse (git-ignored); X.Y: 3.12
#
# Every wheel is a published binary or pure wheel, except the pure-Python packages published only as
# source (antlr4-python3-runtime), which are built into pure wheels here; nothing is compiled.
# The folder must stay within 40 MiB (what travels with the working tree); the script fails beyond.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=wheelhouse
PYTHON_VERSION=3.12
LIMIT_MIB=40
while [ $# -gt 0 ]; do
    case "$1" in
        --python-version) PYTHON_VERSION="$2"; shift 2 ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) DIR="$1"; shift ;;
    esac
done
PIP=("${PYTHON:-python3}" -m pip)
CONSTRAINTS=requirements/constraints.txt
SOURCE_ONLY=(antlr4-python3-runtime)

rm -rf "$DIR"
mkdir -p "$DIR"
"${PIP[@]}" wheel --quiet --no-deps --no-binary :all: -c "$CONSTRAINTS" -w "$DIR" "${SOURCE_ONLY[@]}"
"${PIP[@]}" download --quiet --only-binary :all: --python-version "$PYTHON_VERSION" --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    --find-links "$DIR" -c "$CONSTRAINTS" -d "$DIR" -r requirements/gpu-check.txt setuptools

bytes=$(du -cb "$DIR"/*.whl | tail -1 | cut -f1)
count=$(ls "$DIR"/*.whl | wc -l)
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "$DIR: $count wheels for CPython $PYTHON_VERSION x86-64 Linux, $mib MiB (limit $LIMIT_MIB MiB)"
if [ "$bytes" -gt $((LIMIT_MIB * 1048576)) ]; then
    echo "error: $DIR is larger than $LIMIT_MIB MiB" >&2
    exit 1
fi
