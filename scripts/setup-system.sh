#!/usr/bin/env bash
# Debian packages the full test suite uses; installs only what is missing. Safe to run twice.
# Without apt-get (not Debian) it says what to install by hand and carries on.
set -euo pipefail
PACKAGES=(
  dataset-fashion-mnist  # the real Fashion-MNIST IDX files for the fashion-mnist data set
  chromium  # headless browser that opens the rendered report in tests/test_report_browser.py
)
if [ ${#PACKAGES[@]} -eq 0 ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "setup-system: apt-get not found; install ${PACKAGES[*]} by hand" >&2
  exit 0
fi
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
