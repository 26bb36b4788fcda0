#!/usr/bin/env bash
# Install what the real-browser widget test (tests/test_browser.py) needs, idempotently:
#   - Debian's chromium at /usr/bin/chromium (apt-get, as root, only if missing);
#   - nothing is downloaded by Playwright itself: tests drive this system chromium via `executable_path`,
#     so never run `playwright install`.
# The Python side (voila, playwright, ipywidgets) comes from the `dev` extra in pyproject.toml.
# Usage: tools/setup_browser.sh            (called by `make test`)
set -euo pipefail

CHROMIUM="${LESSONKIT_CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ]; then
    echo "setup_browser: $CHROMIUM present ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown'))"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup_browser: $CHROMIUM is missing and apt-get is not available; install Chromium by hand" \
         "and set LESSONKIT_CHROMIUM to its path." >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "setup_browser: installing chromium needs root (or sudo)." >&2; exit 1
    fi
fi

echo "setup_browser: installing Debian chromium with apt-get ..."
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
if [ ! -x "$CHROMIUM" ]; then
    echo "setup_browser: apt-get finished but $CHROMIUM is still missing." >&2
    exit 1
fi
echo "setup_browser: installed $("$CHROMIUM" --version 2>/dev/null || echo chromium)"
