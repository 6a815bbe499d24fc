#!/usr/bin/env bash
# Create .venv (once) and install mmgrpo with everything its demo and tests use, at tested versions.
#   bash scripts/setup_env.sh            # then: .venv/bin/mmgrpo demo   or   .venv/bin/python -m pytest -q
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check -c scripts/constraints.txt)
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
"${PIP[@]}" -e ".[all]"
# resemblyzer's metadata pins old releases; at run time it needs only librosa and webrtcvad (installed above)
"${PIP[@]}" --no-deps "resemblyzer==0.1.4"
# Debian's espeak-ng makes real speech for the audio-reward tests (they skip without it)
if ! command -v espeak-ng >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null) || echo "note: espeak-ng not installed; real-speech tests will skip"
fi
echo "mmgrpo installed in .venv  (next: .venv/bin/mmgrpo demo  |  .venv/bin/python -m pytest -q)"
