package sysctl

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestSetGetUnderRoot(t *testing.T) {
	root := t.TempDir()
	key := "net/ipv4/conf/vxlan.calico/proxy_arp"
	if err := os.MkdirAll(filepath.Join(root, "net/ipv4/conf/vxlan.calico"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, key), []byte("0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fs := FS{Root: root}
	if err := fs.Set(key, "1"); err != nil {
		t.Fatal(err)
	}
	got, err := fs.Get(key)
	if err != nil || got != "1" {
		t.Fatalf("Get = %q, %v; want 1", got, err)
	}
	// Setting the same value again must not write (mode 0444 would fail).
	if err := os.Chmod(filepath.Join(root, key), 0o444); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() != 0 { // root ignores file modes
		if err := fs.Set(key, "1"); err != nil {
			t.Fatalf("idempotent Set wrote: %v", err)
		}
	}
	if err := fs.Set("net/ipv4/conf/missing/proxy_arp", "1"); err == nil {
		t.Fatal("Set on a missing key succeeded")
	}
}

// TestSetMany sets several keys at once and reports a missing key by its
// position, leaving the others set.
func TestSetMany(t *testing.T) {
	root := t.TempDir()
	dir := filepath.Join(root, "net/ipv4/conf/cali1")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"proxy_arp", "forwarding"} {
		if err := os.WriteFile(filepath.Join(dir, k), []byte("0\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	fs := FS{Root: root}
	errs := fs.SetMany([]KV{
		{"net/ipv4/conf/cali1/proxy_arp", "1"},
		{"net/ipv4/conf/cali1/missing", "1"},
		{"net/ipv4/conf/cali1/forwarding", "1"},
	})
	if len(errs) != 3 || errs[0] != nil || errs[1] == nil || errs[2] != nil {
		t.Fatalf("SetMany errors = %v, want only the second", errs)
	}
	if !errors.Is(errs[1], os.ErrNotExist) {
		t.Errorf("missing key error %v does not wrap os.ErrNotExist", errs[1])
	}
	for _, k := range []string{"proxy_arp", "forwarding"} {
		if got, err := fs.Get("net/ipv4/conf/cali1/" + k); err != nil || got != "1" {
			t.Errorf("%s = %q, %v; want 1", k, got, err)
		}
	}
}
