#!/usr/bin/env bash
# The gRPC face, with grpcurl through Envoy's public port (reflection is routed there too):
# submit a call due now and one due in 5 s to a local sink, and follow both to SUCCEEDED.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.run/bin:$PATH"
API=${API:-127.0.0.1:8080}
SINK_PORT=${SINK_PORT:-9998}
TENANT=${TENANT:-demo}
KEY=${KEY:-$(cat .run/dev/demo.key)}
AUTH="authorization: Bearer $KEY"

PYTHONPATH=.:gen .venv/bin/python -m meshctl.sink --port "$SINK_PORT" &
sink=$!
trap 'kill $sink 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$SINK_PORT/" && break; sleep 0.1; done

echo "== services, by reflection: public (through Envoy) and each service directly"
grpcurl -plaintext "$API" list
for port in 50051 50052 50053; do grpcurl -plaintext "127.0.0.1:$port" list | grep servicecall; done

submit() {
  grpcurl -plaintext -H "$AUTH" -d @ "$API" servicecall.v1.ServiceCallService/SubmitServiceCall | \
    python3 -c 'import json,sys; print(json.load(sys.stdin)["service_call_id"])'
}
echo "== submit a call due now, and one due in 5 s"
now_id=$(submit <<JSON
{"tenant_id": "$TENANT", "service_call": {"request": {"url": "http://127.0.0.1:$SINK_PORT/grpc-now"}, "tags": ["grpc"]}}
JSON
)
later_id=$(submit <<JSON
{"tenant_id": "$TENANT", "service_call": {"request": {"url": "http://127.0.0.1:$SINK_PORT/grpc-later"}}, "delay": "5s"}
JSON
)
state() {
  grpcurl -plaintext -H "$AUTH" -d "{\"tenant_id\":\"$TENANT\",\"service_call_id\":\"$1\"}" "$API" \
    servicecall.v1.ServiceCallService/GetServiceCall | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])'
}
for _ in $(seq 100); do
  a=$(state "$now_id"); b=$(state "$later_id")
  echo "now=$a later=$b"
  [[ $a == SUCCEEDED && $b == SUCCEEDED ]] && break
  sleep 0.5
done
grpcurl -plaintext -H "$AUTH" -d "{\"tenant_id\":\"$TENANT\",\"service_call_id\":\"$later_id\",\"view\":\"FULL\"}" "$API" \
  servicecall.v1.ServiceCallService/GetServiceCall
[[ $(state "$now_id") == SUCCEEDED && $(state "$later_id") == SUCCEEDED ]]
