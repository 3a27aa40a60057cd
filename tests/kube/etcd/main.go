// Command etcd is upstream's etcd server (the body of etcd's own server/main.go),
// built from the Go module proxy: Debian's etcd-server is 3.4, older than the
// 3.5 that Kubernetes 1.33 supports.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
