#!/usr/bin/env bash
# The JSON face, with curl: submit a call due now and one due in 5 s to a local sink, then
# follow both to SUCCEEDED. Needs a running mesh (`make up`).
set -euo pipefail
cd "$(dirname "$0")/.."
API=${API:-http://127.0.0.1:8080}
SINK_PORT=${SINK_PORT:-9999}
TENANT=${TENANT:-demo}
# `make up` made a key for the tenant "demo"; every request authenticates with it.
KEY=${KEY:-$(cat .run/dev/demo.key)}
AUTH="authorization: Bearer $KEY"

# A loopback sink that prints each request it receives.
PYTHONPATH=.:gen .venv/bin/python -m meshctl.sink --port "$SINK_PORT" &
sink=$!
trap 'kill $sink 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$SINK_PORT/" && break; sleep 0.1; done

body=$(printf '{"hello":"world"}' | base64)
echo "== submit a call due now"
now_id=$(curl -sS -D /dev/stderr -X POST "$API/v1/tenants/$TENANT/service-calls" -H "$AUTH" \
  -H 'content-type: application/json' \
  -d "{\"serviceCall\":{\"request\":{\"httpMethod\":\"POST\",\"url\":\"http://127.0.0.1:$SINK_PORT/now\",
       \"headers\":{\"Content-Type\":\"application/json\",\"Authorization\":\"Bearer s3cret\"},
       \"body\":\"$body\"},\"tags\":[\"demo\"]}}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["serviceCallId"])')
echo "== submit a call due in 5 s"
later_id=$(curl -sS -X POST "$API/v1/tenants/$TENANT/service-calls" -H "$AUTH" \
  -H 'content-type: application/json' \
  -d "{\"serviceCall\":{\"request\":{\"url\":\"http://127.0.0.1:$SINK_PORT/later\"},\"tags\":[\"demo\"]},\"delay\":\"5s\"}" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["serviceCallId"])')

state() { curl -sS -H "$AUTH" "$API/v1/tenants/$TENANT/service-calls/$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])'; }
for _ in $(seq 100); do
  a=$(state "$now_id"); b=$(state "$later_id")
  echo "now=$a later=$b"
  [[ $a == SUCCEEDED && $b == SUCCEEDED ]] && break
  sleep 0.5
done
echo "== the finished call, with its attempts (note the redacted Authorization header)"
curl -sS -H "$AUTH" "$API/v1/tenants/$TENANT/service-calls/$later_id?view=FULL" | python3 -m json.tool
echo "== the tenant's succeeded calls tagged demo"
curl -sS -H "$AUTH" "$API/v1/tenants/$TENANT/service-calls?states=SUCCEEDED&tags=demo&pageSize=5" \
  | python3 -c 'import json,sys
page = json.load(sys.stdin)
for c in page["serviceCalls"]:
    print(c["serviceCallId"], c["state"], c["request"]["url"], c["tags"])
print("nextPageToken:", page["nextPageToken"] or "(last page)")'
[[ $(state "$now_id") == SUCCEEDED && $(state "$later_id") == SUCCEEDED ]]
