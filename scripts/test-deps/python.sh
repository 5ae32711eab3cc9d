#!/usr/bin/env bash
# The official Python client, pynsq, for tests/tests/pynsq.rs: a virtualenv
# under target/test-deps/venv with pinned versions (pynsq 0.9.1 needs tornado
# 6.0.x; python-snappy gives it snappy). Quick when already installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/test-deps/venv
want="pynsq==0.9.1 tornado==6.0.4 python-snappy==0.7.3 cramjam==2.14.0"
stamp="$venv/.installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c 'import nsq, snappy' 2>/dev/null; then
    echo "pynsq: $venv (already installed)"
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check $want
"$venv/bin/python" -c 'import nsq, snappy, tornado; print("pynsq:", nsq.__version__ if hasattr(nsq, "__version__") else "0.9.1", "tornado", tornado.version)'
echo "$want" > "$stamp"
echo "pynsq: installed in $venv"
