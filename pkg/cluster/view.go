package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
)

// View is the agent's view of the cluster: informer caches of Nodes,
// IPPools, IPAMBlocks and this node's Pods, with writes going straight to
// the API. It satisfies agent.Cluster.
type View struct {
	node  string
	ns    string // where BGP password Secrets live
	cfg   *rest.Config
	c     client.Client
	cache cache.Cache
	store *IPAMStore
	log   *slog.Logger
	// health tracks whether the API server answers (apihealth.go); host
	// names it in messages.
	health *apiHealth
	host   string

	mu     sync.Mutex
	warned map[string]bool // object/reason/message already reported
	events *events
}

// DefaultNamespace is where the agent looks for BGP password Secrets
// unless told otherwise (WithNamespace; wren-agent uses $POD_NAMESPACE).
const DefaultNamespace = "kube-system"

// ViewOption configures a View.
type ViewOption func(*View)

// WithNamespace sets the namespace of the Secrets that hold BGP passwords
// (the agent's own namespace).
func WithNamespace(ns string) ViewOption { return func(v *View) { v.ns = ns } }

// NewView connects to the API; Start begins the watches.
//
// Every request the View makes (informers' lists and watches, IPAM
// writes, Node patches) goes through a transport that tells apiHealth how
// it went, so the View knows when the API server is lost and when it is
// back (APIDown), and logs each transition once.
func NewView(cfg *rest.Config, node string, logger *slog.Logger, opts ...ViewOption) (*View, error) {
	v := &View{node: node, ns: DefaultNamespace}
	for _, o := range opts {
		o(v)
	}
	cfg = withRate(cfg)
	v.log = logger.With("component", "cluster")
	v.host = serverURL(cfg)
	probe, err := readyzProbe(cfg)
	if err != nil {
		return nil, err
	}
	v.health = newAPIHealth(v.host, v.log, probe)
	cfg = rest.CopyConfig(cfg)
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return roundTripper{rt: rt, h: v.health} })
	c, err := NewClient(cfg)
	if err != nil {
		return nil, err
	}
	ca, err := cache.New(cfg, cache.Options{
		Scheme: Scheme(),
		ByObject: map[client.Object]cache.ByObject{
			// Only this node's pods: address GC asks about them alone.
			&corev1.Pod{}: {Field: fields.OneTermEqualSelector("spec.nodeName", node)},
			// Only the agent's namespace: BGP passwords.
			&corev1.Secret{}: {Namespaces: map[string]cache.Config{v.ns: {}}},
		},
		DefaultWatchErrorHandler: v.health.watchErrorHandler,
	})
	if err != nil {
		return nil, fmt.Errorf("informer cache: %w", err)
	}
	if v.events, err = newEvents(cfg, node, v.log); err != nil {
		return nil, fmt.Errorf("event recorder: %w", err)
	}
	v.cfg, v.c, v.cache = cfg, c, ca
	v.store = NewIPAMStore(c, logger).WithCache(ca)
	v.store.warn = v.report // one Event for a problem both find
	v.warned = map[string]bool{}
	return v, nil
}

// Start registers poke on every watched kind, starts the informers and
// returns once their caches have synced.
func (v *View) Start(ctx context.Context, poke func()) error {
	h := toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}
	for _, o := range []client.Object{&corev1.Node{}, &v1alpha1.IPPool{}, &v1alpha1.IPAMBlock{}, &corev1.Pod{}, &v1alpha1.BGPPeer{}, &v1alpha1.BGPConfiguration{}, &corev1.Secret{}} {
		inf, err := v.cache.GetInformer(ctx, o)
		if err != nil {
			return fmt.Errorf("informer for %T: %w", o, err)
		}
		if _, err := inf.AddEventHandler(h); err != nil {
			return err
		}
	}
	// Read only by IPAM on CNI ADD (IPAMSettings, PodChoice): watched,
	// but the loop has nothing to redo when they change.
	for _, o := range []client.Object{&v1alpha1.IPReservation{}, &v1alpha1.IPAMConfiguration{}, &corev1.Namespace{}} {
		if _, err := v.cache.GetInformer(ctx, o); err != nil {
			return fmt.Errorf("informer for %T: %w", o, err)
		}
	}
	go v.health.run(ctx)
	go func() {
		if err := v.cache.Start(ctx); err != nil {
			v.log.Error("informers stopped", "err", err)
		}
	}()
	if !v.cache.WaitForCacheSync(ctx) {
		return fmt.Errorf("caches did not sync: %w", ctx.Err())
	}
	return nil
}

// Nodes returns every Node with Wren's annotations and labels parsed
// (parseNode). A malformed annotation or label is reported as an Event
// naming the Node and the key, and ignored.
func (v *View) Nodes() ([]model.NodeInfo, error) {
	var l corev1.NodeList
	if err := v.cache.List(context.Background(), &l); err != nil {
		return nil, fmt.Errorf("list nodes: %w", err)
	}
	out := make([]model.NodeInfo, 0, len(l.Items))
	for i := range l.Items {
		ni, problems := parseNode(&l.Items[i])
		for _, p := range problems {
			v.report(p)
		}
		out = append(out, ni)
	}
	return out, nil
}

// Pools returns the usable IPPools, sorted by name: the same ones the
// IPAM store lists, by the same rules (parsePools). What admission could
// not catch (a pool overlapping an older one, a field written by a client
// that skipped validation) is reported as an Event naming the pool and
// field, and that pool is left out.
func (v *View) Pools() ([]model.Pool, error) {
	var l v1alpha1.IPPoolList
	if err := v.cache.List(context.Background(), &l); err != nil {
		return nil, fmt.Errorf("list ippools: %w", err)
	}
	pools, problems := parsePools(l.Items)
	for _, p := range problems {
		v.report(p)
	}
	return pools, nil
}

// BGPPeers returns the explicit peers, sorted by name: those that name
// an IP ("ip" or "ip:port") and those that select nodes (peerSelector).
// What admission could not catch (both peerIP and peerSelector or
// neither, from a client that skipped validation) is reported as an
// Event naming the BGPPeer, and that peer is left out.
func (v *View) BGPPeers() ([]model.BGPPeer, error) {
	var l v1alpha1.BGPPeerList
	if err := v.cache.List(context.Background(), &l); err != nil {
		return nil, fmt.Errorf("list bgppeers: %w", err)
	}
	slices.SortFunc(l.Items, func(a, b v1alpha1.BGPPeer) int { return strings.Compare(a.Name, b.Name) })
	var out []model.BGPPeer
	for _, p := range l.Items {
		peer, prob, ok := parseBGPPeer(&p)
		if !ok {
			v.report(prob)
			continue
		}
		sp := p.Spec
		if sp.KeepaliveTime != nil {
			peer.Keepalive = sp.KeepaliveTime.Duration
		}
		if sp.MaxRestartTime != nil {
			peer.RestartTime = sp.MaxRestartTime.Duration
		}
		if sp.TTLSecurity != nil {
			peer.TTLSecurity = int(*sp.TTLSecurity)
		}
		if sp.MaxPrefixes != nil && *sp.MaxPrefixes > 0 { // admission enforces minimum 1
			peer.MaxPrefixes = uint32(*sp.MaxPrefixes)
		}
		if sp.Password != nil {
			pw, err := v.password(sp.Password)
			if err != nil {
				v.Warn("BGPPeer", p.Name, "PasswordUnavailable", fmt.Sprintf("spec.password: %v; the peering is not set up until the Secret exists", err))
				continue
			}
			peer.Password = pw
		}
		out = append(out, peer)
	}
	return out, nil
}

// parseBGPPeer translates what a BGPPeer says about the remote side and
// the source address; a peer that names no usable remote side comes back
// with the problem to report.
func parseBGPPeer(p *v1alpha1.BGPPeer) (model.BGPPeer, problem, bool) {
	sp := p.Spec
	bad := func(reason, msg string) (model.BGPPeer, problem, bool) {
		return model.BGPPeer{}, problem{Kind: "BGPPeer", Name: p.Name, Reason: reason, Message: msg}, false
	}
	peer := model.BGPPeer{Name: p.Name, Node: sp.Node, NodeSelector: sp.NodeSelector,
		KernelSource: sp.SourceAddress == v1alpha1.SourceAddressNone}
	switch {
	case sp.PeerIP != "" && sp.PeerSelector != "":
		return bad("InvalidPeer", "spec.peerIP and spec.peerSelector are both set: keep peerIP (with asNumber) to peer with one router, or peerSelector to peer with the nodes it selects; this BGPPeer gives no session until one is removed")
	case sp.PeerIP == "" && sp.PeerSelector == "":
		return bad("InvalidPeer", "neither spec.peerIP nor spec.peerSelector is set: add peerIP (with asNumber) to peer with one router, or peerSelector to peer with the nodes it selects")
	case sp.PeerSelector != "":
		peer.PeerSelector = sp.PeerSelector
		return peer, problem{}, true
	}
	if ap, err := netip.ParseAddrPort(sp.PeerIP); err == nil {
		peer.IP, peer.Port = ap.Addr(), int(ap.Port())
	} else if a, err := netip.ParseAddr(sp.PeerIP); err == nil {
		peer.IP = a
	} else {
		return bad("InvalidPeerIP", fmt.Sprintf("spec.peerIP %q is not ip or ip:port", sp.PeerIP))
	}
	if sp.ASNumber != nil {
		peer.AS = uint32(*sp.ASNumber)
	}
	return peer, problem{}, true
}

// BGPConfig returns the BGPConfiguration named default with defaults
// filled in (AS 0 meaning "nodes use model.DefaultAS", mesh on, port
// 179). Service ranges that do not parse are reported and left out.
func (v *View) BGPConfig() (model.BGPConfig, error) {
	cfg := model.BGPConfig{MeshEnabled: true, ListenPort: 179}
	var o v1alpha1.BGPConfiguration
	err := v.cache.Get(context.Background(), client.ObjectKey{Name: v1alpha1.BGPConfigurationName}, &o)
	switch {
	case apierrors.IsNotFound(err):
		return cfg, nil
	case err != nil:
		return cfg, fmt.Errorf("get bgpconfiguration %s: %w", v1alpha1.BGPConfigurationName, err)
	}
	sp := o.Spec
	if sp.ASNumber != nil {
		cfg.AS = uint32(*sp.ASNumber)
	}
	if sp.NodeToNodeMeshEnabled != nil {
		cfg.MeshEnabled = *sp.NodeToNodeMeshEnabled
	}
	if sp.ListenPort != nil {
		cfg.ListenPort = int(*sp.ListenPort)
	}
	if sp.NodeMeshPassword != nil {
		pw, err := v.password(sp.NodeMeshPassword)
		if err != nil {
			v.Warn("BGPConfiguration", o.Name, "PasswordUnavailable", fmt.Sprintf("spec.nodeMeshPassword: %v; mesh sessions are set up when the Secret exists", err))
			cfg.MeshPasswordMissing = true
		}
		cfg.MeshPassword = pw
	}
	for _, d := range []struct {
		to   *time.Duration
		from *metav1.Duration
	}{{&cfg.Keepalive, sp.KeepaliveTime}, {&cfg.Hold, sp.HoldTime}, {&cfg.RestartTime, sp.NodeMeshMaxRestartTime}} {
		if d.from != nil {
			*d.to = d.from.Duration
		}
	}
	for field, list := range map[string][]v1alpha1.ServiceIPBlock{"serviceClusterIPs": sp.ServiceClusterIPs,
		"serviceExternalIPs": sp.ServiceExternalIPs, "serviceLoadBalancerIPs": sp.ServiceLoadBalancerIPs} {
		for i, b := range list {
			p, err := b.CIDR.Prefix()
			if err != nil {
				v.Warn("BGPConfiguration", o.Name, "InvalidCIDR", fmt.Sprintf("spec.%s[%d].cidr: %v; not advertised", field, i, err))
				continue
			}
			cfg.ServiceCIDRs = append(cfg.ServiceCIDRs, p)
		}
	}
	slices.SortFunc(cfg.ServiceCIDRs, netip.Prefix.Compare)
	cfg.ServiceCIDRs = slices.Compact(cfg.ServiceCIDRs)
	return cfg, nil
}

// password reads a BGP password from a Secret in the agent's namespace.
func (v *View) password(p *v1alpha1.BGPPassword) (string, error) {
	ref := p.SecretKeyRef
	var sec corev1.Secret
	if err := v.cache.Get(context.Background(), client.ObjectKey{Namespace: v.ns, Name: ref.Name}, &sec); err != nil {
		return "", fmt.Errorf("Secret %s/%s: %w", v.ns, ref.Name, err)
	}
	b, ok := sec.Data[ref.Key]
	if !ok || len(b) == 0 {
		return "", fmt.Errorf("Secret %s/%s has no key %q", v.ns, ref.Name, ref.Key)
	}
	return string(b), nil
}

// Blocks returns every IPAMBlock from the cache.
func (v *View) Blocks() ([]ipam.Block, error) {
	var l v1alpha1.IPAMBlockList
	if err := v.cache.List(context.Background(), &l); err != nil {
		return nil, fmt.Errorf("list ipamblocks: %w", err)
	}
	out := make([]ipam.Block, 0, len(l.Items))
	for i := range l.Items {
		b, err := BlockFromObject(&l.Items[i])
		if err != nil {
			v.Warn("IPAMBlock", l.Items[i].Name, "InvalidBlock", err.Error())
			continue
		}
		out = append(out, b)
	}
	return out, nil
}

// IPAMStore is the API-backed store the allocator writes through. Its
// errors carry ipam.ErrUnavailable when the API server cannot be reached.
func (v *View) IPAMStore() ipam.Store {
	return unavailableStore{s: v.store, h: v.health, timeout: apiCallTimeout}
}

// APIServer names the Kubernetes API server the View talks to, as a URL
// (https://198.18.0.2:6443), for messages.
func (v *View) APIServer() string { return v.host }

// APIDown reports whether the Kubernetes API server is unreachable, since
// when, and the latest error that said so. It never blocks: it reads what
// the View's requests and its /readyz probe last found.
func (v *View) APIDown() (since time.Time, err error, down bool) { return v.health.state() }

// PodGone reports whether a pod does not exist, for address GC. Only the
// API server itself can say so: the informer cache may not show a pod
// created a moment ago (after an API outage client-go's reflectors back
// off for up to a minute, and a restarted API server answers 429 for a
// while), and a GC that trusted it freed a live pod's address. So a pod
// the cache shows exists; one it does not show is looked up with an
// uncached GET, and only NotFound means gone. Any other answer or error
// (the API server is unreachable) means keep: the next run decides.
func (v *View) PodGone(ctx context.Context, namespace, name string) bool {
	return v.gone(ctx, corev1.SchemeGroupVersion.WithKind("Pod"), &corev1.Pod{}, client.ObjectKey{Namespace: namespace, Name: name})
}

// NodeGone reports whether a Node does not exist, for the release of its
// blocks; like PodGone, only an uncached GET answering NotFound says so.
func (v *View) NodeGone(ctx context.Context, name string) bool {
	return v.gone(ctx, corev1.SchemeGroupVersion.WithKind("Node"), &corev1.Node{}, client.ObjectKey{Name: name})
}

func (v *View) gone(ctx context.Context, gvk schema.GroupVersionKind, cached client.Object, key client.ObjectKey) bool {
	if err := v.cache.Get(ctx, key, cached); err == nil {
		return false
	}
	// Metadata is all the question needs.
	m := &metav1.PartialObjectMetadata{}
	m.SetGroupVersionKind(gvk)
	ctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
	defer cancel()
	err := v.c.Get(ctx, key, m)
	if err != nil && !apierrors.IsNotFound(err) {
		v.log.Debug("cannot confirm that an object is gone; keeping what it holds", "kind", gvk.Kind, "name", key.String(), "err", err)
	}
	return apierrors.IsNotFound(err)
}

// report is Warn for a problem.
func (v *View) report(p problem) { v.Warn(p.Kind, p.Name, p.Reason, p.Message) }

// Warn logs a problem with an object and records a Warning Event on it,
// once per distinct message.
func (v *View) Warn(kind, name, reason, message string) {
	key := kind + "/" + name + "/" + reason + "/" + message
	v.mu.Lock()
	seen := v.warned[key]
	v.warned[key] = true
	v.mu.Unlock()
	if seen {
		return
	}
	v.log.Warn(message, "kind", kind, "name", name, "reason", reason)
	// Queued: client-go's broadcaster writes it on its own goroutine, so
	// the caller (the agent's loop) never waits for the API server.
	v.events.warn(kind, name, reason, message)
}
