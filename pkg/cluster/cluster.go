// Package cluster is Wren's only door to the Kubernetes API: the scheme
// with Wren's custom resources (subpackage v1alpha1), a client, and the
// IPAM store over IPAMBlock and IPPool objects. No other package imports
// client-go or controller-runtime.
package cluster

import (
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
)

// AddToScheme registers the built-in Kubernetes types (Nodes, Pods,
// Events, ...) and Wren's wren.network/v1alpha1 types with s.
func AddToScheme(s *runtime.Scheme) error {
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return fmt.Errorf("add client-go types: %w", err)
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		return fmt.Errorf("add wren.network types: %w", err)
	}
	return nil
}

// Scheme returns a new scheme with the built-in and Wren types.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := AddToScheme(s); err != nil {
		// Registration only fails on conflicting type names: a bug.
		panic(err)
	}
	return s
}

// NewClient returns an uncached client for the built-in and Wren types:
// every read goes to the API server. Writes of Wren objects are
// conditional on the resourceVersion they carry.
func NewClient(cfg *rest.Config) (client.Client, error) {
	c, err := client.New(cfg, client.Options{Scheme: Scheme()})
	if err != nil {
		return nil, fmt.Errorf("new kubernetes client for %s: %w", cfg.Host, err)
	}
	return c, nil
}

// RESTConfig loads a client configuration: the kubeconfig at path, or the
// in-cluster service account when path is "".
func RESTConfig(path string) (*rest.Config, error) {
	if path == "" {
		cfg, err := rest.InClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster config (pass --kubeconfig outside a pod): %w", err)
		}
		return cfg, nil
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("kubeconfig %s: %w", path, err)
	}
	return cfg, nil
}

// Client-side rate limit of the agent's API client. client-go's default
// (5 requests/s, burst 10) throttles a node that starts many pods at once:
// every CNI ADD and DEL is one IPAM write. One agent per node at 50/s is
// still far below what an API server serves.
const (
	ClientQPS   = 50
	ClientBurst = 100
)

// withRate returns a copy of cfg with the agent's rate limit unless the
// caller set one.
func withRate(cfg *rest.Config) *rest.Config {
	c := rest.CopyConfig(cfg)
	if c.QPS == 0 {
		c.QPS = ClientQPS
	}
	if c.Burst == 0 {
		c.Burst = ClientBurst
	}
	return c
}
