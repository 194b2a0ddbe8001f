package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/wren-net/wren/pkg/cniserver"
	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/model"
	"github.com/wren-net/wren/pkg/proxyarp"
)

var _ cniserver.Handler = (*Agent)(nil)

// ready reports whether the agent can serve CNI requests yet.
func (a *Agent) ready() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.alloc == nil || !a.self.IP.IsValid() || a.done == 0 {
		return cniserver.Errorf(cniserver.ReasonNotReady, "node %s is still starting (waiting for the Kubernetes API)", a.cfg.NodeName)
	}
	return nil
}

// What a CNI command cannot do without the Kubernetes API, for messages.
const (
	whatAdd   = "record the pod's address"
	whatDel   = "release the pod's address"
	whatCheck = "look up the pod's address"
)

// apiAvailable fails fast while the API server is known to be
// unreachable: the request would only wait for connections that are
// refused or time out, and the runtime retries on "try again later".
func (a *Agent) apiAvailable(what string) error {
	if _, _, down := a.cluster.APIDown(); down {
		return a.apiUnavailable(what, nil)
	}
	return nil
}

// apiError frames err for the runtime if it says that the API server
// cannot be reached or does not serve now (ipam.ErrUnavailable), else
// returns nil.
func (a *Agent) apiError(what string, err error) error {
	if !errors.Is(err, ipam.ErrUnavailable) {
		return nil
	}
	return a.apiUnavailable(what, err)
}

// apiUnavailable is the CNI error (code 11, try again later) for a
// request that needs the API server while it is unavailable. It names the
// server, since when and why it is unreachable, and what this node cannot
// do meanwhile; the agent itself is fine, so nothing blames it:
//
//	the Kubernetes API server https://198.18.0.2:6443 is unreachable (since 12:01:02: dial tcp 198.18.0.2:6443: connect: connection refused); node-1 cannot record the pod's address until it returns; the runtime will retry
//
// cause is the request's own error, if it made one.
func (a *Agent) apiUnavailable(what string, cause error) error {
	since, last, down := a.cluster.APIDown()
	if cause == nil {
		cause = last
	}
	if cause == nil {
		cause = errors.New("no answer")
	}
	if down {
		return cniserver.Errorf(cniserver.ReasonAPIUnavailable,
			"the Kubernetes API server %s is unreachable (since %s: %w); %s cannot %s until it returns; the runtime will retry",
			a.cluster.APIServer(), since.Format(time.TimeOnly), cause, a.cfg.NodeName, what)
	}
	// Reachable but not serving (429 while it sheds load, 503).
	return cniserver.Errorf(cniserver.ReasonAPIUnavailable,
		"the Kubernetes API server %s is not serving requests now (%w); %s cannot %s until it does; the runtime will retry",
		a.cluster.APIServer(), cause, a.cfg.NodeName, what)
}

// Add allocates the pod's address, builds its veth pair and programs its
// route, so the pod is reachable when the runtime starts it. A repeated
// ADD returns the same address.
func (a *Agent) Add(ctx context.Context, req cniserver.AddRequest) (cniserver.Result, error) {
	if err := a.ready(); err != nil {
		return cniserver.Result{}, err
	}
	if req.Namespace == "" || req.Name == "" {
		return cniserver.Result{}, cniserver.Errorf(cniserver.ReasonInvalidArgument, "container %s: K8S_POD_NAMESPACE and K8S_POD_NAME are required", req.ContainerID)
	}
	if err := a.apiAvailable(whatAdd); err != nil {
		return cniserver.Result{}, err
	}
	// The pod's own choice (annotations ipAddrs, ipv4pools): a refusal
	// names the annotation and the pod already, so it goes out as is.
	choice, err := a.cluster.PodChoice(ctx, req.Namespace, req.Name)
	if err != nil {
		if aerr := a.apiError(whatAdd, err); aerr != nil {
			return cniserver.Result{}, aerr
		}
		if errors.Is(err, ipam.ErrRefused) {
			return cniserver.Result{}, err
		}
		return cniserver.Result{}, fmt.Errorf("pod %s: read its IPAM annotations: %w", req.Key(), err)
	}
	podNS, err := netns.GetFromPath(req.NetNS)
	if err != nil {
		return cniserver.Result{}, cniserver.Errorf(cniserver.ReasonInvalidNetNS, "pod %s: open netns %s: %v", req.Key(), req.NetNS, err)
	}
	defer podNS.Close()
	handle := ipam.PodHandle(req.Namespace, req.Name, req.ContainerID)
	// From the allocation until the loop is told, the pod's veth and
	// route are this ADD's: the loop does not take the pod from its cache
	// half built.
	defer a.claimPod(handle)()
	r, err := a.alloc.Allocate(ctx, ipam.Request{Namespace: req.Namespace, Pod: req.Name, ContainerID: req.ContainerID, Choice: choice})
	if err != nil {
		if aerr := a.apiError(whatAdd, err); aerr != nil {
			return cniserver.Result{}, aerr
		}
		if errors.Is(err, ipam.ErrRefused) {
			return cniserver.Result{}, err
		}
		return cniserver.Result{}, fmt.Errorf("pod %s: %w", req.Key(), err)
	}
	mtu := int(a.podMTU.Load())
	w := model.Workload{Namespace: req.Namespace, Name: req.Name, ContainerID: req.ContainerID,
		HostIface: proxyarp.VethName(req.Namespace, req.Name), IP: r.IP, MTU: mtu}
	ifName := req.IfName
	if ifName == "" {
		ifName = "eth0"
	}
	if err := a.setupPod(ctx, podNS, w, ifName); err != nil {
		if rerr := a.alloc.Release(context.WithoutCancel(ctx), handle); rerr != nil {
			err = errors.Join(err, rerr)
		} else {
			// The cache may still show the allocation for a moment.
			a.tell(workloadEvent{handle: handle, gone: true})
		}
		return cniserver.Result{}, fmt.Errorf("pod %s: %w", req.Key(), err)
	}
	// The loop takes it from here (and repairs the veth and the route
	// if anything removes them).
	a.tell(workloadEvent{handle: handle, w: w})
	return cniserver.Result{IP: netip.PrefixFrom(r.IP, 32), MTU: mtu, HostIface: w.HostIface, Block: r.Block}, nil
}

// setupPod builds the pod's veth pair and writes its /32 route at once,
// so the pod is reachable when ADD returns. Both are pinned in their
// reconcilers first: a sync that runs meanwhile, with a desired state from
// before this ADD, leaves them alone; the pins go when the loop's own
// desired state has the pod. On failure the pins are dropped.
func (a *Agent) setupPod(ctx context.Context, podNS netns.NsHandle, w model.Workload, ifName string) error {
	a.arp.Pin(w)
	route := model.Route{Dst: netip.PrefixFrom(w.IP, 32), Kind: model.RoutePod, Device: w.HostIface}
	// A repeated ADD of a pod the loop knows only from the cache (after
	// an agent restart): the pod is out of the desired state until this
	// ADD ends, and its route stays meanwhile.
	a.routes.Pin(route.Dst)
	err := proxyarp.SetupPodWith(ctx, a.nl, a.cfg.Sysctl, podNS, w, ifName)
	if err == nil {
		var l netlink.Link
		if l, err = a.nl.LinkByName(w.HostIface); err == nil {
			err = a.routes.AddNow(route, l.Attrs().Index)
		}
	}
	if err != nil {
		a.unpinPod(w)
		return err
	}
	return nil
}

// Del releases the pod's address and removes its veth. Unknown containers
// succeed: DEL is idempotent.
func (a *Agent) Del(ctx context.Context, req cniserver.DelRequest) error {
	if err := a.ready(); err != nil {
		return err
	}
	// Nothing is torn down while the address cannot be released: the
	// runtime retries DEL, and the pod keeps its veth until then.
	if err := a.apiAvailable(whatDel); err != nil {
		return err
	}
	al, ok, err := a.findContainer(ctx, req.ContainerID, whatDel)
	if err != nil {
		return err
	}
	if !ok {
		if req.Namespace != "" && req.Name != "" {
			// No allocation, but a veth may survive a half-done ADD.
			w := model.Workload{Namespace: req.Namespace, Name: req.Name, HostIface: proxyarp.VethName(req.Namespace, req.Name)}
			return proxyarp.TeardownPod(a.nl, w)
		}
		return nil
	}
	w := model.Workload{Namespace: al.Namespace, Name: al.Pod, ContainerID: al.ContainerID, HostIface: proxyarp.VethName(al.Namespace, al.Pod), IP: al.IP}
	// Until the loop is told, the veth is this DEL's: a run meanwhile
	// does not find it missing.
	defer a.claimPod(al.Handle)()
	if err := a.teardownPod(w, al.Handle); err != nil {
		return fmt.Errorf("pod %s/%s: %w", al.Namespace, al.Pod, err)
	}
	if err := a.alloc.Release(ctx, al.Handle); err != nil {
		if aerr := a.apiError(whatDel, err); aerr != nil {
			return aerr
		}
		return fmt.Errorf("pod %s/%s: %w", al.Namespace, al.Pod, err)
	}
	return nil
}

// teardownPod removes the pod's veth (its route goes with it) and tells
// the loop the workload is gone. A sync that still has the workload in its
// desired state cannot bring it back: the reconcilers never create a veth,
// and a route through a missing device is held, not written.
func (a *Agent) teardownPod(w model.Workload, handle string) error {
	a.unpinPod(w)
	if err := proxyarp.TeardownPod(a.nl, w); err != nil {
		return err
	}
	a.tell(workloadEvent{handle: handle, gone: true})
	return nil
}

// Check verifies the pod still has its address and veth.
func (a *Agent) Check(ctx context.Context, req cniserver.CheckRequest) error {
	if err := a.ready(); err != nil {
		return err
	}
	al, ok, err := a.findContainer(ctx, req.ContainerID, whatCheck)
	if err != nil {
		return err
	}
	if !ok {
		return cniserver.Errorf(cniserver.ReasonNotFound, "pod %s: no address is allocated for container %s", req.Key(), req.ContainerID)
	}
	if req.IP.IsValid() && req.IP.Addr() != al.IP {
		return cniserver.Errorf(cniserver.ReasonMismatch, "pod %s: runtime has %s, IPAM has %s", req.Key(), req.IP, al.IP)
	}
	name := proxyarp.VethName(al.Namespace, al.Pod)
	if _, err := a.nl.LinkByName(name); err != nil {
		return cniserver.Errorf(cniserver.ReasonMismatch, "pod %s: host veth %s is missing", req.Key(), name)
	}
	return nil
}

// findContainer finds this node's allocation for a container ID (what
// the caller needs it for goes into the error).
func (a *Agent) findContainer(ctx context.Context, id, what string) (ipam.Allocation, bool, error) {
	al, ok, err := a.alloc.Find(ctx, func(al ipam.Allocation) bool { return al.ContainerID == id })
	if err != nil {
		if aerr := a.apiError(what, err); aerr != nil {
			return ipam.Allocation{}, false, aerr
		}
		return ipam.Allocation{}, false, cniserver.Errorf(cniserver.ReasonNotReady, "look up container %s in IPAM: %v", id, err)
	}
	return al, ok, nil
}
