package bgpspeaker

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"sync/atomic"

	gobgplog "github.com/osrg/gobgp/v3/pkg/log"
)

// slogAdapter implements GoBGP v3's log.Logger over log/slog. GoBGP logs
// every FSM step at Info/Debug; the handler of the passed-in slog.Logger decides
// what is kept. The level set by GoBGP's SetLevel only filters messages here.
type slogAdapter struct {
	l     *slog.Logger
	level atomic.Uint32 // a gobgplog.LogLevel
}

var _ gobgplog.Logger = (*slogAdapter)(nil)

func newSlogAdapter(l *slog.Logger) *slogAdapter {
	a := &slogAdapter{l: l}
	a.level.Store(uint32(gobgplog.DebugLevel))
	return a
}

// attrs turns GoBGP's fields into slog attributes, sorted by key so that log
// lines are stable. The "Topic" and "Key" fields GoBGP sets on most messages
// keep their names.
func attrs(fields gobgplog.Fields) []any {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]any, 0, len(keys))
	for _, k := range keys {
		v := fields[k]
		if err, ok := v.(error); ok {
			v = err.Error()
		}
		out = append(out, slog.Any(k, v))
	}
	return out
}

func (a *slogAdapter) log(lvl gobgplog.LogLevel, sl slog.Level, msg string, fields gobgplog.Fields) {
	if gobgplog.LogLevel(a.level.Load()) < lvl {
		return
	}
	a.l.Log(context.Background(), sl, msg, attrs(fields)...)
}

// Panic logs at error level and panics, as GoBGP expects of its logger.
func (a *slogAdapter) Panic(msg string, fields gobgplog.Fields) {
	a.log(gobgplog.PanicLevel, slog.LevelError, msg, fields)
	panic(fmt.Sprintf("gobgp: %s", msg))
}

// Fatal logs at error level and exits, as GoBGP expects of its logger (it
// uses Fatal only when it cannot continue, e.g. its gRPC listener failed).
func (a *slogAdapter) Fatal(msg string, fields gobgplog.Fields) {
	a.log(gobgplog.FatalLevel, slog.LevelError, msg, fields)
	os.Exit(1)
}

func (a *slogAdapter) Error(msg string, fields gobgplog.Fields) {
	a.log(gobgplog.ErrorLevel, slog.LevelError, msg, fields)
}

func (a *slogAdapter) Warn(msg string, fields gobgplog.Fields) {
	a.log(gobgplog.WarnLevel, slog.LevelWarn, msg, fields)
}

// Info is mapped to slog Debug: GoBGP logs every FSM transition and config
// step at Info, which is too chatty for the agent's Info level. The speaker
// logs peer up/down itself at Info from the peer watch.
func (a *slogAdapter) Info(msg string, fields gobgplog.Fields) {
	a.log(gobgplog.InfoLevel, slog.LevelDebug, msg, fields)
}

func (a *slogAdapter) Debug(msg string, fields gobgplog.Fields) {
	a.log(gobgplog.DebugLevel, slog.LevelDebug-4, msg, fields)
}

func (a *slogAdapter) SetLevel(level gobgplog.LogLevel) { a.level.Store(uint32(level)) }

func (a *slogAdapter) GetLevel() gobgplog.LogLevel { return gobgplog.LogLevel(a.level.Load()) }
