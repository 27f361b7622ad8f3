// A tiny HTTP server and client for the local node's smoke test (scripts/k8s/smoke.sh): no
// dependencies, built static into a from-scratch image by scripts/k8s/build.sh.
module servicecall.local/k8s/probe

go 1.24.0
