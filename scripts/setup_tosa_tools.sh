#!/usr/bin/env bash
# Create (or reuse) an isolated virtual environment with Arm's tosa-tools.
#
# tosa-tools installs generic top-level modules (tosa, tests, runner, generator,
# checker, ...) so it must NOT be installed into the project's own venv.
#
# Usage:  scripts/setup_tosa_tools.sh            # idempotent; fast when already set up
#         TOSA_VENV=/some/dir scripts/setup_tosa_tools.sh
#         PYTHON=python3.12  scripts/setup_tosa_tools.sh
#
# After it succeeds:  .tosa-venv/bin/tosa-opt, .tosa-venv/bin/tosa_reference_model,
#   .tosa-venv/bin/tosa_verif_build_tests, .tosa-venv/bin/python -c 'import tosa_reference_model'
# See scripts/NOTES_tosa_mlir.md for how to use them.
set -euo pipefail

TOSA_TOOLS_VERSION="${TOSA_TOOLS_VERSION:-2026.8.0}"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TOSA_VENV:-$ROOT/.tosa-venv}"

pick_python() {
    if [[ -n "${PYTHON:-}" ]]; then echo "$PYTHON"; return; fi
    for p in python3.11 python3.12 python3.13 python3.10 python3; do
        if command -v "$p" >/dev/null 2>&1 &&
           "$p" -c 'import sys; sys.exit(0 if (3,10) <= sys.version_info[:2] < (3,14) else 1)' 2>/dev/null; then
            echo "$p"; return
        fi
    done
    echo "error: need Python 3.10-3.13 (wheels are cp310..cp313 manylinux x86_64)" >&2
    exit 1
}

installed_version() {
    [[ -x "$VENV/bin/python" ]] || return 1
    "$VENV/bin/python" - <<'EOF' 2>/dev/null
from importlib.metadata import version
print(version("tosa-tools"))
EOF
}

if [[ "$(installed_version || true)" == "$TOSA_TOOLS_VERSION" ]] && [[ -x "$VENV/bin/tosa-opt" ]]; then
    echo "tosa-tools $TOSA_TOOLS_VERSION already installed in $VENV"
else
    PY="$(pick_python)"
    if ! "$VENV/bin/python" -c 'pass' >/dev/null 2>&1; then
        # missing or broken (e.g. its base interpreter went away): (re)create it
        echo "creating venv $VENV with $PY ($("$PY" --version 2>&1))"
        "$PY" -m venv --clear "$VENV"
    fi
    echo "installing tosa-tools==$TOSA_TOOLS_VERSION into $VENV"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --quiet "tosa-tools==$TOSA_TOOLS_VERSION"
fi

# Smoke test: tosa-opt runs and the reference model Python binding imports.
"$VENV/bin/tosa-opt" --version >/dev/null
"$VENV/bin/python" -c 'import tosa_reference_model' >/dev/null
SP="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"

cat <<EOF
tosa-tools $TOSA_TOOLS_VERSION ready in $VENV
  python                       : $VENV/bin/python   (import tosa_reference_model)
  tosa-opt                     : $VENV/bin/tosa-opt
  tosa_reference_model         : $VENV/bin/tosa_reference_model
  tosa_verif_build_tests       : $VENV/bin/tosa_verif_build_tests
  tosa_verif_conformance_generator : $VENV/bin/tosa_verif_conformance_generator
  tosa_verif_run_tests         : $VENV/bin/tosa_verif_run_tests
  tosa_verify                  : $VENV/bin/tosa_verify
  (the tosa_verif_* tools need \$VENV/bin on PATH and these explicit paths:)
  --ref-model-path    $SP/bin/tosa_reference_model
  --generate-lib-path $SP/tosa_reference_model/libtosa_reference_generate_lib.so
  --verify-path       $SP/bin/tosa_verify
  --schema-path       $SP/bin/tosa.fbs
  --flatc-path        $SP/bin/flatc
EOF
