#!/usr/bin/env bash
# Regenerates gen/ from proto/ with the pinned grpcio-tools and mypy-protobuf, and the public
# API's OpenAPI document with the pinned protoc-gen-openapiv2 (scripts/bootstrap.sh).
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
openapiv2=.run/bin/protoc-gen-openapiv2
[[ -x $openapiv2 ]] || { echo "$openapiv2 missing: run scripts/bootstrap.sh" >&2; exit 1; }
rm -rf "${out:?}/servicecall" "${out:?}/openapi"
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

# OpenAPI v2 for the public service only (servicecall/v1; the internal services are not
# routed by Envoy), merged into one document. gateway/openapi.yaml adds what the protos do not
# say: the API-key security definition, the edge's status codes, id and duration syntax.
# The plugin sorts paths and definitions itself, so the output is byte-for-byte stable.
mapfile -t public_protos < <(printf '%s\n' "${protos[@]}" | grep '^servicecall/v1/')
mkdir -p "$out/openapi"
"$py" -m grpc_tools.protoc -I proto -I "$api_include" -I "$wkt_include" \
  --plugin=protoc-gen-openapiv2="$openapiv2" \
  --openapiv2_out="$out/openapi" \
  --openapiv2_opt=allow_merge=true,merge_file_name=servicecall \
  --openapiv2_opt=ignore_go_package_option=true \
  --openapiv2_opt=openapi_configuration=gateway/openapi.yaml \
  "${public_protos[@]}"

# Generated modules import each other as servicecall.v1...; make the folders packages so
# mypy and importers see one tree.
find "$out/servicecall" -type d -exec touch {}/__init__.py \;
