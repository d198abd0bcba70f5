#!/usr/bin/env bash
# Every test: unit tests, the kernel compile check (NVRTC, no GPU needed) and the integration
# tests that start the binary under mpirun with 1 to 4 ranks on the MPI host path.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. scripts/env.sh
cargo test --release --locked -- --test-threads=1
