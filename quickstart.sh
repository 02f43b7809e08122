#!/usr/bin/env bash
# Set up kflow in ./.venv (first time, or when its pins change) and run a command.
#   ./quickstart.sh            train digits-cnn end to end (the main job)
#   ./quickstart.sh test       run the test suite (extra args go to pytest; test files are
#                              spread over KFLOW_TEST_WORKERS processes, default 2)
#   ./quickstart.sh kflow ...  any kflow command inside the environment
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=.venv/.kflow-installed
if [ ! -f "$stamp" ] || [ setup.cfg -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "quickstart: installing kflow and its pinned dependencies into .venv (first run takes a few minutes)"
  python -m pip install -q --upgrade pip
  python -m pip install -q -e ".[dev,tflite,serving,parquet,mlflow,hub]" -c constraints.txt
  touch "$stamp"
fi
case "${1:-train}" in
  train) [ $# -gt 0 ] && shift; exec kflow train digits-cnn "$@" ;;
  test) shift; exec python -m pytest -q -n "${KFLOW_TEST_WORKERS:-2}" --dist loadfile "$@" ;;
  kflow) shift; exec kflow "$@" ;;
  *) exec "$@" ;;
esac
