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

// TestGoBGPAPIFlag: GoBGP's API is off by default and only a loopback
// address is accepted.
func TestGoBGPAPIFlag(t *testing.T) {
	c, err := parseFlags([]string{"--node-name", "n"})
	if err != nil || c.Agent.GoBGPAPI != "" {
		t.Fatalf("default: %q, %v; want off", c.Agent.GoBGPAPI, err)
	}
	for _, ok := range []string{"127.0.0.1:50051", "[::1]:50051", "127.0.0.2:1"} {
		if c, err := parseFlags([]string{"--gobgp-api", ok}); err != nil || c.Agent.GoBGPAPI != ok {
			t.Errorf("--gobgp-api %s refused: %v", ok, err)
		}
	}
	for bad, says := range map[string]string{
		"0.0.0.0:50051":     "not a loopback address",
		"198.18.0.11:50051": "not a loopback address",
		":50051":            "not an address:port",
		"localhost:50051":   "not an address:port",
		"127.0.0.1:0":       "port 0",
	} {
		if _, err := parseFlags([]string{"--gobgp-api", bad}); err == nil || !strings.Contains(err.Error(), says) || !strings.Contains(err.Error(), "--gobgp-api") {
			t.Errorf("--gobgp-api %s: %v; want an error saying %q", bad, err, says)
		}
	}
	if _, err := parseFlags([]string{"--gobgp-api", "127.0.0.1:50051", "--bgp=false"}); err == nil {
		t.Error("--gobgp-api with --bgp=false accepted")
	}
}
