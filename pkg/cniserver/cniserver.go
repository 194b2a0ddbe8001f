// Package cniserver is the agent's side of the CNI plugin: a gRPC server
// for the wren.cni.v1 service on the agent's unix socket, adapting each
// call to a Handler written in plain Go types.
//
// wren-cni, executed by the container runtime for every pod sandbox, only
// forwards the CNI command here. The agent does the whole ADD in one call:
// allocate the address (durable in the Kubernetes API), build the veth and
// the pod side (pkg/proxyarp), and record the workload for its loop. Doing
// it all in the agent means there is no window in which the address is
// allocated but the veth does not exist yet, which the agent's orphan sweep
// could otherwise observe and undo.
//
// No protobuf type crosses the Handler interface: the adapter validates the
// request, converts it, and turns the Handler's error into a gRPC status
// whose ErrorDetail tells the plugin which CNI error code to return.
package cniserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	cniv1 "github.com/wren-net/wren/api/cni/v1"
	"github.com/wren-net/wren/pkg/ipam"
	"github.com/wren-net/wren/pkg/proxyarp"
)

// Pod identifies the pod sandbox a CNI command is about. The fields come
// from the CNI environment the runtime gave the plugin.
type Pod struct {
	ContainerID string // CNI_CONTAINERID; the key of the allocation
	NetNS       string // CNI_NETNS: path of the sandbox's network namespace
	IfName      string // CNI_IFNAME: the interface in the pod, normally eth0
	Namespace   string // K8S_POD_NAMESPACE
	Name        string // K8S_POD_NAME
	UID         string // K8S_POD_UID, when the runtime passes it
	CNIVersion  string // cniVersion of the network configuration
}

// Key names the pod in logs and errors: "namespace/name", or the
// container ID when the runtime did not say which pod it is.
func (p Pod) Key() string {
	if p.Namespace == "" && p.Name == "" {
		return "container " + p.ContainerID
	}
	return p.Namespace + "/" + p.Name
}

// AddRequest is a CNI ADD.
type AddRequest struct {
	Pod
}

// DelRequest is a CNI DEL. NetNS may be empty (the sandbox is already
// gone), and so may Namespace and Name; the allocation is found by
// ContainerID then.
type DelRequest struct {
	Pod
}

// CheckRequest is a CNI CHECK.
type CheckRequest struct {
	Pod
	// IP is the pod's address as the runtime remembers it from the ADD
	// result (prevResult); the zero Prefix if the runtime had none.
	IP netip.Prefix
}

// Result is what the agent built for a pod on ADD.
type Result struct {
	IP        netip.Prefix     // the pod's address, a /32
	Gateway   netip.Addr       // the pod's gateway; zero means proxyarp.Gateway
	MTU       int              // the pod MTU
	HostIface string           // the host-side veth, "cali" + 11 hex digits
	MAC       net.HardwareAddr // the pod interface's MAC, if known
	Pool      netip.Prefix     // the IPPool the address came from, for logs
	Block     netip.Prefix     // the IPAM block the address came from, for logs
}

// Handler does the work of the CNI commands. The agent implements it.
//
// Add must be idempotent per ContainerID: a repeated ADD (the runtime
// retries after a timeout it cannot tell from a failure) returns the same
// address. Del must succeed when there is nothing to delete, or return an
// error of ReasonNotFound, which the plugin treats as success. Check
// returns an error of ReasonMismatch that says what differs.
//
// Errors are classified by ReasonOf: wrap them with NewError or Errorf to
// choose the CNI error code the plugin returns.
//
// A Handler that also implements Observer is told the outcome of every
// command (the agent counts them in its metrics).
type Handler interface {
	Add(ctx context.Context, req AddRequest) (Result, error)
	Del(ctx context.Context, req DelRequest) error
	Check(ctx context.Context, req CheckRequest) error
}

// Observer is told about every command the server answered: "add",
// "del" or "check", how long the answer took (request validation
// included), and the error (nil on success; a DEL of an unknown container
// is a success), which ReasonOf classifies. It must not block.
type Observer interface {
	ObserveCNI(command string, took time.Duration, err error)
}

// nopObserver is the Observer of a Handler that is not one.
type nopObserver struct{}

func (nopObserver) ObserveCNI(string, time.Duration, error) {}

// Reason classifies a Handler error; the plugin turns it into a CNI error
// code (github.com/containernetworking/cni SPEC.md, "Error codes").
type Reason int

// The reasons, with the gRPC code and the CNI error code each becomes.
const (
	// ReasonInternal is any other failure: gRPC Internal, CNI 999.
	ReasonInternal Reason = iota
	// ReasonInvalidArgument is a bad request field: gRPC InvalidArgument,
	// CNI 4 (the fields come from the CNI_* environment variables).
	ReasonInvalidArgument
	// ReasonInvalidNetNS is a netns path that cannot be used: gRPC
	// InvalidArgument, CNI 8.
	ReasonInvalidNetNS
	// ReasonNotFound is an unknown container: gRPC NotFound, CNI 3 (and
	// success for DEL).
	ReasonNotFound
	// ReasonPoolExhausted means no usable pool has a free address: gRPC
	// ResourceExhausted, CNI 999 with a message saying so. Errors that
	// wrap ipam.ErrExhausted get it without wrapping.
	ReasonPoolExhausted
	// ReasonNotReady means the agent cannot serve yet (starting, or it
	// lost the Kubernetes API): gRPC Unavailable, CNI 11 (try again later;
	// the runtime retries). A handler that ran out of time (its context's
	// deadline) gets it too.
	ReasonNotReady
	// ReasonMismatch is a CHECK that found a difference: gRPC
	// FailedPrecondition, CNI 999.
	ReasonMismatch
	// ReasonAPIUnavailable means the Kubernetes API server cannot be
	// reached or does not serve right now (connection refused or reset,
	// timeout, 429, 503), so the agent cannot record or release an
	// address: gRPC Unavailable with the NOT_READY detail, CNI 11 (try
	// again later). Its message is sent as is and should name the API
	// server; the plugin does not blame the agent. Errors that wrap
	// ipam.ErrUnavailable get it without wrapping (their message is
	// prefixed with "the Kubernetes API server is unavailable: ").
	ReasonAPIUnavailable
	// ReasonRefused means IPAM cannot meet what the pod asked for by
	// annotation (an address that is taken, reserved or in no pool; a
	// pool that does not exist or is disabled; an annotation that does
	// not parse) or what the IPAMConfiguration allows: gRPC
	// FailedPrecondition, CNI 999; retrying cannot help until someone
	// changes the pod or the cluster, so the message names the address
	// or pool, the annotation, the object in the way and the fix. Errors
	// that wrap ipam.ErrRefused get it without wrapping.
	ReasonRefused
)

// reasons maps each Reason to its wire form and gRPC code.
var reasons = map[Reason]struct {
	name   string
	code   codes.Code
	detail cniv1.ErrorReason
}{
	ReasonInternal:        {"internal", codes.Internal, cniv1.ErrorReason_ERROR_REASON_UNSPECIFIED},
	ReasonInvalidArgument: {"invalid-argument", codes.InvalidArgument, cniv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT},
	ReasonInvalidNetNS:    {"invalid-netns", codes.InvalidArgument, cniv1.ErrorReason_ERROR_REASON_INVALID_NETNS},
	ReasonNotFound:        {"not-found", codes.NotFound, cniv1.ErrorReason_ERROR_REASON_NOT_FOUND},
	ReasonPoolExhausted:   {"pool-exhausted", codes.ResourceExhausted, cniv1.ErrorReason_ERROR_REASON_POOL_EXHAUSTED},
	ReasonNotReady:        {"not-ready", codes.Unavailable, cniv1.ErrorReason_ERROR_REASON_NOT_READY},
	ReasonMismatch:        {"mismatch", codes.FailedPrecondition, cniv1.ErrorReason_ERROR_REASON_MISMATCH},
	// The wire has one "try again later" reason; the message says whose
	// fault it is (see message).
	ReasonAPIUnavailable: {"api-unavailable", codes.Unavailable, cniv1.ErrorReason_ERROR_REASON_NOT_READY},
	// No wire reason of its own: the plugin prints the message with code
	// 999, as for any failure it has no special words for.
	ReasonRefused: {"refused", codes.FailedPrecondition, cniv1.ErrorReason_ERROR_REASON_UNSPECIFIED},
}

// String returns the reason's name as used in logs.
func (r Reason) String() string {
	if m, ok := reasons[r]; ok {
		return m.name
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// Error is a Handler error with its Reason.
type Error struct {
	Reason Reason
	Err    error
}

// Error returns the message of the wrapped error.
func (e *Error) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *Error) Unwrap() error { return e.Err }

// NewError classifies err as r. A nil err stays nil.
func NewError(r Reason, err error) error {
	if err == nil {
		return nil
	}
	return &Error{Reason: r, Err: err}
}

// Errorf is fmt.Errorf classified as r.
func Errorf(r Reason, format string, a ...any) error {
	return &Error{Reason: r, Err: fmt.Errorf(format, a...)}
}

// ReasonOf classifies err: the Reason of the first *Error in its chain;
// else ReasonAPIUnavailable for ipam.ErrUnavailable, ReasonPoolExhausted
// for ipam.ErrExhausted, ReasonRefused for ipam.ErrRefused and
// ReasonNotReady for context.DeadlineExceeded; else ReasonInternal.
func ReasonOf(err error) Reason {
	r, _ := classify(err)
	return r
}

// classify is ReasonOf, also telling whether the handler chose the
// reason itself (an *Error) or it was derived from a sentinel.
func classify(err error) (r Reason, explicit bool) {
	var e *Error
	switch {
	case errors.As(err, &e):
		return e.Reason, true
	case errors.Is(err, ipam.ErrUnavailable):
		return ReasonAPIUnavailable, false
	case errors.Is(err, ipam.ErrExhausted):
		return ReasonPoolExhausted, false
	case errors.Is(err, ipam.ErrRefused):
		return ReasonRefused, false
	case errors.Is(err, context.DeadlineExceeded):
		return ReasonNotReady, false
	}
	return ReasonInternal, false
}

// message is the status message for a Handler error: its own text, which
// reaches the pod's events through the runtime, so handlers should name
// what is wrong and what fixes it. The two "try again later" reasons share
// one wire reason, so the message says whose fault it is: "wren agent is
// not ready: ..." for ReasonNotReady; the handler's own words (naming the
// API server) for ReasonAPIUnavailable, or a prefix saying so when the
// reason came from ipam.ErrUnavailable alone.
func message(r Reason, explicit bool, err error) string {
	switch {
	case r == ReasonNotReady:
		return "wren agent is not ready: " + err.Error() + " (the runtime retries; the agent's log says what it waits for)"
	case r == ReasonAPIUnavailable && !explicit:
		return "the Kubernetes API server is unavailable: " + err.Error() + " (the runtime retries)"
	}
	return err.Error()
}

// statusOf turns a Handler error into a gRPC status error carrying an
// ErrorDetail and the message of message.
func statusOf(err error) error {
	r, explicit := classify(err)
	m, ok := reasons[r]
	if !ok {
		m = reasons[ReasonInternal]
	}
	st := status.New(m.code, message(r, explicit, err))
	if ds, derr := st.WithDetails(&cniv1.ErrorDetail{Reason: m.detail}); derr == nil {
		st = ds
	}
	return st.Err()
}

// Register adds the wren.cni.v1 service, backed by h, to s. The agent
// registers it beside its debug API on one server listening on one socket
// (see Listen); Serve does both for a server of its own.
func Register(s grpc.ServiceRegistrar, h Handler, logger *slog.Logger) {
	if logger == nil {
		logger = slog.Default()
	}
	obs, ok := h.(Observer)
	if !ok {
		obs = nopObserver{}
	}
	cniv1.RegisterCNIServer(s, &adapter{h: h, obs: obs, log: logger.With("component", "cniserver")})
}

// adapter is the thin proto <-> plain-type layer over a Handler.
type adapter struct {
	cniv1.UnimplementedCNIServer
	h   Handler
	obs Observer
	log *slog.Logger
}

// validatePod checks the fields every command needs; withPod also demands
// the pod's identity and netns (ADD and CHECK).
func validatePod(p Pod, withPod bool) error {
	switch {
	case p.ContainerID == "":
		return Errorf(ReasonInvalidArgument, "container ID is empty (CNI_CONTAINERID)")
	case p.IfName == "":
		return Errorf(ReasonInvalidArgument, "%s: interface name is empty (CNI_IFNAME)", p.Key())
	case !withPod:
		return nil
	case p.Namespace == "" || p.Name == "":
		return Errorf(ReasonInvalidArgument, "container %s: pod namespace and name are required (CNI_ARGS K8S_POD_NAMESPACE and K8S_POD_NAME)", p.ContainerID)
	case p.NetNS == "":
		return Errorf(ReasonInvalidNetNS, "%s: network namespace path is empty (CNI_NETNS)", p.Key())
	}
	return nil
}

// Add implements cniv1.CNIServer.
func (a *adapter) Add(ctx context.Context, in *cniv1.AddRequest) (*cniv1.AddReply, error) {
	start := time.Now()
	req := AddRequest{Pod: Pod{
		ContainerID: in.GetContainerId(), NetNS: in.GetNetns(), IfName: in.GetIfname(),
		Namespace: in.GetPodNamespace(), Name: in.GetPodName(), UID: in.GetPodUid(),
		CNIVersion: in.GetCniVersion(),
	}}
	log := a.log.With("op", "add", "pod", req.Key(), "container", req.ContainerID)
	if err := validatePod(req.Pod, true); err != nil {
		return nil, a.fail(log, "add", start, err)
	}
	res, err := a.h.Add(ctx, req)
	if err != nil {
		return nil, a.fail(log, "add", start, err)
	}
	reply, err := replyOf(res)
	if err != nil {
		return nil, a.fail(log, "add", start, fmt.Errorf("%s: agent result: %w", req.Key(), err))
	}
	log.Info("pod network added", "ip", reply.Ip, "host_iface", reply.HostIface,
		"mtu", reply.Mtu, "block", reply.Block, "duration", time.Since(start))
	a.obs.ObserveCNI("add", time.Since(start), nil)
	return reply, nil
}

// replyOf converts a Handler result, rejecting one the plugin could not
// turn into a CNI result.
func replyOf(r Result) (*cniv1.AddReply, error) {
	if !r.IP.IsValid() || !r.IP.Addr().Is4() || r.IP.Bits() != 32 {
		return nil, fmt.Errorf("pod address %q is not an IPv4 /32", r.IP)
	}
	gw := r.Gateway
	if !gw.IsValid() {
		gw = netip.MustParseAddr(proxyarp.Gateway)
	}
	if r.MTU < 68 || r.MTU > 65535 {
		return nil, fmt.Errorf("pod MTU %d is outside 68-65535", r.MTU)
	}
	reply := &cniv1.AddReply{
		Ip:        r.IP.String(),
		Gateway:   gw.String(),
		Mtu:       int32(r.MTU),
		HostIface: r.HostIface,
	}
	if len(r.MAC) > 0 {
		reply.Mac = r.MAC.String()
	}
	if r.Pool.IsValid() {
		reply.Pool = r.Pool.String()
	}
	if r.Block.IsValid() {
		reply.Block = r.Block.String()
	}
	return reply, nil
}

// Del implements cniv1.CNIServer.
func (a *adapter) Del(ctx context.Context, in *cniv1.DelRequest) (*cniv1.DelReply, error) {
	start := time.Now()
	req := DelRequest{Pod: Pod{
		ContainerID: in.GetContainerId(), NetNS: in.GetNetns(), IfName: in.GetIfname(),
		Namespace: in.GetPodNamespace(), Name: in.GetPodName(), UID: in.GetPodUid(),
		CNIVersion: in.GetCniVersion(),
	}}
	log := a.log.With("op", "del", "pod", req.Key(), "container", req.ContainerID)
	if err := validatePod(req.Pod, false); err != nil {
		return nil, a.fail(log, "del", start, err)
	}
	if err := a.h.Del(ctx, req); err != nil {
		if ReasonOf(err) == ReasonNotFound {
			log.Debug("pod network already gone", "err", err)
			a.obs.ObserveCNI("del", time.Since(start), nil) // the plugin reports success
			return nil, statusOf(err)
		}
		return nil, a.fail(log, "del", start, err)
	}
	log.Info("pod network deleted")
	a.obs.ObserveCNI("del", time.Since(start), nil)
	return &cniv1.DelReply{}, nil
}

// Check implements cniv1.CNIServer.
func (a *adapter) Check(ctx context.Context, in *cniv1.CheckRequest) (*cniv1.CheckReply, error) {
	start := time.Now()
	req := CheckRequest{Pod: Pod{
		ContainerID: in.GetContainerId(), NetNS: in.GetNetns(), IfName: in.GetIfname(),
		Namespace: in.GetPodNamespace(), Name: in.GetPodName(), UID: in.GetPodUid(),
		CNIVersion: in.GetCniVersion(),
	}}
	log := a.log.With("op", "check", "pod", req.Key(), "container", req.ContainerID)
	if err := validatePod(req.Pod, true); err != nil {
		return nil, a.fail(log, "check", start, err)
	}
	if s := in.GetIp(); s != "" {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return nil, a.fail(log, "check", start, Errorf(ReasonInvalidArgument, "%s: address %q from prevResult: %w", req.Key(), s, err))
		}
		req.IP = p
	}
	if err := a.h.Check(ctx, req); err != nil {
		return nil, a.fail(log, "check", start, err)
	}
	log.Debug("pod network checked")
	a.obs.ObserveCNI("check", time.Since(start), nil)
	return &cniv1.CheckReply{}, nil
}

// fail logs a failed command once, tells the observer, and returns its
// status.
func (a *adapter) fail(log *slog.Logger, command string, start time.Time, err error) error {
	a.obs.ObserveCNI(command, time.Since(start), err)
	log.Warn("cni command failed", "reason", ReasonOf(err), "err", err)
	return statusOf(err)
}
