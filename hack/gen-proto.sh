#!/usr/bin/env bash
# Regenerates the Go code of api/**/*.proto. The generated files are
# committed and CI does not run this; run it after editing a .proto and
# commit the result.
#
# Tools (pinned; the output names them in its header):
#   protoc              Debian protobuf-compiler (libprotoc 3.21.12)
#   protoc-gen-go       go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   protoc-gen-go-grpc  go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
# protoc-gen-go matches go.mod's google.golang.org/protobuf; the
# protoc-gen-go-grpc output needs google.golang.org/grpc >= 1.64.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$(go env GOPATH)/bin:$PATH"
for t in protoc protoc-gen-go protoc-gen-go-grpc; do
	command -v "$t" >/dev/null || { echo "gen-proto: $t not found (see the header of $0)" >&2; exit 1; }
done
protoc -I api \
	--go_out=api --go_opt=paths=source_relative \
	--go-grpc_out=api --go-grpc_opt=paths=source_relative \
	api/cni/v1/cni.proto api/debug/v1/debug.proto
gofmt -l api
