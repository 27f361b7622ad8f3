#!/usr/bin/env bash
# A real single-node Kubernetes on this machine, without Docker or a registry (make k8s-up/-down):
# etcd, kube-apiserver, -controller-manager, -scheduler, containerd, kubelet and kube-proxy run
# as local processes; CoreDNS runs as a pod. Each choice is explained where it is made.
#
# Usage: scripts/k8s/node.sh up|down|status
#
# Interface for other scripts and tests (written by `up`, removed by `down`):
#   .run/k8s/env            bash-sourceable:
#       KUBECONFIG          admin kubeconfig (system:masters) for kubectl and clients
#       CONTAINERD_ADDRESS  the node's containerd socket (ctr reads this variable)
#       CONTAINERD_NAMESPACE=k8s.io, the namespace the kubelet's images live in
#       K8S_NODE_IP         the node's address, on an interface this script creates (sck8s0:
#                           dummy, or a bridge without ports where the kernel has no dummy driver)
#       K8S_NODE_NAME, K8S_DNS_IP, K8S_KUBECTL (path of the matching kubectl)
#   scripts/k8s/load-image.sh ARCHIVE...   import OCI/docker archives into the node's containerd
#       (e.g. from `podman save --format oci-archive`); manifests then use
#       `image: localhost/NAME:TAG` with `imagePullPolicy: Never` (there is no registry).
#
# What pods get: the CNI bridge (10.244.0.0/24, routes to the pod, Service and node addresses
# only, no default route: nothing leaves this machine), Services in 10.96.0.0/12 with kube-dns at
# 10.96.0.10 (cluster.local only, no forwarding), NodePorts on $K8S_NODE_IP only (not 127.0.0.1).
# Not there: NetworkPolicy enforcement (the bridge plugin ignores it), hostPort, a storage
# provisioner, image pulls. `down` wipes the node's containerd too: load images again after `up`.
#
# Times on 2 cores: `up` with everything cached ~12 s (apiserver 3.5 s, node Ready 6 s, DNS 12 s);
# a second `up` while running ~1 s; `down` ~13 s. The first `up` on a machine also installs the
# Debian packages and builds Kubernetes and CoreDNS (scripts/k8s/build.sh, ~17 min).
#
# Exit codes of `up`: 0 ready; 3 this machine cannot run a node (not root, no cgroups, no
# network namespaces...) - one line on stderr says why, so a test can skip; 1 anything else.
#
# Everything the node writes lives under .run/k8s/ (certs, etcd data, containerd root/state,
# kubelet root, pod logs, pid files, logs); `down` stops only the processes whose pid files are
# there, tears down what they mounted and created, and wipes the directory.
set -euo pipefail
SC_LOG_PREFIX=k8s-node
# shellcheck source=scripts/k8s/lib.sh
source "$(dirname "$0")/lib.sh"

STATE="$(sc_abspath "${K8S_STATE_DIR:-.run/k8s}")"
NODE_NAME="${K8S_NODE_NAME:-servicecall-node}"
# The node's address lives on a dummy interface of our own, never the machine's uplink: pods
# reach the apiserver through it, and nothing of the cluster is reachable from outside.
NODE_IF="${K8S_NODE_IF:-sck8s0}"
NODE_IP="${K8S_NODE_IP:-10.254.0.1}"
BRIDGE="${K8S_BRIDGE:-sck8s-cni0}"
POD_CIDR="${K8S_POD_CIDR:-10.244.0.0/24}"
CLUSTER_CIDR="${K8S_CLUSTER_CIDR:-10.244.0.0/16}"
SERVICE_CIDR="10.96.0.0/12"
API_SERVICE_IP="10.96.0.1"
DNS_IP="10.96.0.10"
ETCD_PORT="${K8S_ETCD_PORT:-12379}"
ETCD_PEER_PORT="${K8S_ETCD_PEER_PORT:-12380}"
API_PORT="${K8S_API_PORT:-6443}"
CNI_NET="servicecall-k8s"

BIN="$K8S_BIN_CACHE/bin"
PKI="$STATE/pki"
LOGS="$STATE/logs"
RUN="$STATE/run"
CTRD="$STATE/containerd"
CTRD_SOCK="$CTRD/containerd.sock"
KUBELET_DIR="$STATE/kubelet"
ADMIN_KUBECONFIG="$STATE/admin.kubeconfig"
ENV_FILE="$STATE/env"
EXIT_UNSUPPORTED=3

kubectl() { "$BIN/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }
ctr_k8s() { ctr --address "$CTRD_SOCK" --namespace k8s.io "$@"; }
elapsed_s() { printf '%d.%01d' $(( ($(sc_now_ms) - $1) / 1000 )) $(( ($(sc_now_ms) - $1) % 1000 / 100 )); }

# --- preflight --------------------------------------------------------------------------

unsupported() {
  printf '[%s] UNSUPPORTED: %s\n' "$SC_LOG_PREFIX" "$*" >&2
  exit "$EXIT_UNSUPPORTED"
}

preflight() {
  [[ "$(uname -s)" == Linux ]] || unsupported "a node needs Linux"
  sc_is_root || unsupported "a node needs root (mounts, network namespaces, iptables)"
  local fs
  fs="$(stat -fc %T /sys/fs/cgroup 2>/dev/null || true)"
  case "$fs" in
    cgroup2fs) ;;
    tmpfs) [[ -d /sys/fs/cgroup/memory && -d /sys/fs/cgroup/cpu ]] \
      || unsupported "cgroup v1 without the memory and cpu controllers mounted" ;;
    *) unsupported "no cgroup filesystem at /sys/fs/cgroup" ;;
  esac
  unshare --net true 2>/dev/null || unsupported "cannot create network namespaces"
  [[ -d /proc/sys/net/bridge ]] || modprobe br_netfilter 2>/dev/null \
    || unsupported "no bridge netfilter (br_netfilter): service IPs would not work between pods"
  grep -qw overlay /proc/filesystems || modprobe overlay 2>/dev/null \
    || unsupported "no overlay filesystem for containerd's snapshotter"
}

# --- small helpers ----------------------------------------------------------------------

# write_if_changed FILE < content: kube-proxy exits when its config file is rewritten, and an
# untouched file keeps the second `up` a no-op. Returns 0 if the file changed.
write_if_changed() {
  local file="$1" tmp
  tmp="$(mktemp "$file.XXXXXX")"
  cat >"$tmp"
  if [[ -f "$file" ]] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
    return 1
  fi
  mv "$tmp" "$file"
}

# The loopback ports each component listens on: a clash with another instance (a second clone's
# node, a stray etcd) must fail clearly instead of joining the wrong cluster.
declare -A PORTS=(
  [etcd]="$ETCD_PORT $ETCD_PEER_PORT" [kube-apiserver]="$API_PORT"
  [kube-controller-manager]=10257 [kube-scheduler]=10259 [kubelet]=10248 [kube-proxy]="10249 10256"
)

# start NAME BINARY ARGS...: run detached in its own session, output to logs/NAME.log, pid in
# run/NAME.pid. Every command line names $STATE, the marker that proves a pid is ours.
start() {
  local name="$1" pid port
  shift
  if sc_pid_alive "$RUN/$name.pid" "$STATE" >/dev/null; then
    return 0
  fi
  for port in ${PORTS[$name]:-}; do
    sc_assert_port_free "$port" "$name"
  done
  # 9>&-: the daemon must not inherit the up/down lock (sc_with_lock's fd 9), or the next
  # up or down would wait for it as long as the node runs.
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" >"$RUN/$name.pid"
  sc_log "started $name (pid $pid)"
}

# wait_for WHAT TIMEOUT_S PROCESS CMD...: poll CMD until it succeeds; fail fast with the log of
# PROCESS if it died.
wait_for() {
  local what="$1" timeout_s="$2" proc="$3" deadline
  shift 3
  deadline=$(( $(date +%s) + timeout_s ))
  until "$@" >/dev/null 2>&1; do
    if [[ -n "$proc" ]] && ! sc_pid_alive "$RUN/$proc.pid" "$STATE" >/dev/null; then
      sc_log_tail "$LOGS/$proc.log"
      sc_die "$proc exited while waiting for $what"
    fi
    if (( $(date +%s) >= deadline )); then
      [[ -z "$proc" ]] || sc_log_tail "$LOGS/$proc.log"
      sc_die "timed out after ${timeout_s}s waiting for $what"
    fi
    sleep 0.2
  done
}

# --- network ----------------------------------------------------------------------------

setup_network() {
  # A kernel without the dummy driver (e.g. a Firecracker VM) gets a bridge without ports:
  # the same thing for this purpose, an interface that only holds a local address.
  if ! ip link show "$NODE_IF" >/dev/null 2>&1; then
    ip link add "$NODE_IF" type dummy 2>/dev/null || ip link add "$NODE_IF" type bridge \
      || unsupported "cannot create a network interface (ip link add type dummy/bridge)"
  fi
  ip addr replace "$NODE_IP/32" dev "$NODE_IF"
  ip link set "$NODE_IF" up
  # Locally originated traffic to a Service IP leaves from the node address over the dummy
  # interface, so kube-proxy's DNAT applies and nothing can ever reach the uplink.
  ip route replace "$SERVICE_CIDR" dev "$NODE_IF" src "$NODE_IP"
  # kube-proxy's DNAT must see traffic between pods on the same bridge.
  if [[ "$(cat /proc/sys/net/bridge/bridge-nf-call-iptables)" != 1 ]]; then
    echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
  fi
}

# --- certificates and kubeconfigs -------------------------------------------------------

# cert NAME CN ORG EKU [SANS]: a key and a certificate signed by the node's CA, once.
cert() {
  local name="$1" cn="$2" org="$3" eku="$4" sans="${5:-}" subj
  [[ -s "$PKI/$name.crt" ]] && return 0
  subj="/CN=$cn"
  [[ -z "$org" ]] || subj="/O=$org$subj"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subj" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -days 365 -out "$PKI/$name.crt" -extfile <(
      printf 'basicConstraints=critical,CA:FALSE\n'
      printf 'keyUsage=critical,digitalSignature,keyEncipherment\n'
      printf 'extendedKeyUsage=%s\n' "$eku"
      [[ -z "$sans" ]] || printf 'subjectAltName=%s\n' "$sans"
    ) 2>/dev/null
  rm -f "$PKI/$name.csr"
}

kubeconfig() {
  local file="$1" user="$2"
  write_if_changed "$file" <<EOF || true
apiVersion: v1
kind: Config
clusters:
  - name: servicecall
    cluster:
      server: https://$NODE_IP:$API_PORT
      certificate-authority: $PKI/ca.crt
users:
  - name: $user
    user:
      client-certificate: $PKI/$user.crt
      client-key: $PKI/$user.key
contexts:
  - name: servicecall
    context: {cluster: servicecall, user: $user}
current-context: servicecall
EOF
}

setup_pki() {
  mkdir -p "$PKI" && chmod 700 "$PKI"
  if [[ ! -s "$PKI/ca.crt" ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -subj "/CN=servicecall-k8s-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  fi
  if [[ ! -s "$PKI/sa.key" ]]; then
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
    openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
  fi
  cert apiserver kube-apiserver "" serverAuth \
    "IP:$NODE_IP,IP:$API_SERVICE_IP,IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters clientAuth
  cert admin kubernetes-admin system:masters clientAuth
  cert controller-manager system:kube-controller-manager "" clientAuth
  cert scheduler system:kube-scheduler "" clientAuth
  cert kube-proxy system:kube-proxy "" clientAuth
  cert kubelet "system:node:$NODE_NAME" system:nodes clientAuth
  cert kubelet-serving "system:node:$NODE_NAME" system:nodes serverAuth "IP:$NODE_IP,DNS:$NODE_NAME"
  kubeconfig "$ADMIN_KUBECONFIG" admin
  local c
  for c in controller-manager scheduler kube-proxy kubelet; do
    kubeconfig "$STATE/$c.kubeconfig" "$c"
  done
}

# --- components -------------------------------------------------------------------------

start_etcd() {
  start etcd etcd --name "$NODE_NAME" --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "$NODE_NAME=http://127.0.0.1:$ETCD_PEER_PORT" \
    --listen-metrics-urls "" --log-level warn
  wait_for "etcd on 127.0.0.1:$ETCD_PORT" 30 etcd \
    curl -fsS "http://127.0.0.1:$ETCD_PORT/health"
}

start_control_plane() {
  start kube-apiserver "$BIN/kube-apiserver" \
    --advertise-address="$NODE_IP" --bind-address="$NODE_IP" --secure-port="$API_PORT" \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --client-ca-file="$PKI/ca.crt" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority="$PKI/ca.crt" \
    --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true --profiling=false
  wait_for "the apiserver to be ready" 60 kube-apiserver kubectl get --raw /readyz

  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/sa.key" \
    --cluster-name=servicecall --profiling=false
  start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false
}

start_containerd() {
  mkdir -p "$CTRD/root" "$CTRD/state" "$CTRD/runc" "$CTRD/opt" "$STATE/cni/net.d" \
    "$STATE/cni/ipam"
  # Pods get routes to the cluster's own ranges only, no default route: they cannot reach
  # anything off this machine. No ipMasq and no portmap: the CNI plugins add no iptables chains.
  write_if_changed "$STATE/cni/net.d/10-$CNI_NET.conflist" <<EOF || true
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NET",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$STATE/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR"}]],
        "routes": [{"dst": "$SERVICE_CIDR"}, {"dst": "$NODE_IP/32"}, {"dst": "$CLUSTER_CIDR"}]
      }
    }
  ]
}
EOF
  # restrict_oom_score_adj: the sandbox lacks CAP_SYS_RESOURCE, and without it every pod
  # sandbox fails ("can't get final child's PID from pipe"). runc, not crun (fails on this
  # cgroup layout). Every path is under $STATE, so nothing is shared with another containerd.
  write_if_changed "$CTRD/config.toml" <<EOF || true
version = 2
root = "$CTRD/root"
state = "$CTRD/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "$CTRD_SOCK"

[ttrpc]
  address = "$CTRD_SOCK.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$K8S_PAUSE_IMAGE"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$CTRD/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
    max_conf_num = 1
EOF
  start containerd containerd --config "$CTRD/config.toml"
  wait_for "containerd on $CTRD_SOCK" 30 containerd ctr_k8s version
  # The sandbox image first: the kubelet cannot start any pod without it.
  local archive
  for archive in "$K8S_PAUSE_ARCHIVE" "$K8S_COREDNS_ARCHIVE"; do
    import_image "$archive"
  done
}

# import_image ARCHIVE: once per image (the archive's ref name is the image name).
import_image() {
  local name
  name="$(tar -xOf "$1" index.json | python3 -c \
    'import json,sys; print(json.load(sys.stdin)["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"])')"
  if ! ctr_k8s images ls -q "name==$name" | grep -q .; then
    ctr_k8s images import "$1" >/dev/null
    sc_log "imported $name"
  fi
}

start_kubelet() {
  mkdir -p "$KUBELET_DIR" "$STATE/pod-logs"
  # An empty resolv.conf: pods with dnsPolicy Default get no outside resolver at all.
  [[ -f "$STATE/resolv.conf" ]] || : >"$STATE/resolv.conf"
  # Image GC at 100 %: there is no registry to pull a collected image back from.
  write_if_changed "$STATE/kubelet.yaml" <<EOF || true
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$CTRD_SOCK
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [$DNS_IP]
resolvConf: $STATE/resolv.conf
podLogsDir: $STATE/pod-logs
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
serializeImagePulls: false
EOF
  start kubelet "$BIN/kubelet" --config="$STATE/kubelet.yaml" \
    --kubeconfig="$STATE/kubelet.kubeconfig" --root-dir="$KUBELET_DIR" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP"
}

start_kube_proxy() {
  write_if_changed "$STATE/kube-proxy.yaml" <<EOF || true
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $CLUSTER_CIDR
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [$NODE_IP/32]
conntrack: {maxPerCore: 0}
EOF
  start kube-proxy "$BIN/kube-proxy" --config="$STATE/kube-proxy.yaml"
}

# dns_query NAME: one A query to the cluster DNS over UDP, from the host; prints the address.
dns_query() {
  python3 - "$DNS_IP" "$1" <<'EOF'
import socket, struct, sys
server, name = sys.argv[1], sys.argv[2]
q = struct.pack(">HHHHHH", 0x5C0D, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
q += struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1)
s.sendto(q, (server, 53))
r = s.recv(512)
if struct.unpack(">H", r[2:4])[0] & 0xF or struct.unpack(">H", r[6:8])[0] == 0:
    sys.exit(1)
print(socket.inet_ntoa(r[-4:]))
EOF
}

apply_dns() {
  # The apiserver creates kube-system just after it first reports ready.
  wait_for "namespace kube-system" 30 kube-apiserver kubectl get namespace kube-system
  sed -e "s|@IMAGE@|$K8S_COREDNS_IMAGE|" -e "s|@DNS_IP@|$DNS_IP|" \
    "$SC_REPO_ROOT/k8s/local/coredns.yaml" \
    | kubectl apply --server-side --field-manager=servicecall-node -f - >/dev/null
}

write_env() {
  write_if_changed "$ENV_FILE" <<EOF || true
# The local Kubernetes node (scripts/k8s/node.sh); source it: . $ENV_FILE
export KUBECONFIG=$ADMIN_KUBECONFIG
export CONTAINERD_ADDRESS=$CTRD_SOCK
export CONTAINERD_NAMESPACE=k8s.io
export K8S_NODE_IP=$NODE_IP
export K8S_NODE_NAME=$NODE_NAME
export K8S_DNS_IP=$DNS_IP
export K8S_KUBECTL=$BIN/kubectl
EOF
}

cmd_up() {
  local t0
  preflight
  "$SC_REPO_ROOT/scripts/k8s/build.sh" all
  # The Makefile puts .run/bin on PATH: the matching kubectl is there for the user too.
  mkdir -p "$SC_REPO_ROOT/.run/bin"
  ln -sfn "$BIN/kubectl" "$SC_REPO_ROOT/.run/bin/kubectl"
  t0=$(sc_now_ms)
  mkdir -p "$STATE" "$LOGS" "$RUN"
  setup_network
  setup_pki
  start_etcd
  start_control_plane
  sc_log "apiserver ready at $(elapsed_s "$t0") s"
  # Start everything, then wait: CoreDNS is scheduled the moment the node registers, while the
  # kubelet and kube-proxy are still syncing.
  apply_dns
  start_containerd
  start_kubelet
  start_kube_proxy
  wait_for "node $NODE_NAME to be Ready" 90 kubelet \
    kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
  sc_log "node Ready at $(elapsed_s "$t0") s"
  wait_for "kube-proxy to be healthy" 30 kube-proxy curl -fsS http://127.0.0.1:10256/healthz
  wait_for "the cluster DNS to answer at $DNS_IP" 90 "" \
    dns_query kubernetes.default.svc.cluster.local
  write_env
  sc_log "node $NODE_NAME Ready and cluster DNS answering in $(elapsed_s "$t0") s"
  printf 'export KUBECONFIG=%s   # or: source %s\n' "$ADMIN_KUBECONFIG" "$ENV_FILE"
}

# --- down -------------------------------------------------------------------------------

# Pods go first, through the kubelet, so the CNI plugin tears down their network (veth, IP):
# with the controllers stopped nothing recreates them.
remove_pods() {
  sc_pid_alive "$RUN/kube-apiserver.pid" "$STATE" >/dev/null || return 0
  sc_pid_alive "$RUN/kubelet.pid" "$STATE" >/dev/null || return 0
  sc_pid_stop "$RUN/kube-controller-manager.pid" "$STATE" 10
  sc_pid_stop "$RUN/kube-scheduler.pid" "$STATE" 10
  kubectl delete pods --all --all-namespaces --grace-period=0 --force --wait=false \
    >/dev/null 2>&1 || true
  local deadline=$(( $(date +%s) + 30 ))
  while ctr_k8s tasks ls -q 2>/dev/null | grep -q .; do
    (( $(date +%s) < deadline )) || { sc_log "pods still running after 30 s; killing them"; break; }
    sleep 0.2
  done
}

# What the kubelet did not stop: kill the tasks and remove the containers, so their shims exit.
remove_containers() {
  sc_pid_alive "$RUN/containerd.pid" "$STATE" >/dev/null || return 0
  local id
  for id in $(ctr_k8s tasks ls -q 2>/dev/null); do
    ctr_k8s tasks kill --signal SIGKILL "$id" >/dev/null 2>&1 || true
  done
  for id in $(ctr_k8s tasks ls -q 2>/dev/null); do
    ctr_k8s tasks delete --force "$id" >/dev/null 2>&1 || true
  done
  for id in $(ctr_k8s containers ls -q 2>/dev/null); do
    ctr_k8s containers delete "$id" >/dev/null 2>&1 || true
  done
}

# Shims outlive containerd by design; ours carry our socket path in their command line.
stop_shims() {
  local p
  for p in /proc/[0-9]*; do
    tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -q "^[^ ]*containerd-shim.*-address $CTRD_SOCK" \
      || continue
    kill -KILL "${p#/proc/}" 2>/dev/null || true
  done
}

# Everything mounted under $STATE (container rootfs, shm, secret tmpfs, netns bind mounts),
# deepest first; a lazy unmount if a plain one is refused.
unmount_state() {
  local m
  awk -v s="$STATE" '$2 == s || index($2, s "/") == 1 {print $2}' /proc/mounts | sort -r \
    | while read -r m; do
      m="$(printf '%b' "$m")"  # /proc/mounts escapes spaces as \040
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || sc_log "could not unmount $m"
    done
}

# Delete the chains kube-proxy and the kubelet created (KUBE-*), and any CNI-* chain of our
# network, after deleting the jumps into them from the built-in chains. Other chains (podman's,
# another cluster's CNI) are left alone.
remove_iptables() {
  local cmd table rules
  for cmd in iptables ip6tables; do
    command -v "$cmd" >/dev/null || continue
    for table in filter nat mangle raw; do
      rules="$("$cmd-save" -t "$table" 2>/dev/null)" || continue
      local ours
      ours="$(printf '%s\n' "$rules" | awk -v net="$CNI_NET" '
        /^:KUBE-/ { print substr($1, 2) }
        /^-A CNI-/ && index($0, "name: \"" net "\"") { print $2 }' | sort -u)"
      [[ -n "$ours" ]] || continue
      {
        echo "*$table"
        # Jumps from chains that stay (built-in or foreign) into ours.
        printf '%s\n' "$rules" | awk -v list="$ours" '
          BEGIN { n = split(list, a, "\n"); for (i = 1; i <= n; i++) mine[a[i]] = 1 }
          /^-A / && !($2 in mine) { for (i = 3; i <= NF; i++) if (($i == "-j" || $i == "-g") && ($(i+1) in mine)) { sub(/^-A /, "-D "); print; break } }'
        printf '%s\n' "$ours" | sed 's/^/-F /'
        printf '%s\n' "$ours" | sed 's/^/-X /'
        echo COMMIT
      } | "$cmd-restore" --noflush || sc_log "could not remove $cmd $table chains: $ours"
    done
  done
}

# The kubelet's cgroups (kubepods/...) in every hierarchy, deepest first, once they are empty.
remove_cgroups() {
  local d
  find /sys/fs/cgroup -mindepth 1 -maxdepth 3 -type d -name kubepods 2>/dev/null \
    | while read -r d; do
      find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
}

# The few paths the kubelet and CNI hard-code outside --root-dir: only our entries go.
remove_host_leftovers() {
  local f id
  # libcni's result cache: our network's entries, and the loopback entries of the same sandboxes.
  for f in /var/lib/cni/results/"$CNI_NET"-*; do
    [[ -e "$f" ]] || continue
    id="${f#/var/lib/cni/results/"$CNI_NET"-}" id="${id%-eth0}"
    rm -f "$f" /var/lib/cni/results/cni-loopback-"$id"-lo
  done
  # /var/log/containers/*.log link into our pod logs.
  for f in /var/log/containers/*.log; do
    [[ -L "$f" && "$(readlink "$f")" == "$STATE/"* ]] && rm -f "$f"
  done
  # The device manager's socket and checkpoint (pluginapi.DevicePluginPath is fixed); the dirs
  # only if nothing else is left in them.
  rm -f /var/lib/kubelet/device-plugins/kubelet.sock \
    /var/lib/kubelet/device-plugins/kubelet_internal_checkpoint
  # Directories our processes created on the way (shim sockets, the CNI cache, the log links),
  # only if empty: another runtime on the machine may use them too.
  rmdir /var/lib/kubelet/device-plugins /var/lib/kubelet /var/log/containers \
    /run/containerd/s /run/containerd /var/lib/cni/results /var/lib/cni 2>/dev/null || true
}

cmd_down() {
  local t0 name
  t0=$(sc_now_ms)
  if [[ ! -d "$STATE" ]] && ! ip link show "$NODE_IF" >/dev/null 2>&1; then
    sc_log "no node to stop"
    return 0
  fi
  sc_is_root || unsupported "stopping the node needs root"
  remove_pods
  sc_log "pods stopped at $(elapsed_s "$t0") s"
  # With the pods gone, the apiserver's clients stop together; then the apiserver (its drain
  # took 13 s while clients were still leaving, ~5 s after them), then etcd.
  for name in kube-proxy kubelet kube-scheduler kube-controller-manager; do
    sc_pid_stop "$RUN/$name.pid" "$STATE" 15 &
  done
  wait
  sc_pid_stop "$RUN/kube-apiserver.pid" "$STATE" 15
  sc_pid_stop "$RUN/etcd.pid" "$STATE" 15
  remove_containers
  sc_pid_stop "$RUN/containerd.pid" "$STATE" 15
  sc_log "processes stopped at $(elapsed_s "$t0") s"
  stop_shims
  unmount_state
  ip link del "$BRIDGE" 2>/dev/null || true
  ip link del "$NODE_IF" 2>/dev/null || true
  remove_iptables
  remove_cgroups
  remove_host_leftovers
  # Keep the logs of the last run for a post-mortem; everything else goes.
  if [[ -d "$LOGS" ]]; then
    rm -rf "$STATE.last-logs" && mv "$LOGS" "$STATE.last-logs"
  fi
  rm -rf "$STATE"
  sc_log "node stopped and wiped in $(elapsed_s "$t0") s (last logs: $STATE.last-logs)"
}

cmd_status() {
  local name rc=0
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet \
    kube-proxy; do
    if pid="$(sc_pid_alive "$RUN/$name.pid" "$STATE")"; then
      printf '%-24s running (pid %s)\n' "$name" "$pid"
    else
      printf '%-24s stopped\n' "$name"
      rc=1
    fi
  done
  if ((rc == 0)); then
    kubectl get nodes -o wide && kubectl -n kube-system get pods -o wide
    printf 'env: %s\n' "$ENV_FILE"
  fi
  return "$rc"
}

# One up or down at a time (two terminals, a test and a developer): the lock lives beside the
# state dir, which down removes.
case "${1:-}" in
  up) sc_with_lock "$STATE.lock" cmd_up ;;
  down) sc_with_lock "$STATE.lock" cmd_down ;;
  status) cmd_status ;;
  *) sc_die "usage: $0 up|down|status" ;;
esac
