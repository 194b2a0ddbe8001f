package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	debugv1 "github.com/wren-net/wren/api/debug/v1"
)

// client is a connection to the agent's debug API.
type client struct {
	conn   *grpc.ClientConn
	debug  debugv1.DebugClient
	socket string
}

// dial checks that the socket can be reached (so the error names the
// socket and says what to do) and opens a gRPC connection over it.
func dial(socket string) (*client, error) {
	c, err := net.DialTimeout("unix", socket, 2*time.Second)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("no agent socket at %s: is wren-agent running on this node? (inside the cluster: kubectl exec -n wren-system <wren-agent pod> -- wrenctl …; elsewhere: --socket)", socket)
	case errors.Is(err, os.ErrPermission) || errors.Is(err, syscall.EACCES):
		return nil, fmt.Errorf("permission denied on %s: the agent's socket is root-only (mode 0600); run wrenctl as root", socket)
	case errors.Is(err, syscall.ECONNREFUSED):
		return nil, fmt.Errorf("nothing listens on %s: wren-agent is not running (a stale socket from an earlier run)", socket)
	case err != nil:
		return nil, fmt.Errorf("connect to the agent at %s: %w", socket, err)
	}
	c.Close()
	conn, err := grpc.NewClient("unix://"+socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20)))
	if err != nil {
		return nil, fmt.Errorf("connect to the agent at %s: %w", socket, err)
	}
	return &client{conn: conn, debug: debugv1.NewDebugClient(conn), socket: socket}, nil
}

func (c *client) close() { c.conn.Close() }

// explain turns a gRPC error into one line for the operator.
func (c *client) explain(err error) error {
	s, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch s.Code() {
	case codes.Unimplemented:
		return fmt.Errorf("the agent at %s does not serve this (it is older than wrenctl %s): %s", c.socket, version, s.Message())
	case codes.Unavailable, codes.DeadlineExceeded:
		return fmt.Errorf("the agent at %s did not answer: %s", c.socket, s.Message())
	}
	return errors.New(s.Message())
}

func (c *client) status(ctx context.Context) (*debugv1.StatusReply, error) {
	r, err := c.debug.Status(ctx, &debugv1.StatusRequest{})
	if err != nil {
		return nil, c.explain(err)
	}
	sortPeers(r.Peers)
	return r, nil
}
