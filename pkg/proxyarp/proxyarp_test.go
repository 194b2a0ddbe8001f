package proxyarp

// Test addresses: pods use 10.244.0.0/16 (documentation only here: this
// tier does no I/O).

import (
	"crypto/sha1"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/sysctl"
)

func TestVethName(t *testing.T) {
	for _, tc := range []struct{ ns, pod string }{
		{"default", "web-1"},
		{"kube-system", "coredns-5d78c9869d-abcde"},
		{"", ""},
		{"a.b", "c"}, // the separator is a dot, so "a.b"/"c" and "a"/"b.c" share a name, as in Calico
	} {
		// Computed independently of VethName: sha1 over "<ns>.<pod>",
		// printed as hex, first 11 digits.
		want := "cali" + fmt.Sprintf("%x", sha1.Sum([]byte(tc.ns+"."+tc.pod)))[:11]
		got := VethName(tc.ns, tc.pod)
		if got != want {
			t.Errorf("VethName(%q, %q) = %q, want %q", tc.ns, tc.pod, got, want)
		}
		if len(got) != 15 {
			t.Errorf("VethName(%q, %q) = %q: %d bytes, want 15 (IFNAMSIZ-1)", tc.ns, tc.pod, got, len(got))
		}
	}
	// A fixed value, so a change of scheme cannot pass by changing both
	// sides of the comparison above:
	// printf 'default.web-1' | sha1sum = 0761ccbeacef8227989813e1a43b2607744edac9.
	if got, want := VethName("default", "web-1"), "cali0761ccbeace"; got != want {
		t.Errorf("VethName(default, web-1) = %q, want %q", got, want)
	}
	if VethName("default", "web-1") == VethName("default", "web-2") {
		t.Error("different pods got the same veth name")
	}
}

func TestConfigValidate(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		name     string
		cfg      Config
		defaults bool
		wantErr  string // "" = valid
	}{
		{name: "zero value after defaults", defaults: true},
		{name: "zero value without defaults", wantErr: "logger is nil"},
		{name: "temp root", cfg: Config{Logger: logger, Sysctl: sysctl.FS{Root: "/tmp/x/proc/sys"}}},
		{name: "namespace handle", cfg: Config{Logger: logger, Sysctl: sysctl.FS{NS: 7}}},
		{name: "netns.None", cfg: Config{Logger: logger, Sysctl: sysctl.FS{NS: -1}}},
		{name: "relative root", cfg: Config{Logger: logger, Sysctl: sysctl.FS{Root: "proc/sys"}}, wantErr: "clean absolute path"},
		{name: "unclean root", cfg: Config{Logger: logger, Sysctl: sysctl.FS{Root: "/proc/sys/"}}, wantErr: "clean absolute path"},
		{name: "bad handle", cfg: Config{Logger: logger, Sysctl: sysctl.FS{NS: -2}}, wantErr: "not a file descriptor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			if tc.defaults {
				cfg.Defaults()
				if cfg.Logger == nil {
					t.Fatal("Defaults left Logger nil")
				}
			}
			err := cfg.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Validate() = %v, want nil", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("Validate() = %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestValidateWorkload(t *testing.T) {
	good := model.Workload{
		Namespace: "default", Name: "web-1", HostIface: VethName("default", "web-1"),
		IP: netip.MustParseAddr("10.244.1.5"), MTU: 1450,
	}
	if err := validateWorkload(good); err != nil {
		t.Fatalf("valid workload rejected: %v", err)
	}
	for _, tc := range []struct {
		name    string
		mod     func(*model.Workload)
		wantErr string
	}{
		{"no name", func(w *model.Workload) { w.Name = "" }, "namespace and name are required"},
		{"not cali", func(w *model.Workload) { w.HostIface = "veth0123456789a" }, `does not start with "cali"`},
		{"too long", func(w *model.Workload) { w.HostIface = "cali0123456789ab" }, "must be 1-15 bytes"},
		{"slash", func(w *model.Workload) { w.HostIface = "cali/x" }, "contains '/'"},
		{"no IP", func(w *model.Workload) { w.IP = netip.Addr{} }, "not a usable IPv4 address"},
		{"IPv6", func(w *model.Workload) { w.IP = netip.MustParseAddr("fd00::5") }, "not a usable IPv4 address"},
		{"unspecified", func(w *model.Workload) { w.IP = netip.IPv4Unspecified() }, "not a usable IPv4 address"},
		{"MTU 0", func(w *model.Workload) { w.MTU = 0 }, "MTU 0 is outside 68-65535"},
		{"MTU huge", func(w *model.Workload) { w.MTU = 70000 }, "MTU 70000 is outside"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := good
			tc.mod(&w)
			err := validateWorkload(w)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("validateWorkload() = %v, want error containing %q", err, tc.wantErr)
			}
			// Every per-pod error names the pod and its link.
			if prefix := fmt.Sprintf("pod %s (%s): ", w.Key(), w.HostIface); !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("error %q does not start with %q", err, prefix)
			}
		})
	}
}
