package nsexec_test

import (
	"os"
	"testing"

	"github.com/wren-net/wren/internal/nsexec"
	nstest "github.com/wren-net/wren/test/netns"
)

func netnsOf(path string) string {
	l, _ := os.Readlink(path)
	return l
}

// TestDo: fn runs in the target namespace; neither the process's main
// thread nor the caller's thread is left there afterwards.
func TestDo(t *testing.T) {
	ns := nstest.New(t, "nsexec")
	procBefore := netnsOf("/proc/self/ns/net")
	var inside string
	for i := 0; i < 50; i++ {
		if err := nsexec.Do(ns.Handle, func() error { inside = netnsOf("/proc/thread-self/ns/net"); return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if inside == procBefore || inside == "" {
		t.Fatalf("fn ran in %q, the process's namespace is %q", inside, procBefore)
	}
	if after := netnsOf("/proc/self/ns/net"); after != procBefore {
		t.Fatalf("main thread moved from %s to %s", procBefore, after)
	}
	if cur := netnsOf("/proc/thread-self/ns/net"); cur != procBefore {
		t.Fatalf("caller's thread is in %s", cur)
	}
}
