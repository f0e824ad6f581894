#!/usr/bin/env bash
# Runs every test: unit, fuzz seed corpora, integration tests against a real
# Caddy, and browser tests in headless Chromium, all under the race detector.
# On a fresh Debian machine it first installs Chromium (the only thing the
# tests need besides Go). Extra arguments go to go test, e.g. ./test.sh -run Browser
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v chromium >/dev/null 2>&1; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "installing chromium for the browser tests" >&2
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
	else
		echo "chromium is not installed: the browser tests will be skipped" >&2
	fi
fi

go test -race "$@" ./...
