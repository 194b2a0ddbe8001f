package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	cniversion "github.com/containernetworking/cni/pkg/version"
)

const (
	// defaultTimeout bounds one call to the agent. ADD writes the
	// allocation to the Kubernetes API (a few round trips, retried on
	// conflicts), so it is generous; the runtime retries on error code 11.
	defaultTimeout = 30 * time.Second
	// defaultGateway is the pod gateway when the agent names none: the
	// link-local address the host answers for by proxy ARP (SPEC.md).
	defaultGateway = "169.254.1.1"
	// defaultSocket is the agent's socket, cniv1.DefaultSocket (the
	// plugin does not import api/cni/v1: see wire.go; a test compares).
	defaultSocket = "/var/run/wren/wren.sock"
)

// The methods of the wren.cni.v1.CNI service (cniv1.CNI_*_FullMethodName).
const (
	methodAdd   = "/wren.cni.v1.CNI/Add"
	methodDel   = "/wren.cni.v1.CNI/Del"
	methodCheck = "/wren.cni.v1.CNI/Check"
)

// NetConf is the plugin's network configuration: the standard fields
// plus where to reach the agent.
type NetConf struct {
	types.NetConf
	// AgentSocket is the agent's unix socket; defaultSocket if empty.
	AgentSocket string `json:"agent_socket,omitempty"`
	// Timeout bounds each call to the agent, as a Go duration ("30s");
	// defaultTimeout if empty.
	Timeout string `json:"timeout,omitempty"`
}

// conf is a parsed, validated NetConf.
type conf struct {
	NetConf
	socket  string
	timeout time.Duration
}

// loadConf parses and validates the configuration on stdin. Errors are
// CNI errors: 6 for JSON that does not decode, 7 for bad values.
func loadConf(stdin []byte) (*conf, error) {
	var n NetConf
	if err := json.Unmarshal(stdin, &n); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("wren-cni: decode network configuration: %s", err), "")
	}
	c := &conf{NetConf: n, socket: n.AgentSocket, timeout: defaultTimeout}
	if c.socket == "" {
		c.socket = defaultSocket
	}
	if !filepath.IsAbs(c.socket) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("wren-cni: network %q: agent_socket %q must be an absolute path (default %s)", n.Name, n.AgentSocket, defaultSocket), "")
	}
	if n.Timeout != "" {
		d, err := time.ParseDuration(n.Timeout)
		if err != nil || d <= 0 {
			return nil, types.NewError(types.ErrInvalidNetworkConfig,
				fmt.Sprintf("wren-cni: network %q: timeout %q must be a positive Go duration such as \"30s\"", n.Name, n.Timeout), "")
		}
		c.timeout = d
	}
	return c, nil
}

// podArgs are the Kubernetes fields of CNI_ARGS.
type podArgs struct {
	Namespace string // K8S_POD_NAMESPACE
	Name      string // K8S_POD_NAME
	UID       string // K8S_POD_UID
}

// parseCNIArgs reads CNI_ARGS ("K1=V1;K2=V2"). Keys it does not know are
// ignored (runtimes add their own, e.g. K8S_POD_INFRA_CONTAINER_ID), with
// or without IgnoreUnknown; a pair without "=" is an error (CNI code 4).
func parseCNIArgs(s string) (podArgs, error) {
	var a podArgs
	if s == "" {
		return a, nil
	}
	for _, pair := range strings.Split(s, ";") {
		if pair == "" {
			continue
		}
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k == "" {
			return podArgs{}, types.NewError(types.ErrInvalidEnvironmentVariables,
				fmt.Sprintf("wren-cni: CNI_ARGS: pair %q is not KEY=VALUE", pair), "")
		}
		switch k {
		case "K8S_POD_NAMESPACE":
			a.Namespace = v
		case "K8S_POD_NAME":
			a.Name = v
		case "K8S_POD_UID":
			a.UID = v
		}
	}
	return a, nil
}

// requirePod makes sure the runtime said which pod this is: the agent
// names the host veth after the pod and records the allocation under it.
func (a podArgs) requirePod(op string, args *skel.CmdArgs) error {
	var missing []string
	if a.Namespace == "" {
		missing = append(missing, "K8S_POD_NAMESPACE")
	}
	if a.Name == "" {
		missing = append(missing, "K8S_POD_NAME")
	}
	if len(missing) == 0 {
		return nil
	}
	return types.NewError(types.ErrInvalidEnvironmentVariables,
		fmt.Sprintf("wren-cni %s container %s: CNI_ARGS lacks %s: wren-cni serves Kubernetes pods and needs the runtime (kubelet via containerd or CRI-O) to pass them",
			op, shortID(args.ContainerID), strings.Join(missing, " and ")), "")
}

// pod is the identity shared by every request.
type pod struct {
	containerID, netns, ifname, namespace, name, uid, cniVersion string
}

func podOf(args *skel.CmdArgs, a podArgs, c *conf) pod {
	return pod{
		containerID: args.ContainerID, netns: args.Netns, ifname: args.IfName,
		namespace: a.Namespace, name: a.Name, uid: a.UID, cniVersion: c.CNIVersion,
	}
}

// String names the pod in messages: "ns/name (container 0123456789ab)".
func (p pod) String() string {
	if p.namespace == "" && p.name == "" {
		return "container " + shortID(p.containerID)
	}
	return fmt.Sprintf("pod %s/%s (container %s)", p.namespace, p.name, shortID(p.containerID))
}

// request is the AddRequest or DelRequest for p.
func (p pod) request() *request {
	return &request{
		ContainerID: p.containerID, NetNS: p.netns, IfName: p.ifname,
		PodNamespace: p.namespace, PodName: p.name, PodUID: p.uid, CNIVersion: p.cniVersion,
	}
}

// checkRequest is the CheckRequest for p and the address from prevResult.
func (p pod) checkRequest(ip netip.Prefix) *request {
	r := p.request()
	if ip.IsValid() {
		r.IP = ip.String()
	}
	return r
}

// shortID shortens a container ID the way runtimes print it.
func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// call sends req to the agent's method over its socket, with a deadline
// of the configured timeout, and returns the encoded reply; a failure is
// mapped to a CNI error. okIfNotFound makes NOT_FOUND a success (DEL).
func call(op string, c *conf, p pod, method string, req *request, okIfNotFound bool) ([]byte, error) {
	if _, err := os.Stat(c.socket); err != nil {
		return nil, unreachable(op, c.socket, p, err)
	}
	msg, err := req.marshal()
	if err != nil {
		return nil, types.NewError(types.ErrInternal, fmt.Sprintf("wren-cni %s %s: encode request: %s", op, p, err), "")
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	// A unix socket: no name resolution, no proxy, no network traffic.
	reply, err := unary(ctx, c.socket, method, msg)
	if err != nil {
		if okIfNotFound && isNotFound(err) {
			return nil, nil
		}
		if deadlinePassed(ctx, err) {
			// Our deadline passed: whatever the agent managed to say
			// (its handler sees the same deadline), the cause is time.
			return nil, timedOut(op, c, p, err)
		}
		return nil, rpcError(op, c, p, err)
	}
	return reply, nil
}

// deadlinePassed reports whether err is our deadline running out. gRPC
// can report it a moment before ctx's own timer fires, and not only as
// DeadlineExceeded: the agent's side gives up first (the deadline travels
// with the request), and a connection still being set up fails as
// Unavailable "context deadline exceeded" (seen under load in CI).
func deadlinePassed(ctx context.Context, err error) bool {
	if st, ok := statusOf(err); errors.Is(ctx.Err(), context.DeadlineExceeded) || ok && st.code == codeDeadlineExceeded {
		return true
	}
	if d, ok := ctx.Deadline(); ok && !time.Now().Before(d) {
		return true
	}
	return strings.Contains(err.Error(), context.DeadlineExceeded.Error())
}

// timedOut is the error for an agent that did not answer in time: code
// 11, so the runtime retries.
func timedOut(op string, c *conf, p pod, cause error) *types.Error {
	return types.NewError(types.ErrTryAgainLater,
		fmt.Sprintf("wren-cni %s %s: wren agent did not answer within %s (raise \"timeout\" in the CNI configuration if the Kubernetes API is slow; the runtime retries)", op, p, c.timeout),
		cause.Error())
}

// unreachable is the error for an agent the plugin cannot reach: code 11,
// so the runtime retries, with the fix in the message.
func unreachable(op, socket string, p pod, cause error) *types.Error {
	what := "unreachable"
	if errors.Is(cause, fs.ErrNotExist) {
		what = "does not exist"
	}
	return types.NewError(types.ErrTryAgainLater,
		fmt.Sprintf("wren-cni %s %s: wren agent socket %s %s: is the wren-agent pod running on this node?",
			op, p, socket, what),
		cause.Error())
}

// rpcError maps a failed call to a CNI error. The agent's ErrorDetail
// decides the code; a status without one is a transport failure
// (Unavailable: the agent is not listening) or our own deadline.
func rpcError(op string, c *conf, p pod, err error) *types.Error {
	st, ok := statusOf(err)
	if !ok {
		return types.NewError(types.ErrInternal, fmt.Sprintf("wren-cni %s %s: %s", op, p, err), "")
	}
	prefix := fmt.Sprintf("wren-cni %s %s: ", op, p)
	if !st.detailed {
		switch st.code {
		case codeUnavailable:
			return unreachable(op, c.socket, p, err)
		case codeDeadlineExceeded:
			return timedOut(op, c, p, err)
		case codeUnimplemented:
			return types.NewError(types.ErrInternal,
				prefix+"wren agent does not serve wren.cni.v1: are wren-cni and wren-agent the same release?", st.message)
		}
		return types.NewError(types.ErrInternal, prefix+"wren agent: "+st.message, st.code.String())
	}
	msg := st.message
	switch st.reason {
	case reasonInvalidArgument:
		return types.NewError(types.ErrInvalidEnvironmentVariables, prefix+msg, "")
	case reasonInvalidNetNS:
		return types.NewError(types.ErrInvalidNetNS, prefix+msg, "")
	case reasonNotFound:
		return types.NewError(types.ErrUnknownContainer, prefix+msg, "")
	case reasonPoolExhausted:
		return types.NewError(types.ErrInternal,
			prefix+"no free pod address: "+msg+" (add an IPPool or enlarge one; wrenctl ipam show lists the blocks)", "")
	case reasonNotReady:
		// Try again later. The agent's message says what is not ready:
		// "wren agent is not ready: ..." while it starts, or "the
		// Kubernetes API server https://... is unreachable ..." when the
		// agent is fine but cannot record or release the address.
		return types.NewError(types.ErrTryAgainLater, prefix+msg, "")
	case reasonMismatch:
		return types.NewError(types.ErrInternal, prefix+"pod network differs from what ADD built: "+msg, "")
	}
	return types.NewError(types.ErrInternal, prefix+"wren agent: "+msg, "")
}

// isNotFound reports whether a DEL failed only because the agent knows
// nothing of the container, which makes the DEL a success.
func isNotFound(err error) bool {
	st, ok := statusOf(err)
	if !ok {
		return false
	}
	if st.detailed {
		return st.reason == reasonNotFound
	}
	return st.code == codeNotFound
}

// cmdAdd is CNI ADD: the agent allocates the address (the same one again
// for a container it already knows) and builds the veth; the result goes
// to stdout in the configuration's cniVersion.
func cmdAdd(args *skel.CmdArgs) error {
	c, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	a, err := parseCNIArgs(args.Args)
	if err != nil {
		return err
	}
	if err := a.requirePod("ADD", args); err != nil {
		return err
	}
	p := podOf(args, a, c)
	b, err := call("ADD", c, p, methodAdd, p.request(), false)
	if err != nil {
		return err
	}
	var reply addReply
	if err := reply.unmarshal(b); err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("wren-cni ADD %s: agent reply: %s", p, err), "")
	}
	res, err := resultFor(&reply, args.IfName, args.Netns, c.CNIVersion)
	if err != nil {
		return types.NewError(types.ErrInternal, fmt.Sprintf("wren-cni ADD %s: agent result: %s", p, err), "")
	}
	return res.Print()
}

// cmdDel is CNI DEL. It is idempotent: a container the agent does not
// know is success. An unreachable agent is an error (code 11), not
// success: the runtime retries DEL until it succeeds, and succeeding
// without the agent would leave the address allocated in the API and the
// veth on the node until the agent's garbage collection finds them.
func cmdDel(args *skel.CmdArgs) error {
	c, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	a, err := parseCNIArgs(args.Args)
	if err != nil {
		return err
	}
	// No requirePod: the agent finds the allocation by container ID.
	p := podOf(args, a, c)
	_, err = call("DEL", c, p, methodDel, p.request(), true)
	return err
}

// cmdCheck is CNI CHECK: the agent verifies the pod's network against
// the address the runtime remembers from ADD (prevResult).
func cmdCheck(args *skel.CmdArgs) error {
	c, err := loadConf(args.StdinData)
	if err != nil {
		return err
	}
	a, err := parseCNIArgs(args.Args)
	if err != nil {
		return err
	}
	if err := a.requirePod("CHECK", args); err != nil {
		return err
	}
	p := podOf(args, a, c)
	ip, err := prevAddress(&c.NetConf.NetConf, args.IfName)
	if err != nil {
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("wren-cni CHECK %s: %s", p, err), "")
	}
	_, err = call("CHECK", c, p, methodCheck, p.checkRequest(ip), false)
	return err
}

// prevAddress returns the IPv4 address prevResult gives the pod interface
// ifName: the address whose interface index names ifName, or the only
// IPv4 address if the result has no interface indexes.
func prevAddress(n *types.NetConf, ifName string) (netip.Prefix, error) {
	if n.RawPrevResult == nil {
		return netip.Prefix{}, errors.New("the network configuration has no prevResult (the runtime must pass the ADD result to CHECK)")
	}
	if err := cniversion.ParsePrevResult(n); err != nil {
		return netip.Prefix{}, fmt.Errorf("prevResult: %w", err)
	}
	prev, err := types100.NewResultFromResult(n.PrevResult)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("prevResult: %w", err)
	}
	var found []netip.Prefix
	for _, ipc := range prev.IPs {
		if ipc.Address.IP.To4() == nil {
			continue
		}
		if ipc.Interface != nil {
			i := *ipc.Interface
			if i < 0 || i >= len(prev.Interfaces) || prev.Interfaces[i].Name != ifName || prev.Interfaces[i].Sandbox == "" {
				continue
			}
		}
		addr, _ := netip.AddrFromSlice(ipc.Address.IP.To4())
		ones, _ := ipc.Address.Mask.Size()
		found = append(found, netip.PrefixFrom(addr, ones))
	}
	if len(found) != 1 {
		return netip.Prefix{}, fmt.Errorf("prevResult has %d IPv4 addresses for interface %s, want 1", len(found), ifName)
	}
	return found[0], nil
}

// resultFor turns the agent's reply into the CNI result of the given
// version: the host veth (no sandbox), the pod interface in its sandbox,
// the pod's /32 on it with gateway 169.254.1.1, and a default route via
// the gateway. The link route to the gateway that the agent also adds in
// the pod is not listed: a CNI route has no scope before spec 1.1.0.
func resultFor(reply *addReply, ifName, netnsPath, cniVersion string) (types.Result, error) {
	ip, err := netip.ParsePrefix(reply.IP)
	if err != nil {
		return nil, fmt.Errorf("pod address: %w", err)
	}
	if !ip.Addr().Is4() {
		return nil, fmt.Errorf("pod address %s is not IPv4", ip)
	}
	gws := reply.Gateway
	if gws == "" {
		gws = defaultGateway
	}
	gw, err := netip.ParseAddr(gws)
	if err != nil || !gw.Is4() {
		return nil, fmt.Errorf("gateway %q is not an IPv4 address", gws)
	}
	mac := reply.MAC
	if mac != "" {
		hw, err := net.ParseMAC(mac)
		if err != nil {
			return nil, fmt.Errorf("pod MAC: %w", err)
		}
		mac = hw.String()
	}

	var ifaces []*types100.Interface
	if h := reply.HostIface; h != "" {
		ifaces = append(ifaces, &types100.Interface{Name: h})
	}
	ifaces = append(ifaces, &types100.Interface{Name: ifName, Mac: mac, Sandbox: netnsPath})
	podIdx := len(ifaces) - 1
	gwIP := net.IP(gw.AsSlice())
	r := &types100.Result{
		CNIVersion: "1.0.0",
		Interfaces: ifaces,
		IPs: []*types100.IPConfig{{
			Interface: &podIdx,
			Address:   net.IPNet{IP: ip.Addr().AsSlice(), Mask: net.CIDRMask(ip.Bits(), 32)},
			Gateway:   gwIP,
		}},
		Routes: []*types.Route{{
			Dst: net.IPNet{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
			GW:  gwIP,
		}},
	}
	return r.GetAsVersion(cniVersion)
}
