package bgpspeaker

import (
	"context"
	"log/slog"
	"sync/atomic"
)

// gobgpHandler passes GoBGP's log records to the agent's handler one level
// lower for Info and Debug: GoBGP logs every FSM transition, every
// configuration step and every accepted connection at Info, which would
// drown the agent's own Info lines (peer up/down, sync failed), and the
// speaker logs the session changes an operator needs itself, from the peer
// watch. Warn and Error keep their level: they are malformed messages,
// hold timer expiries and socket option failures.
//
// retired, when set, drops the one Error GoBGP logs when a server whose
// BGP part was already stopped (SetGlobal's StopBgp keeping graceful
// restart) is shut down for good: Stop calls StopBgp again, which fails
// with "not running".
type gobgpHandler struct {
	h       slog.Handler
	retired *atomic.Bool
}

func gobgpLevel(l slog.Level) slog.Level {
	switch {
	case l >= slog.LevelWarn:
		return l
	case l >= slog.LevelInfo:
		return slog.LevelDebug
	default:
		return slog.LevelDebug - 4
	}
}

func (g gobgpHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return g.h.Enabled(ctx, gobgpLevel(l))
}

func (g gobgpHandler) Handle(ctx context.Context, r slog.Record) error {
	if g.retired != nil && g.retired.Load() && r.Message == "failed to stop BGP server" {
		return nil
	}
	r.Level = gobgpLevel(r.Level)
	return g.h.Handle(ctx, r)
}

func (g gobgpHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return gobgpHandler{g.h.WithAttrs(as), g.retired}
}

func (g gobgpHandler) WithGroup(name string) slog.Handler {
	return gobgpHandler{g.h.WithGroup(name), g.retired}
}

// gobgpLogger is the logger handed to GoBGP (server.LoggerOption);
// retired may be nil.
func gobgpLogger(l *slog.Logger, retired *atomic.Bool) *slog.Logger {
	return slog.New(gobgpHandler{l.With("component", "gobgp").Handler(), retired})
}
