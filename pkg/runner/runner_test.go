package runner

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

type recorder struct {
	mu    sync.Mutex
	times []time.Duration
	fail  int // fail this many runs first
	start time.Time
}

func (r *recorder) fn(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.times = append(r.times, time.Since(r.start))
	if r.fail > 0 {
		r.fail--
		return errors.New("boom")
	}
	return nil
}

func (r *recorder) got() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Duration(nil), r.times...)
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func start(t *testing.T, cfg Config, rec *recorder) (*Runner, context.CancelFunc) {
	cfg.Logger = quiet()
	r, err := New(cfg, rec.fn)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rec.start = time.Now()
	go r.Run(ctx)
	return r, cancel
}

// TestCoalesce: a burst of pokes makes one extra run, spaced by MinInterval.
func TestCoalesce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		r, cancel := start(t, Config{MinInterval: time.Second, MaxInterval: time.Hour}, rec)
		defer cancel()
		synctest.Wait()
		for i := 0; i < 1000; i++ {
			r.Poke()
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		got := rec.got()
		if len(got) != 2 || got[0] != 0 || got[1] != time.Second {
			t.Fatalf("runs at %v, want [0s 1s]", got)
		}
	})
}

// TestRetryBackoff: failures retry at RetryMin, doubling up to RetryMax,
// then the periodic interval resumes after success.
func TestRetryBackoff(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{fail: 4}
		_, cancel := start(t, Config{MinInterval: 10 * time.Millisecond, MaxInterval: time.Minute, RetryMin: time.Second, RetryMax: 3 * time.Second}, rec)
		defer cancel()
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		got := rec.got()
		want := []time.Duration{0, 1 * time.Second, 3 * time.Second, 6 * time.Second, 9 * time.Second, 69 * time.Second}
		if len(got) < len(want) {
			t.Fatalf("runs at %v, want prefix %v", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("runs at %v, want prefix %v", got, want)
			}
		}
	})
}

func TestValidate(t *testing.T) {
	c := Config{MinInterval: time.Minute, MaxInterval: time.Second}
	c.Defaults()
	if c.Validate() == nil {
		t.Fatal("max < min accepted")
	}
}

// TestFast: the fast function runs as soon as its channel fires, without
// waiting for MinInterval, on the loop (never during a full run); when it
// asks for a full run, that one keeps the MinInterval spacing.
func TestFast(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		cfg := Config{MinInterval: time.Second, MaxInterval: time.Hour, Logger: quiet()}
		r, err := New(cfg, rec.fn)
		if err != nil {
			t.Fatal(err)
		}
		ch := make(chan struct{}, 1)
		var fastAt []time.Duration
		needFull := false
		r.Fast(ch, func(context.Context) bool {
			fastAt = append(fastAt, time.Since(rec.start))
			return needFull
		})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		rec.start = time.Now()
		go r.Run(ctx)
		synctest.Wait()
		time.Sleep(10 * time.Millisecond)
		ch <- struct{}{}
		synctest.Wait()
		time.Sleep(10 * time.Millisecond)
		needFull = true
		ch <- struct{}{}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if want := []time.Duration{10 * time.Millisecond, 20 * time.Millisecond}; len(fastAt) != 2 || fastAt[0] != want[0] || fastAt[1] != want[1] {
			t.Errorf("fast runs at %v, want %v", fastAt, want)
		}
		if got := rec.got(); len(got) != 2 || got[1] != time.Second {
			t.Errorf("full runs at %v, want [0s 1s]", got)
		}
	})
}

// TestFastGap: after a quiet spell the fast function runs at once; a
// change that arrives within FastGap of the last fast run waits for the
// rest of the gap, and every change of that wait is served by one run.
func TestFastGap(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := &recorder{}
		cfg := Config{MinInterval: time.Second, MaxInterval: time.Hour, FastGap: 2 * time.Millisecond, Logger: quiet()}
		r, err := New(cfg, rec.fn)
		if err != nil {
			t.Fatal(err)
		}
		ch := make(chan struct{}, 1)
		var fastAt []time.Duration
		r.Fast(ch, func(context.Context) bool {
			fastAt = append(fastAt, time.Since(rec.start))
			return false
		})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		rec.start = time.Now()
		go r.Run(ctx)
		synctest.Wait()
		poke := func(at time.Duration) {
			time.Sleep(at - time.Since(rec.start))
			select {
			case ch <- struct{}{}:
			default:
			}
			synctest.Wait()
		}
		poke(10 * time.Millisecond)    // quiet before: at once
		poke(10500 * time.Microsecond) // within the gap: waits until 12 ms
		poke(11 * time.Millisecond)    // joins that wait
		poke(11500 * time.Microsecond)
		poke(50 * time.Millisecond) // quiet again: at once
		time.Sleep(time.Second)
		synctest.Wait()
		want := []time.Duration{10 * time.Millisecond, 12 * time.Millisecond, 50 * time.Millisecond}
		if !slices.Equal(fastAt, want) {
			t.Errorf("fast runs at %v, want %v", fastAt, want)
		}
		if got := rec.got(); len(got) != 1 {
			t.Errorf("full runs at %v, want only the initial one", got)
		}
	})
}
