#!/usr/bin/env bash
# Runs every test: unit, fuzz seed corpora, integration tests against a real
# Caddy, and browser tests in headless Chromium, all under the race detector,
# then prints how many tests each package passed, failed and skipped. A
# skipped test fails the run: set CHAT_SKIP_BROWSER=1 to run without the
# browser tests knowingly. On a fresh Debian machine it first installs
# Chromium and redis-server, and grpcurl with go install (all the tests need
# besides Go). Extra arguments
# go to go test, e.g. ./test.sh -run Browser
set -euo pipefail
cd "$(dirname "$0")"

# need NAME...: installs the Debian packages the tests need, where missing.
need() {
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "installing $* for the tests" >&2
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
	else
		echo "$* not installed: install it to run the tests" >&2
		exit 1
	fi
}
# The redis store's tests start their own redis-server; they fail without one.
command -v redis-server >/dev/null 2>&1 || need redis-server
if ! command -v chromium >/dev/null 2>&1 && [ "${CHAT_SKIP_BROWSER:-}" != 1 ]; then
	need chromium
fi

# grpcurl is not packaged by Debian. The tests run the one CHAT_GRPCURL
# names, installed there if missing (CI names a temporary directory), else
# the one on PATH, else one installed into Go's bin directory.
grpcurl_module=github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3
if [ -z "${CHAT_GRPCURL:-}" ]; then
	CHAT_GRPCURL=$(command -v grpcurl || echo "$(go env GOPATH)/bin/grpcurl")
fi
if [ ! -x "$CHAT_GRPCURL" ]; then
	echo "installing $grpcurl_module for the tests" >&2
	GOBIN=$(dirname "$CHAT_GRPCURL") go install "$grpcurl_module"
fi
export CHAT_GRPCURL

go build -o /dev/null ./.ci/testreport # fail early, not after the tests
go test -race -json -timeout 20m "$@" ./... | go run ./.ci/testreport
