// Package runner drives a level-triggered reconcile function: pokes are
// coalesced, runs are spaced by a minimum interval, failures are retried
// with exponential backoff, and a periodic run catches anything no event
// reported. It follows kube-network-policies' BoundedFrequencyRunner.
package runner

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

// Config bounds how often the function runs.
type Config struct {
	// MinInterval is the least time between the starts of two runs, so a
	// burst of events (100k route notifications) costs one or two runs.
	MinInterval time.Duration
	// MaxInterval is the longest time without a run: a periodic resync.
	MaxInterval time.Duration
	// FastGap is the least time between the starts of two runs of the
	// fast function (see Fast). A change that arrives sooner waits for the
	// rest of the gap and goes in the same batch as every other change of
	// that gap, so a burst is written in batches instead of a write per
	// change; a change after a quiet spell runs at once.
	FastGap time.Duration
	// RetryMin and RetryMax bound the backoff after a failed run.
	RetryMin, RetryMax time.Duration
	// Logger reports failures and recoveries.
	Logger *slog.Logger
}

// Defaults fills unset fields: 100 ms min, 90 s max, 2 ms fast gap, 200 ms
// to 30 s retry.
func (c *Config) Defaults() {
	if c.MinInterval == 0 {
		c.MinInterval = 100 * time.Millisecond
	}
	if c.MaxInterval == 0 {
		c.MaxInterval = 90 * time.Second
	}
	if c.FastGap == 0 {
		c.FastGap = DefaultFastGap
	}
	if c.RetryMin == 0 {
		c.RetryMin = 200 * time.Millisecond
	}
	if c.RetryMax == 0 {
		c.RetryMax = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
}

// DefaultFastGap batches BGP best-path changes: GoBGP reports them one
// prefix at a time, and in a 100k-route feed the loop wrote about 7 routes
// per kernel write without a gap, spending on per-write overhead the CPU
// the speaker needed to read (docs/benchmarks.md). At the 50-100k
// changes/s of such a feed, 2 ms makes batches of one to two hundred
// routes: what the route writer packs into one sendmsg.
const DefaultFastGap = 2 * time.Millisecond

// Validate checks that the intervals are ordered.
func (c Config) Validate() error {
	if c.MinInterval < 0 || c.FastGap < 0 || c.MaxInterval < c.MinInterval || c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		return fmt.Errorf("runner intervals out of order: min %s max %s retry %s..%s", c.MinInterval, c.MaxInterval, c.RetryMin, c.RetryMax)
	}
	return nil
}

// Runner runs fn on pokes. Poke never blocks, so it is safe to call from
// netlink, informer and BGP callbacks.
type Runner struct {
	cfg  Config
	fn   func(context.Context) error
	poke chan struct{}

	fastCh <-chan struct{}
	fast   func(context.Context) bool
}

// New returns a runner for fn; cfg is defaulted and validated.
func New(cfg Config, fn func(context.Context) error) (*Runner, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Runner{cfg: cfg, fn: fn, poke: make(chan struct{}, 1)}, nil
}

// Poke asks for a run soon. Many pokes before the run make one run.
func (r *Runner) Poke() {
	select {
	case r.poke <- struct{}{}:
	default:
	}
}

// Fast adds a cheap second function that runs when ch receives, on the
// loop's goroutine, so it shares fn's state without locks: the agent's BGP
// best-path changes. It runs at once after a quiet spell and otherwise at
// most once per FastGap (no MinInterval). It returns true when it could
// not do its part and a full run is needed. Call before Run.
func (r *Runner) Fast(ch <-chan struct{}, fast func(context.Context) bool) {
	r.fastCh, r.fast = ch, fast
}

// Run loops until ctx ends. It runs fn once at start.
func (r *Runner) Run(ctx context.Context) error {
	var (
		lastStart time.Time
		backoff   time.Duration
		failing   bool
		lastFast  time.Time
	)
	timer := time.NewTimer(0)
	defer timer.Stop()
	// While the fast function waits out its gap, fastCh is nil (its
	// signal stays pending) and gapC fires at the end of the gap.
	fastCh := r.fastCh
	gap := time.NewTimer(time.Hour)
	gap.Stop()
	defer gap.Stop()
	var gapC <-chan time.Time
	due := true // the initial run
	runFast := func() {
		// A signal that came during the gap is served by this run,
		// which reads the state it announced.
		select {
		case <-r.fastCh:
		default:
		}
		lastFast = time.Now()
		if r.fast(ctx) {
			due = true
		}
	}
	for {
		if due {
			if wait := r.cfg.MinInterval - time.Since(lastStart); !lastStart.IsZero() && wait > 0 {
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(wait):
				}
			}
			due = false
			// Pokes that arrived until now are served by this run, which
			// reads the state they announced.
			select {
			case <-r.poke:
			default:
			}
			lastStart = time.Now()
			err := r.fn(ctx)
			if ctx.Err() != nil {
				return nil
			}
			next := r.cfg.MaxInterval
			if err != nil {
				if backoff == 0 {
					backoff = r.cfg.RetryMin
				} else {
					backoff = min(backoff*2, r.cfg.RetryMax)
				}
				next = backoff
				r.cfg.Logger.Warn("sync failed; retrying", "in", backoff, "err", err)
				failing = true
			} else {
				if failing {
					r.cfg.Logger.Info("sync recovered")
				}
				failing, backoff = false, 0
			}
			timer.Reset(next)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-r.poke:
			due = true
		case <-timer.C:
			due = true
		case <-fastCh: // nil, and never ready, without Fast
			if wait := r.cfg.FastGap - time.Since(lastFast); wait > 0 {
				fastCh = nil
				gap.Reset(wait)
				gapC = gap.C
				continue
			}
			runFast()
		case <-gapC:
			gapC, fastCh = nil, r.fastCh
			runFast()
		}
	}
}
