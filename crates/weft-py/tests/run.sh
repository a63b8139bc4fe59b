#!/usr/bin/env bash
# The Python module's tests, run by scripts/test after `cargo build --release
# -p weft --example market_data`: installs the module as a user does (`pip
# install ./crates/weft-py`, maturin from PyPI as its build backend) into a
# virtualenv under target/, with numpy if PyPI has it, then runs the tests.
set -euo pipefail
cd "$(dirname "$0")/../../.."
venv=target/py
[ -x $venv/bin/python ] || python3 -m venv $venv
$venv/bin/pip install --quiet --disable-pip-version-check ./crates/weft-py
$venv/bin/python -c 'import numpy' 2>/dev/null \
    || $venv/bin/pip install --quiet --disable-pip-version-check numpy \
    || echo "run.sh: numpy not installed: its test is skipped"
$venv/bin/python -m unittest discover -s crates/weft-py/tests -v 2>&1
