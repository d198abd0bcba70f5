#!/usr/bin/env bash
# Every test: unit tests, the kernel compile check (NVRTC, no GPU needed) and the integration
# tests that start the binary under mpirun with 1 to 4 ranks on the MPI host path.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
log=$(mktemp)
set -o pipefail
cargo test --release --locked -- --test-threads=1 2>&1 | tee "$log"
# One closing line for all test binaries together.
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"
rm -f "$log"
