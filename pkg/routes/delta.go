package routes

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"syscall"
	"time"

	"github.com/wren-net/wren/pkg/model"
)

// Delta changes part of the desired set and writes only that part: routes
// in up are added or replaced, destinations in down removed. It is the
// path of BGP best-path changes between full Applies, so it neither lists
// the kernel nor lists the links (it uses those of the last Apply) nor
// touches any other route. A later Set replaces the whole
// desired set as usual.
//
// A new destination is an exclusive add, as in Apply: a foreign route that
// holds it is left alone and reported. Any failed write is returned (joined,
// naming the route); the caller then runs a full Apply, which finds the
// kernel as it is. Delta must not run concurrently with Apply (both are the
// loop's).
func (r *Reconciler) Delta(ctx context.Context, up []model.Route, down []netip.Prefix) error {
	if len(up) == 0 && len(down) == 0 {
		return nil
	}
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	// The devices of the last Apply: a link dump per batch cost more than
	// the batch's writes. A device missing there is looked up once more;
	// a stale index fails the write, and the full Apply that follows
	// lists the links afresh.
	links := r.links
	for _, rt := range up {
		if _, ok := links[rt.Device]; !ok && rt.Kind != model.RouteBlackhole {
			fresh, err := r.k.Links()
			if err != nil {
				return fmt.Errorf("list links: %w", err)
			}
			r.links, links = fresh, fresh
			break
		}
	}
	r.mu.Lock()
	p := r.plan
	var errs []error
	ops, marks := r.ops[:0], r.marks[:0]
	for _, rt := range up {
		if err := rt.Validate(); err != nil {
			errs = append(errs, err)
			continue
		}
		k, err := r.kroute(rt, links)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		key := key4(rt.Dst)
		if i, ok := p.index[key]; ok {
			if p.routes[i] == rt {
				continue
			}
			p.routes[i] = rt
			ops = append(ops, Op{Replace: true, Route: k})
			marks = append(marks, mark(k, rt.Kind))
			continue
		}
		p.index[key] = int32(len(p.routes))
		p.routes = append(p.routes, rt)
		ops = append(ops, Op{Route: k})
		marks = append(marks, mark(k, rt.Kind))
	}
	adds := len(ops)
	for _, dst := range down {
		key := key4(dst)
		i, ok := p.index[key]
		if !ok {
			continue
		}
		// Swap-remove: the last route takes the freed position.
		last := int32(len(p.routes) - 1)
		if i != last {
			p.routes[i] = p.routes[last]
			p.index[key4(p.routes[i].Dst)] = i
		}
		p.routes = p.routes[:last]
		delete(p.index, key)
		ops = append(ops, Op{Delete: true, Route: KRoute{Dst: dst.Masked(), Table: r.cfg.Table, Protocol: r.cfg.Protocol}})
		marks = append(marks, 0)
	}
	r.mu.Unlock()
	r.ops, r.marks = ops, marks
	if len(ops) == 0 {
		return errors.Join(errs...)
	}
	start := time.Now()
	st := Stats{Deleted: len(ops) - adds}
	r.mu.Lock()
	counts := r.programmed
	r.mu.Unlock()
	// unplace forgets a destination's route (deleted, or its write
	// failed and the full Apply that follows finds the kernel as it is).
	unplace := func(key uint64) {
		if old, ok := r.placed[key]; ok {
			counts[old&0xff]--
			delete(r.placed, key)
		}
	}
	for i, err := range r.k.Write(ops) {
		key := key4(ops[i].Route.Dst)
		switch {
		case ops[i].Replace:
			st.Replaced++
		case !ops[i].Delete:
			st.Added++
		}
		if err == nil || ops[i].Delete && errors.Is(err, syscall.ESRCH) {
			if r.cfg.Logger.Enabled(ctx, slog.LevelDebug) {
				r.cfg.Logger.Debug("route written", "op", opName(ops[i]), "route", ops[i].Route.String())
			}
			unplace(key)
			if !ops[i].Delete {
				r.placed[key] = marks[i]
				counts[marks[i]&0xff]++
			}
			continue
		}
		st.Errors++
		if !ops[i].Delete {
			unplace(key)
		}
		errs = append(errs, fmt.Errorf("%s route %s: %w", opName(ops[i]), ops[i].Route, explain(err)))
	}
	st.Duration = time.Since(start)
	r.mu.Lock()
	r.programmed = counts
	r.mu.Unlock()
	r.cfg.Observe(st)
	r.cfg.Logger.Debug("route delta applied", "upserts", adds, "deletes", len(ops)-adds)
	return errors.Join(errs...)
}
