package main

import (
	"strings"
	"testing"
	"time"
)

// TestEnvSettings: set values parse, unset ones take the default, and a
// value that does not parse is collected (run refuses to start) instead
// of silently becoming the default.
func TestEnvSettings(t *testing.T) {
	envErrs = nil
	t.Setenv("W_INT", "28")
	t.Setenv("W_DUR", "10s")
	t.Setenv("W_BOOL", "true")
	if got := envInt("W_INT"); got != 28 {
		t.Errorf("envInt = %d, want 28", got)
	}
	if got := envDuration("W_DUR", time.Minute); got != 10*time.Second {
		t.Errorf("envDuration = %s, want 10s", got)
	}
	if got := envDuration("W_UNSET", time.Minute); got != time.Minute {
		t.Errorf("unset envDuration = %s, want the default 1m", got)
	}
	if !envBool("W_BOOL") || envBool("W_UNSET") || envInt("W_UNSET") != 0 {
		t.Error("envBool/envInt of set and unset values")
	}
	if len(envErrs) != 0 {
		t.Fatalf("errors for good values: %v", envErrs)
	}
	t.Setenv("W_INT", "twenty")
	t.Setenv("W_DUR", "10")
	t.Setenv("W_BOOL", "yes")
	envInt("W_INT")
	envDuration("W_DUR", time.Minute)
	envBool("W_BOOL")
	if len(envErrs) != 3 {
		t.Fatalf("%d errors for 3 bad values: %v", len(envErrs), envErrs)
	}
	for i, name := range []string{`W_INT="twenty"`, `W_DUR="10"`, `W_BOOL="yes"`} {
		if !strings.Contains(envErrs[i].Error(), name) {
			t.Errorf("error %q does not name %s", envErrs[i], name)
		}
	}
	envErrs = nil
}
