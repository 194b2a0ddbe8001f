package ipam

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"sync"

	"github.com/wren-net/wren/pkg/model"
)

// memStore is a Store with the API's concurrency semantics: create fails
// on an existing name, update and delete fail on a stale version.
type memStore struct {
	mu       sync.Mutex
	pools    []model.Pool
	settings Settings
	blocks   map[netip.Prefix]Block
	rv       int
	writes   int
}

func newMem(pools ...model.Pool) *memStore {
	return &memStore{pools: pools, blocks: map[netip.Prefix]Block{}}
}

func (m *memStore) ListPools(context.Context) ([]model.Pool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.pools), nil
}

func (m *memStore) Settings(context.Context) (Settings, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.settings
	s.Reservations = slices.Clone(s.Reservations)
	return s, nil
}

// set replaces the settings.
func (m *memStore) set(s Settings) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.settings = s
}

func (m *memStore) ListBlocks(context.Context) ([]Block, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Block
	for _, b := range m.blocks {
		b.Allocations = slices.Clone(b.Allocations)
		out = append(out, b)
	}
	return out, nil
}

func (m *memStore) GetBlock(_ context.Context, c netip.Prefix) (Block, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	b, ok := m.blocks[c]
	if !ok {
		return Block{}, ErrNotFound
	}
	return b, nil
}

func (m *memStore) next() string { m.rv++; return strconv.Itoa(m.rv) }

func (m *memStore) CreateBlock(_ context.Context, b Block) (Block, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes++
	if _, ok := m.blocks[b.CIDR]; ok {
		return Block{}, fmt.Errorf("create %s: %w", b.CIDR, ErrExists)
	}
	b.Version = m.next()
	m.blocks[b.CIDR] = b
	return b, nil
}

func (m *memStore) UpdateBlock(_ context.Context, b Block) (Block, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes++
	cur, ok := m.blocks[b.CIDR]
	if !ok {
		return Block{}, ErrNotFound
	}
	if cur.Version != b.Version {
		return Block{}, fmt.Errorf("update %s at %s (now %s): %w", b.CIDR, b.Version, cur.Version, ErrConflict)
	}
	b.Version = m.next()
	b.Allocations = slices.Clone(b.Allocations)
	m.blocks[b.CIDR] = b
	return b, nil
}

func (m *memStore) DeleteBlock(_ context.Context, b Block) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writes++
	cur, ok := m.blocks[b.CIDR]
	if !ok {
		return ErrNotFound
	}
	if cur.Version != b.Version {
		return ErrConflict
	}
	delete(m.blocks, b.CIDR)
	return nil
}

// lagStore is a memStore with an informer-like cache that shows the
// store's state only as of the last sync(): CachedBlocks and CachedPools
// read the snapshot, ListBlocks and ListPools the store. lists counts the
// fresh listings.
type lagStore struct {
	*memStore
	snapBlocks   []Block
	snapPools    []model.Pool
	snapSettings Settings
	lists        int
}

var _ CachedStore = (*lagStore)(nil)

func newLag(pools ...model.Pool) *lagStore { return &lagStore{memStore: newMem(pools...)} }

func (l *lagStore) sync() {
	l.snapBlocks, _ = l.memStore.ListBlocks(context.Background())
	l.snapPools, _ = l.memStore.ListPools(context.Background())
	l.snapSettings, _ = l.memStore.Settings(context.Background())
}

func (l *lagStore) ListBlocks(ctx context.Context) ([]Block, error) {
	l.mu.Lock()
	l.lists++
	l.mu.Unlock()
	return l.memStore.ListBlocks(ctx)
}

func (l *lagStore) CachedBlocks(context.Context) ([]Block, error) {
	out := slices.Clone(l.snapBlocks)
	for i := range out {
		out[i].Allocations = slices.Clone(out[i].Allocations)
	}
	return out, nil
}

func (l *lagStore) CachedPools(context.Context) ([]model.Pool, error) {
	return slices.Clone(l.snapPools), nil
}

func (l *lagStore) CachedSettings(context.Context) (Settings, error) {
	s := l.snapSettings
	s.Reservations = slices.Clone(s.Reservations)
	return s, nil
}
