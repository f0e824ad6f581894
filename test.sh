#!/usr/bin/env bash
# Runs every test: unit, fuzz seed corpora, integration tests against a real
# Caddy, and browser tests in headless Chromium, all under the race detector,
# then prints how many tests each package passed, failed and skipped. A
# skipped test fails the run: set CHAT_SKIP_BROWSER=1 to run without the
# browser tests knowingly. On a fresh Debian machine it first installs
# Chromium (the only thing the tests need besides Go). Extra arguments go to
# go test, e.g. ./test.sh -run Browser
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v chromium >/dev/null 2>&1 && [ "${CHAT_SKIP_BROWSER:-}" != 1 ]; then
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "installing chromium for the browser tests" >&2
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
	else
		echo "chromium is not installed: install it, or set CHAT_SKIP_BROWSER=1 to skip the browser tests" >&2
		exit 1
	fi
fi

go build -o /dev/null ./.ci/testreport # fail early, not after the tests
go test -race -json -timeout 20m "$@" ./... | go run ./.ci/testreport
