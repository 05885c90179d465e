# Sourced by .ci/run and .ci/run-lowest: cd to the project, then make and activate a brand-new
# virtual environment in a temp folder (removed on exit), never the machine's site-packages, so
# a package installed there cannot hide a missing dependency.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PIP_DISABLE_PIP_VERSION_CHECK=1
CI_VENV=$(mktemp -d "${TMPDIR:-/tmp}/configsync-ci.XXXXXX")
trap 'rm -rf "$CI_VENV"' EXIT
python3 -m venv "$CI_VENV/venv"
# shellcheck disable=SC1091
. "$CI_VENV/venv/bin/activate"
