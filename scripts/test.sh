#!/usr/bin/env bash
# The whole test suite: lint, build, unit and integration tests of every crate.
# Usage: scripts/test.sh        (what CI runs through .ci/run)
# Each step prints how long it took; the script stops at the first failing step.
set -euo pipefail
cd "$(dirname "$0")/.."

step() {
  local name=$1; shift
  local start=$SECONDS
  echo "==> $name"
  "$@"
  echo "<== $name: $((SECONDS - start)) s"
}

total=$SECONDS
# The Python side of the tests: onnxruntime (ONNX engine), scikit-learn, xgboost, lightgbm.
setup_python() { SERVAL_PYTHON=$(scripts/setup-python.sh); export SERVAL_PYTHON; echo "python: $SERVAL_PYTHON"; }
step "python venv (scripts/setup-python.sh)" setup_python
setup_kserve() { SERVAL_KSERVE_PYTHON=$(scripts/setup-kserve.sh); export SERVAL_KSERVE_PYTHON; echo "kserve sdk: $SERVAL_KSERVE_PYTHON"; }
step "KServe SDK venv (scripts/setup-kserve.sh)" setup_kserve
# A real Prometheus server for the monitoring test (Debian's package).
setup_prometheus() { SERVAL_PROMETHEUS=$(scripts/setup-prometheus.sh); export SERVAL_PROMETHEUS; echo "prometheus: $SERVAL_PROMETHEUS"; }
step "prometheus (scripts/setup-prometheus.sh)" setup_prometheus
# PostgreSQL server binaries for the store contract and multi-node tests (Debian's package).
setup_postgres() { SERVAL_PG_BIN=$(scripts/setup-postgres.sh); export SERVAL_PG_BIN; echo "postgres: $SERVAL_PG_BIN"; }
step "postgresql (scripts/setup-postgres.sh)" setup_postgres
# Azurite, the Azure Blob emulator (npm), for the object storage tests.
setup_azurite() { SERVAL_AZURITE=$(scripts/setup-azurite.sh); export SERVAL_AZURITE; echo "azurite: $SERVAL_AZURITE"; }
step "azurite (scripts/setup-azurite.sh)" setup_azurite
# docker-compose (Debian's package) to validate deploy/compose/compose.yaml offline.
setup_compose() { SERVAL_COMPOSE=$(scripts/setup-compose.sh); export SERVAL_COMPOSE; echo "compose: $SERVAL_COMPOSE"; }
step "docker-compose (scripts/setup-compose.sh)" setup_compose
# Debian's chromium and playwright-core (npm) for the console's browser tests.
setup_browser() { SERVAL_BROWSER_MODULES=$(scripts/setup-browser.sh); export SERVAL_BROWSER_MODULES; echo "browser modules: $SERVAL_BROWSER_MODULES"; }
step "chromium + playwright-core (scripts/setup-browser.sh)" setup_browser
# tensorflow-cpu wheels for the Keras test's service environment (installed offline from them).
setup_wheels() { SERVAL_WHEELS=$(scripts/setup-wheels.sh); export SERVAL_WHEELS; echo "wheels: $SERVAL_WHEELS"; }
step "wheels (scripts/setup-wheels.sh)" setup_wheels
step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy" cargo clippy --workspace --all-targets --locked -- -D warnings
step "cargo build (tests)" cargo test --workspace --locked --no-run
# The Dockerfile's build step, outside a container (no image builder here): the layout test runs
# this binary as the image would (tests/it/deploy.rs).
release_build() { cargo build --release --locked -p serval; SERVAL_RELEASE_BIN=$PWD/target/release/serval; export SERVAL_RELEASE_BIN; }
step "cargo build --release (the Dockerfile's build step)" release_build
step "cargo test" cargo test --workspace --locked
echo "All steps passed in $((SECONDS - total)) s"
