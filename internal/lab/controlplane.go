//go:build linux

package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// controlPlane starts etcd, kube-apiserver, kube-controller-manager and
// kube-scheduler in the API namespace and waits until the API server is
// ready.
func (l *Lab) controlPlane(ctx context.Context) error {
	if err := os.MkdirAll(l.path("etcd"), 0o700); err != nil {
		return err
	}
	if err := l.start("etcd", inNetns(l.APINS(), filepath.Join(l.cfg.Assets, "etcd"),
		"--name", "wrenlab", "--data-dir", l.path("etcd"),
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "wrenlab=http://127.0.0.1:2380")); err != nil {
		return err
	}
	if err := l.StartAPIServer(ctx); err != nil {
		return err
	}
	pki := l.path("pki")
	if err := l.start("kube-controller-manager", inNetns(l.APINS(), filepath.Join(l.cfg.Assets, "kube-controller-manager"),
		"--kubeconfig", l.kubeconfig(), "--authentication-kubeconfig", l.kubeconfig(), "--authorization-kubeconfig", l.kubeconfig(),
		"--bind-address", "127.0.0.1", "--leader-elect=false",
		"--root-ca-file", pki+"/ca.crt", "--service-account-private-key-file", pki+"/sa.key",
		"--use-service-account-credentials=false", "--controllers", "*,-nodeipam,-service-lb-controller,-cloud-node-lifecycle")); err != nil {
		return err
	}
	if err := l.start("kube-scheduler", inNetns(l.APINS(), filepath.Join(l.cfg.Assets, "kube-scheduler"),
		"--kubeconfig", l.kubeconfig(), "--authentication-kubeconfig", l.kubeconfig(), "--authorization-kubeconfig", l.kubeconfig(),
		"--bind-address", "127.0.0.1", "--leader-elect=false")); err != nil {
		return err
	}
	// The controller manager creates the default ServiceAccount that pod
	// admission looks up; wait for it so the first pods are not refused.
	return l.poll(ctx, 60*time.Second, "default ServiceAccount", "kube-controller-manager", func() error {
		_, err := l.Kubectl(ctx, "-n", "default", "get", "serviceaccount", "default")
		return err
	})
}

// StartAPIServer starts kube-apiserver (again, after StopAPIServer) and
// waits until /readyz answers. Its flags: Node and RBAC authorization
// with NodeRestriction admission, as on a production cluster; the admin
// certificate (system:masters) also serves as the client certificate
// towards the kubelets (logs, exec).
func (l *Lab) StartAPIServer(ctx context.Context) error {
	pki := l.path("pki")
	// --bind-address 0.0.0.0: inside the API namespace that is
	// 198.18.0.2 and 127.0.0.1.
	if err := l.start("kube-apiserver", inNetns(l.APINS(), filepath.Join(l.cfg.Assets, "kube-apiserver"),
		"--etcd-servers", "http://127.0.0.1:2379",
		"--bind-address", "0.0.0.0", "--advertise-address", APIServerIP, "--secure-port", "6443",
		"--cert-dir", pki, "--tls-cert-file", pki+"/apiserver.crt", "--tls-private-key-file", pki+"/apiserver.key",
		"--client-ca-file", pki+"/ca.crt",
		"--kubelet-client-certificate", pki+"/admin.crt", "--kubelet-client-key", pki+"/admin.key",
		"--kubelet-preferred-address-types", "InternalIP",
		"--service-account-issuer", "https://kubernetes.default.svc",
		"--service-account-key-file", pki+"/sa.pub", "--service-account-signing-key-file", pki+"/sa.key",
		"--service-cluster-ip-range", "10.96.0.0/16",
		"--authorization-mode", "Node,RBAC", "--enable-admission-plugins", "NodeRestriction",
		"--allow-privileged=true", "--profiling=false")); err != nil {
		return err
	}
	return l.poll(ctx, 90*time.Second, "kube-apiserver /readyz", "kube-apiserver", func() error {
		out, err := l.Kubectl(ctx, "get", "--raw", "/readyz")
		if err != nil {
			return err
		}
		if out != "ok" {
			return fmt.Errorf("/readyz: %s", out)
		}
		return nil
	})
}

// StopAPIServer stops kube-apiserver (SIGTERM), leaving etcd and
// everything else running: a control-plane outage.
func (l *Lab) StopAPIServer() error {
	if !l.stop("kube-apiserver", 20*time.Second) {
		return fmt.Errorf("kube-apiserver is not running")
	}
	return nil
}
