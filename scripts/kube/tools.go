//go:build tools

// The Kubernetes programs `make test-k8s` runs (scripts/k8s-cluster.sh), built from the released
// k8s.io/kubernetes module at the version go.mod pins; the blank imports keep go.sum complete.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
