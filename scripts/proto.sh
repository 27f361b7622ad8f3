#!/usr/bin/env bash
# Regenerates gen/ from proto/ with the pinned grpcio-tools and mypy-protobuf.
# Usage: scripts/proto.sh [OUT_DIR]   (default gen; proto-check passes a temp dir and diffs)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gen}
py=.venv/bin/python
export PATH="$PWD/.venv/bin:$PATH"  # protoc finds the mypy-protobuf plugins by name

# The googleapis protos (google/api/*, google/rpc/*) ship inside googleapis-common-protos;
# the well-known types ship inside grpc_tools.
read -r api_include wkt_include < <("$py" - <<'PY'
import pathlib, grpc_tools, google.api.annotations_pb2 as a
print(pathlib.Path(a.__file__).parents[2], pathlib.Path(grpc_tools.__file__).parent / "_proto")
PY
)

mapfile -t protos < <(cd proto && find servicecall -name '*.proto' | LC_ALL=C sort)
rm -rf "${out:?}/servicecall"
mkdir -p "$out"
"$py" -m grpc_tools.protoc -I proto -I "$api_include" -I "$wkt_include" \
  --python_out="$out" --grpc_python_out="$out" \
  --mypy_out=quiet:"$out" --mypy_grpc_out=quiet:"$out" \
  "${protos[@]}"

# Envoy's transcoder needs every import in the set, plus google/rpc/* so that rich error
# details render as JSON (without them Envoy answers 400 with an empty body).
"$py" -m grpc_tools.protoc -I proto -I "$api_include" -I "$wkt_include" \
  --include_imports --include_source_info \
  --descriptor_set_out="$out/servicecall.protoset" \
  "${protos[@]}" google/rpc/status.proto google/rpc/error_details.proto

# Generated modules import each other as servicecall.v1...; make the folders packages so
# mypy and importers see one tree.
find "$out/servicecall" -type d -exec touch {}/__init__.py \;
