#!/usr/bin/env bash
# Builds the `starsync` wheel and runs its pytest suite against a real server, as CI does:
#   bash crates/starsync-python/run-tests.sh [pytest args…]
# 1. a fresh venv (python3 -m venv) with maturin, pytest and PySide6-Essentials from PyPI
#    (STARSYNC_PYTHON_QT=0 skips PySide6; the example's test is then skipped);
# 2. the server and node CLI binaries (`cargo build`, debug profile, CARGO_TARGET_DIR honoured);
# 3. the wheel (`maturin build --release`), installed into the venv;
# 4. pytest crates/starsync-python/tests, which starts `starsync serve` itself.
# Exits with pytest's status (non-zero on any failure, and on "no tests ran").
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$repo"
started=$SECONDS
python="${PYTHON:-python3}"
phase() { echo "== $* (at $((SECONDS - started)) s)"; }

venv="$(mktemp -d "${TMPDIR:-/tmp}/starsync-python-venv.XXXXXX")"
trap 'rm -rf "$venv"' EXIT

phase "python venv ($("$python" --version 2>&1)) in $venv"
"$python" -m venv "$venv"
pip() { "$venv/bin/python" -m pip --disable-pip-version-check -q "$@"; }
pip install "maturin>=1.7,<2" "pytest>=7"
if [ "${STARSYNC_PYTHON_QT:-1}" != 0 ]; then
  # The Qt modules the example uses (QtCore, QtGui, QtWidgets) without the add-ons.
  pip install PySide6-Essentials
fi

phase "server and node CLI binaries"
cargo build --locked -p starsync --bin starsync -p starsync-node-cli --bin starsync-node
target_dir="$(cargo metadata --format-version 1 --no-deps --locked |
  "$python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
export STARSYNC_BIN="$target_dir/debug/starsync"
export STARSYNC_NODE_BIN="$target_dir/debug/starsync-node"

phase "wheel"
# The release profile keeps line tables for the server's backtraces; the wheel strips them
# anyway, so do not spend time generating them.
CARGO_PROFILE_RELEASE_DEBUG=0 "$venv/bin/maturin" build --locked --release \
  -m crates/starsync-python/Cargo.toml --out "$venv/wheels"
wheel="$(ls "$venv"/wheels/starsync-*.whl)"
echo "built $(basename "$wheel"): $(du -k "$wheel" | cut -f1) KiB"
pip install --force-reinstall "$wheel"

phase "pytest"
status=0
# A test that hangs (a deadlock) ends the run after STARSYNC_PYTEST_TIMEOUT seconds (120) with
# every thread's stack in this log.
export STARSYNC_PYTEST_HANG_LOG="$venv/hang.log"
# From the repo root, so `import starsync` finds the installed wheel, not python/ sources.
"$venv/bin/python" -m pytest -p no:cacheprovider crates/starsync-python/tests "$@" || status=$?
if [ -s "$STARSYNC_PYTEST_HANG_LOG" ]; then
  echo "== a test hung; stacks:"
  cat "$STARSYNC_PYTEST_HANG_LOG"
  echo "0 passed, 1 failed"
fi
echo "== python package: $((SECONDS - started)) s in all"
exit "$status"
