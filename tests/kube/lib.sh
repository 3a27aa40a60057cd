# shellcheck shell=bash disable=SC2034
# Shared by tests/kube/{build,up,down}; sourced, not run.
#
# Everything lives under target/kube of the repo this file is in, whatever the
# caller's working directory:
#   bin/{kube-apiserver,kube-controller-manager,kube-scheduler,etcd,kwok}
#                                   built by tests/kube/build (+ .stamp files)
#   pki/                            certificates and keys, made anew by every up
#   etcd-data/                      etcd's data dir, wiped by every up
#   kubeconfig                      admin (CN=admin, O=system:masters) client cert
#   env                             shell-sourceable ports and URLs of the running plane
#   *.pid, *.log                    the processes

kube_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
kube_src="$kube_repo/tests/kube"
kube_dir="$kube_repo/target/kube"
kube_bin="$kube_dir/bin"
kube_pki="$kube_dir/pki"
kubeconfig="$kube_dir/kubeconfig"

# The pod network (see README.md): pods get IPs from the node's pod CIDR, in
# 198.18.0.0/15 (RFC 2544's benchmarking range: nothing there can ever leave
# the machine). The host is 198.19.255.254 on the bridge every pod's veth
# joins, which is also the node's InternalIP; the runner's network
# namespaces are named portico-pod-<uid prefix>.
pod_bridge=portico-pods
pod_network=198.18.0.0/15
pod_gateway=198.19.255.254
node_name=portico-node-0
node_pod_cidr=198.18.0.0/16
pod_netns_prefix=portico-pod-

kube_log() { echo "kube: $*" >&2; }
kube_die() {
    echo "kube: error: $*" >&2
    exit 1
}

# Seconds since the epoch with millisecond precision, and a difference of two.
kube_now() { date +%s.%N; }
kube_since() { awk -v a="$1" -v b="$(kube_now)" 'BEGIN { printf "%.1fs", b - a }'; }

# kube_alive NAME: true when NAME.pid names a live process running our binary
# (not a process that merely reuses the number).
kube_alive() {
    local pid exe
    pid="$(cat "$kube_dir/$1.pid" 2>/dev/null)" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
    # A binary rebuilt under a running process reads "... (deleted)".
    [[ "$exe" == "$kube_bin/$1" || "$exe" == "$kube_bin/$1 (deleted)" ]]
}

# kube_ready: true when the API server behind target/kube/kubeconfig answers
# /readyz with ok.
kube_ready() {
    [ -f "$kubeconfig" ] || return 1
    [ "$(kubectl --kubeconfig "$kubeconfig" --request-timeout=5s get --raw /readyz 2>/dev/null)" = ok ]
}

# kube_components: every process up starts, in the order down stops them.
kube_components="kwok kube-scheduler kube-controller-manager kube-apiserver etcd"
