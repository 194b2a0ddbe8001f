package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"

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
	if a.alloc == nil || !a.self.IP.IsValid() {
		return cniserver.Errorf(cniserver.ReasonNotReady, "wren agent on node %s is still starting (waiting for the Kubernetes API)", a.cfg.NodeName)
	}
	return nil
}

// Add allocates the pod's address, builds its veth pair and waits until
// the loop has programmed its route, so the pod is reachable when the
// runtime starts it. A repeated ADD returns the same address.
func (a *Agent) Add(ctx context.Context, req cniserver.AddRequest) (cniserver.Result, error) {
	if err := a.ready(); err != nil {
		return cniserver.Result{}, err
	}
	if req.Namespace == "" || req.Name == "" {
		return cniserver.Result{}, cniserver.Errorf(cniserver.ReasonInvalidArgument, "container %s: K8S_POD_NAMESPACE and K8S_POD_NAME are required", req.ContainerID)
	}
	podNS, err := netns.GetFromPath(req.NetNS)
	if err != nil {
		return cniserver.Result{}, cniserver.Errorf(cniserver.ReasonInvalidNetNS, "pod %s: open netns %s: %v", req.Key(), req.NetNS, err)
	}
	defer podNS.Close()
	r, err := a.alloc.Allocate(ctx, ipam.Request{Namespace: req.Namespace, Pod: req.Name, ContainerID: req.ContainerID})
	if err != nil {
		return cniserver.Result{}, fmt.Errorf("pod %s: %w", req.Key(), err)
	}
	a.mu.Lock()
	mtu := a.podMTU
	a.mu.Unlock()
	w := model.Workload{Namespace: req.Namespace, Name: req.Name, ContainerID: req.ContainerID,
		HostIface: proxyarp.VethName(req.Namespace, req.Name), IP: r.IP, MTU: mtu}
	handle := req.Namespace + "/" + req.Name + "/" + req.ContainerID
	// Pin the workload before its veth exists, so the loop's orphan sweep
	// never removes a veth whose allocation the cache has not shown yet.
	a.mu.Lock()
	a.pinned[handle] = w
	a.mu.Unlock()
	ifName := req.IfName
	if ifName == "" {
		ifName = "eth0"
	}
	if err := proxyarp.SetupPodWith(ctx, a.nl, a.cfg.Sysctl, podNS, w, ifName); err != nil {
		a.unpin(handle)
		if rerr := a.alloc.Release(context.WithoutCancel(ctx), handle); rerr != nil {
			err = errors.Join(err, rerr)
		}
		return cniserver.Result{}, fmt.Errorf("pod %s: %w", req.Key(), err)
	}
	if err := a.waitSynced(ctx); err != nil {
		// The pod is set up; a failing unrelated object must not fail
		// it. Report only whether its own route is missing.
		if rerr := a.podRouteMissing(w); rerr != nil {
			return cniserver.Result{}, cniserver.Errorf(cniserver.ReasonNotReady, "pod %s: %v (sync: %v)", req.Key(), rerr, err)
		}
	}
	return cniserver.Result{IP: netip.PrefixFrom(r.IP, 32), MTU: mtu, HostIface: w.HostIface, Block: r.Block}, nil
}

func (a *Agent) unpin(handle string) {
	a.mu.Lock()
	delete(a.pinned, handle)
	a.mu.Unlock()
}

// podRouteMissing reports an error unless the pod's /32 is in the kernel.
func (a *Agent) podRouteMissing(w model.Workload) error {
	rs, err := a.nl.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: netlinkIPNet(netip.PrefixFrom(w.IP, 32))}, netlink.RT_FILTER_DST)
	if err != nil {
		return err
	}
	if len(rs) == 0 {
		return fmt.Errorf("route to %s not programmed yet", w.IP)
	}
	return nil
}

// Del releases the pod's address and removes its veth. Unknown containers
// succeed: DEL is idempotent.
func (a *Agent) Del(ctx context.Context, req cniserver.DelRequest) error {
	if err := a.ready(); err != nil {
		return err
	}
	al, ok, err := a.findContainer(ctx, req.ContainerID)
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
	if err := proxyarp.TeardownPod(a.nl, w); err != nil {
		return fmt.Errorf("pod %s/%s: %w", al.Namespace, al.Pod, err)
	}
	a.unpin(al.Handle)
	if err := a.alloc.Release(ctx, al.Handle); err != nil {
		return fmt.Errorf("pod %s/%s: %w", al.Namespace, al.Pod, err)
	}
	a.run.Poke()
	return nil
}

// Check verifies the pod still has its address and veth.
func (a *Agent) Check(ctx context.Context, req cniserver.CheckRequest) error {
	if err := a.ready(); err != nil {
		return err
	}
	al, ok, err := a.findContainer(ctx, req.ContainerID)
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

// findContainer finds this node's allocation for a container ID.
func (a *Agent) findContainer(ctx context.Context, id string) (ipam.Allocation, bool, error) {
	blocks, err := a.cluster.IPAMStore().ListBlocks(ctx)
	if err != nil {
		return ipam.Allocation{}, false, cniserver.Errorf(cniserver.ReasonNotReady, "list IPAM blocks: %v", err)
	}
	for _, b := range blocks {
		for _, al := range b.Allocations {
			if al.ContainerID == id && al.Node == a.cfg.NodeName {
				return al, true, nil
			}
		}
	}
	return ipam.Allocation{}, false, nil
}
