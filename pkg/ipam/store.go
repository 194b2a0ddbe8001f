package ipam

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"github.com/wren-net/wren/pkg/model"
)

// Errors a Store returns; the allocator retries on ErrConflict and
// ErrExists with fresh state, and gives up at once on ErrUnavailable.
var (
	// ErrConflict: the block changed since it was read (resourceVersion
	// mismatch on update or delete).
	ErrConflict = errors.New("block changed concurrently")
	// ErrExists: another writer created the block first (create is the
	// linearisation point of a claim).
	ErrExists = errors.New("block already exists")
	// ErrNotFound: the block does not exist (any more).
	ErrNotFound = errors.New("block not found")
	// ErrUnavailable: the store cannot be reached or does not serve right
	// now (connection refused or reset, timeout, 429 Too Many Requests,
	// 503). Nothing was decided; the caller should try again later rather
	// than retry in a loop (CNI: code 11, try again later).
	ErrUnavailable = errors.New("IPAM store unavailable")
)

// Claim states of a block's affinity. A node creates a block as pending
// (the create is atomic: exactly one node wins a CIDR), then confirms it
// with a compare-and-swap update. Only confirmed blocks are advertised or
// blackholed; a pending block found at start is the owner's unfinished
// claim, which it confirms.
const (
	StatePending   = "pending"
	StateConfirmed = "confirmed"
)

// Allocation is one address handed out from a block.
type Allocation struct {
	IP netip.Addr
	// Handle identifies the owner: PodHandle for a pod, NodeHandle for a
	// node's own address.
	Handle      string
	Namespace   string
	Pod         string
	ContainerID string
	// Node is the node the address was allocated for; it differs from the
	// block's affinity for a borrowed address.
	Node string
}

// Block is an IPAMBlock: a CIDR with an affinity to one node and its
// allocations, sorted by address.
type Block struct {
	CIDR        netip.Prefix
	Affinity    string // node name, "" for none
	State       string // StatePending or StateConfirmed
	Allocations []Allocation
	// EmptySince is when the block was last seen empty by its owner; the
	// block is released after the grace period.
	EmptySince time.Time
	// Version is the store's opaque resourceVersion; "" for a new block.
	Version string
}

// Free returns how many addresses of the block are not allocated.
func (b Block) Free() int { return size(b.CIDR) - len(b.Allocations) }

func size(p netip.Prefix) int { return 1 << (32 - p.Bits()) }

// Store is where blocks and pools live: the Kubernetes API in production
// (pkg/cluster), a map in the unit tier. Every write is conditional.
type Store interface {
	// ListPools returns every IPPool.
	ListPools(ctx context.Context) ([]model.Pool, error)
	// ListBlocks returns every block (possibly from a cache; stale data
	// surfaces as ErrConflict on write).
	ListBlocks(ctx context.Context) ([]Block, error)
	// GetBlock reads one block from the source of truth.
	GetBlock(ctx context.Context, cidr netip.Prefix) (Block, error)
	// CreateBlock creates b; ErrExists if its name is taken.
	CreateBlock(ctx context.Context, b Block) (Block, error)
	// UpdateBlock writes b if its Version is current; ErrConflict if not.
	UpdateBlock(ctx context.Context, b Block) (Block, error)
	// DeleteBlock deletes b if its Version is current.
	DeleteBlock(ctx context.Context, b Block) error
	// Settings returns the IPReservations and the IPAMConfiguration
	// named default (zero Settings when there are none).
	Settings(ctx context.Context) (Settings, error)
}

// Reservation is one reserved network of an IPReservation: no address in
// it is handed out (addresses allocated before it was made stay).
type Reservation struct {
	Name string       // the IPReservation, for messages
	CIDR netip.Prefix // a /32 for a single address
}

// Settings are the cluster-wide IPAM settings: every IPReservation and the
// IPAMConfiguration named default, as Calico's.
type Settings struct {
	// Reservations are never handed out.
	Reservations []Reservation
	// StrictAffinity forbids borrowing: a node allocates only in blocks
	// it holds, and fails when it has none free and may claim no more.
	StrictAffinity bool
	// MaxBlocksPerHost caps the blocks one node holds; 0 means no cap.
	// At the cap a node borrows (or, with StrictAffinity, fails).
	MaxBlocksPerHost int
}

// CachedStore is a Store that can also list from a cache (the agent's
// informers). The allocator tries the cache first, overlaid with its own
// recent writes, and reads the Store itself after a conflict, for an
// unknown handle, or before reporting exhaustion.
type CachedStore interface {
	Store
	CachedBlocks(ctx context.Context) ([]Block, error)
	CachedPools(ctx context.Context) ([]model.Pool, error)
	CachedSettings(ctx context.Context) (Settings, error)
}
