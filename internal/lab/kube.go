//go:build linux

package lab

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netns"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/wren-net/wren/internal/nsexec"
)

// Kubectl runs kubectl with the admin kubeconfig inside the API
// namespace (the only place that reaches 198.18.0.2 besides the nodes)
// and returns its trimmed standard output; an error carries stderr.
func (l *Lab) Kubectl(ctx context.Context, args ...string) (string, error) {
	argv := inNetns(l.APINS(), append([]string{filepath.Join(l.cfg.Assets, "kubectl"), "--kubeconfig", l.kubeconfig()}, args...)...)
	out, err := run(ctx, argv[0], argv[1:]...)
	return strings.TrimSpace(out), err
}

// KubectlArgv is the command line that runs kubectl against the lab
// (for printing and for callers that need to stream).
func (l *Lab) KubectlArgv(args ...string) []string {
	return inNetns(l.APINS(), append([]string{filepath.Join(l.cfg.Assets, "kubectl"), "--kubeconfig", l.kubeconfig()}, args...)...)
}

// RESTConfig returns an admin client configuration whose connections are
// made inside the API namespace, so client-go works from the root
// namespace without any route or address there: each socket is created
// by a thread that joined the namespace (a socket keeps the namespace it
// was created in).
func (l *Lab) RESTConfig() (*rest.Config, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", l.kubeconfig())
	if err != nil {
		return nil, err
	}
	return l.dialInAPINS(cfg)
}

// dialInAPINS makes cfg dial inside the API namespace.
func (l *Lab) dialInAPINS(cfg *rest.Config) (*rest.Config, error) {
	h, err := netns.GetFromPath(netnsPath(l.APINS()))
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", l.APINS(), err)
	}
	// The handle lives as long as the config may dial.
	cfg.Dial = nsexec.Dialer(h)
	return cfg, nil
}

// TokenConfig returns a client configuration that authenticates with
// token (a service account's) and trusts the lab CA, dialing inside the
// API namespace.
func (l *Lab) TokenConfig(token string) (*rest.Config, error) {
	cfg := &rest.Config{
		Host:            "https://" + APIServerIP + ":6443",
		BearerToken:     token,
		TLSClientConfig: rest.TLSClientConfig{CAFile: l.path("pki", "ca.crt")},
	}
	return l.dialInAPINS(cfg)
}
