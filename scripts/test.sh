#!/usr/bin/env bash
# Every test: the house rules (rustfmt, clippy with warnings as errors), unit tests, the kernel
# compile check (NVRTC, no GPU needed), the integration tests that start the binary under
# mpirun with 1 to 4 ranks on the MPI host path, and the report's tests (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
if command -v rustup >/dev/null; then rustup component add rustfmt clippy >/dev/null 2>&1 || true; fi
cargo fmt --check
cargo clippy --release --locked --all-targets -- -D warnings
log=$(mktemp)
set -o pipefail
cargo test --release --locked -- --test-threads=1 2>&1 | tee "$log"
# The report on files from CPU runs of the binary just built.
python3 -m pytest -q -W ignore::DeprecationWarning tests/report 2>&1 | tee -a "$log"
# One closing line for all test binaries and the report's tests together.
awk '/^test result:/ { p += $4; f += $6; next } /(passed|failed).* in [0-9.]+s/ { for (i = 1; i < NF; i++) { if ($(i + 1) ~ /^passed/) p += $i; if ($(i + 1) ~ /^failed/) f += $i } } END { printf "%d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
