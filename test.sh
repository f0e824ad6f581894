#!/usr/bin/env bash
# Runs every test: unit, fuzz seed corpora, integration tests against a real
# Caddy, and browser tests in headless Chromium, all under the race detector,
# then prints how many tests each package passed, failed and skipped. A
# skipped test fails the run: set CHAT_SKIP_BROWSER=1 to run without the
# browser tests knowingly.
#
# On a fresh Debian machine with only Go it first installs what the tests
# need: Debian's gcc (the race detector needs cgo), redis-server, chromium,
# protobuf-compiler, curl and perf (linux-perf), and, with go install,
# grpcurl at the version pinned below and the protoc plugins at the versions
# go.mod names, which generated proto/ (into CHAT_TOOLS, by default a cache
# directory). Extra arguments go to go test, e.g. ./test.sh -run Browser
set -euo pipefail
cd "$(dirname "$0")"

# Debian packages, by the program the tests run.
declare -A debian=([gcc]=gcc [redis-server]=redis-server [protoc]=protobuf-compiler [curl]=curl [perf]=linux-perf)
[ "${CHAT_SKIP_BROWSER:-}" = 1 ] || debian[chromium]=chromium
missing=()
for program in "${!debian[@]}"; do
	command -v "$program" >/dev/null 2>&1 || missing+=("${debian[$program]}")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
		echo "${missing[*]} not installed: install them to run the tests" >&2
		exit 1
	fi
	echo "installing ${missing[*]} for the tests" >&2
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Go programs, at the versions the tests expect: the protoc plugins at the
# versions of their modules in go.mod, which the generated files' headers
# name (proto/generate.go says how to regenerate), and grpcurl, which Debian
# does not package.
tools=${CHAT_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/caddy-chat/bin}
mkdir -p "$tools"
# go_tool PACKAGE VERSION installs PACKAGE@VERSION into $tools unless the
# binary there was built from that version already.
go_tool() {
	local bin="$tools/${1##*/}"
	if [ -x "$bin" ] && go version -m "$bin" 2>/dev/null | grep -qE "^[[:space:]]mod[[:space:]].*[[:space:]]$2([[:space:]]|$)"; then
		return
	fi
	echo "installing $1@$2 for the tests" >&2
	GOBIN=$tools go install "$1@$2"
}
go_tool google.golang.org/protobuf/cmd/protoc-gen-go "$(go list -m -f '{{.Version}}' google.golang.org/protobuf)"
go_tool connectrpc.com/connect/cmd/protoc-gen-connect-go "$(go list -m -f '{{.Version}}' connectrpc.com/connect)"
go_tool github.com/fullstorydev/grpcurl/cmd/grpcurl v1.9.3
export PATH="$tools:$PATH"
export CHAT_GRPCURL=${CHAT_GRPCURL:-$tools/grpcurl}

go build -o /dev/null ./.ci/testreport # fail early, not after the tests
go test -race -json -timeout 20m "$@" ./... | go run ./.ci/testreport
