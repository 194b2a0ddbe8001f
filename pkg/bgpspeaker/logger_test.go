package bgpspeaker

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// TestGoBGPLogLevels: GoBGP's Info (every FSM step, every withdrawal it
// could not match) is the agent's Debug, so an agent at Info shows only
// GoBGP's warnings and errors, each tagged component=gobgp.
func TestGoBGPLogLevels(t *testing.T) {
	var buf bytes.Buffer
	l := gobgpLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), nil)
	l.Info("peer up", "Topic", "Peer")
	l.Debug("No matching path for withdraw found, may be path was not installed into table")
	l.Warn("the received Update message was treated as withdraw", "Topic", "Peer")
	out := buf.String()
	if strings.Contains(out, "peer up") || strings.Contains(out, "No matching path") {
		t.Errorf("GoBGP Info/Debug reached the Info handler:\n%s", out)
	}
	if !strings.Contains(out, "level=WARN") || !strings.Contains(out, "treated as withdraw") || !strings.Contains(out, "component=gobgp") {
		t.Errorf("GoBGP's warning missing or untagged:\n%s", out)
	}
}
