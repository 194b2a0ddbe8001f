//go:build linux

// Command lab runs the local lab, a real Kubernetes cluster in network
// namespaces with Wren installed by kubectl apply -k (internal/lab,
// docs/lab.md):
//
//	go run ./hack/lab up [--mode bgp|vxlan|tor]   (make lab MODE=...)
//	go run ./hack/lab check                       (ping matrix, routes, pods)
//	go run ./hack/lab down                        (make lab-down)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/wren-net/wren/internal/lab"
)

func main() { os.Exit(run()) }

func run() int {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" {
		fmt.Fprintln(os.Stderr, "usage: lab up [--mode bgp|vxlan|tor] [--vxlan-mode CrossSubnet|Always] | check | down")
		return 2
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet("lab "+cmd, flag.ContinueOnError)
	var cfg lab.Config
	fs.StringVar(&cfg.Repo, "repo", ".", "repository root")
	fs.StringVar(&cfg.State, "state", "/var/tmp/wren-lab", "state directory")
	fs.StringVar(&cfg.Mode, "mode", envOr("LAB_MODE", lab.ModeBGP), "bgp | vxlan | tor")
	fs.StringVar(&cfg.VXLANMode, "vxlan-mode", envOr("LAB_VXLAN_MODE", "CrossSubnet"), "vxlan mode's pool: CrossSubnet | Always")
	if err := fs.Parse(os.Args[2:]); err != nil {
		return 2
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "lab: run as root (network and mount namespaces): sudo make lab")
		return 1
	}
	repo, err := filepath.Abs(cfg.Repo)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		return 1
	}
	cfg.Repo = repo
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	switch cmd {
	case "up":
		err = up(ctx, cfg)
	case "check":
		var l *lab.Lab
		if l, err = lab.Open(cfg.Repo, cfg.State, "", os.Stderr); err == nil {
			err = l.Check(ctx, os.Stdout)
		}
	case "down":
		var l *lab.Lab
		if l, err = lab.Open(cfg.Repo, cfg.State, "", os.Stderr); err == nil {
			err = l.Down(context.Background())
		}
	default:
		err = fmt.Errorf("unknown command %q (up, check, down)", cmd)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lab: error:", err)
		return 1
	}
	return 0
}

func up(ctx context.Context, cfg lab.Config) error {
	if b, err := os.ReadFile(filepath.Join(cfg.State, "stage")); err == nil && strings.TrimSpace(string(b)) == "complete" {
		fmt.Fprintln(os.Stderr, "lab: the lab is already up; checking it (make lab-down removes it)")
		l, err := lab.Open(cfg.Repo, cfg.State, "", os.Stderr)
		if err != nil {
			return err
		}
		return l.Check(ctx, os.Stdout)
	}
	out, err := exec.CommandContext(ctx, filepath.Join(cfg.Repo, "hack/kube/build.sh")).Output()
	if err != nil {
		return fmt.Errorf("hack/kube/build.sh: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	cfg.Assets = lines[len(lines)-1]
	l, err := lab.New(cfg)
	if err != nil {
		return err
	}
	if err := l.Up(ctx); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			err = fmt.Errorf("%w: %s", err, ee.Stderr)
		}
		return fmt.Errorf("%w\n\nmake lab did not finish. What is up stays up for debugging:\n  logs: %s/logs/*.log, hack/lab/kubectl -n wren-system logs ds/wren-agent\n  remove it with: make lab-down", err, cfg.State)
	}
	return l.Check(ctx, os.Stdout)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
