package sysctl

import (
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
