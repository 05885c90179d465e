# Sourced by .ci/run, .ci/run-newest and .ci/run-lowest: cd to the project, then make and
# activate a brand-new virtual environment in a temp folder (removed on exit), never the
# machine's site-packages, so a package installed there cannot hide a missing dependency. The
# venv's Python is $CI_PYTHON (a path or a command), else python3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
# pip holds the judging tools (mypy, ruff, actionlint, ...) at their exact versions
export PIP_CONSTRAINT="$PWD/.ci/tools.txt"
CI_VENV=$(mktemp -d "${TMPDIR:-/tmp}/configsync-ci.XXXXXX")
trap 'rm -rf "$CI_VENV"' EXIT
"${CI_PYTHON:-python3}" -m venv "$CI_VENV/venv"
# shellcheck disable=SC1091
. "$CI_VENV/venv/bin/activate"
echo "== $(python -c 'import sys; print("Python", sys.version.split()[0], sys.executable)')"
