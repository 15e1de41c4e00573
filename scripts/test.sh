#!/usr/bin/env bash
# Runs Aloft's whole test suite: gofmt, go vet, and every test with the race
# detector. Installs what the tests need when it is missing (Debian's
# python3 and Node.js, for the Python and Node runtimes) — as root, with apt.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/bin/python3 ] || need+=(python3)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v gcc >/dev/null 2>&1 || need+=(gcc)   # the race detector needs cgo
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "the tests need: ${need[*]} (install them, then run this again)" >&2
    exit 1
  fi
fi

go mod download
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" $unformatted >&2
  exit 1
fi
go vet ./...
go test -race -count=1 -timeout 40m "$@" ./...
