//go:build linux

package lab

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var lookPath = exec.LookPath

// run runs a command and returns its combined output; an error carries
// the output.
func run(ctx context.Context, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// netnsPath is where ip netns keeps a named namespace.
func netnsPath(name string) string { return filepath.Join("/run/netns", name) }

// inNetns prefixes a command so it runs in a lab network namespace.
func inNetns(ns string, argv ...string) []string {
	return append([]string{"nsenter", "--net=" + netnsPath(ns), "--"}, argv...)
}

// InNode prefixes a command so it runs in node n's network, mount and
// UTS namespaces, where its kubelet and containerd run (and so sees the
// node's /opt/cni/bin, /etc/cni/net.d, /run/netns, /run/wren).
func (l *Lab) InNode(n int, argv ...string) []string {
	return append([]string{"nsenter", "--net=" + netnsPath(l.NodeNS(n)),
		"--mount=" + l.mountNSFile(n), "--uts=" + l.utsNSFile(n), "--"}, argv...)
}

// start runs argv detached (own session, so a Ctrl-C of make does not
// reach it), logging to logs/<name>.log, its pid in pids/<name>.pid.
// nsenter execs the program, so the pid is the program's.
func (l *Lab) start(name string, argv []string) error {
	logf, err := os.OpenFile(l.path("logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	if err := os.WriteFile(l.path("pids", name+".pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		return err
	}
	// Reap it when it exits while this process lives (tests); after
	// make lab exits, init does.
	l.waits.Add(1)
	go func() {
		defer l.waits.Done()
		_ = cmd.Wait()
	}()
	return nil
}

// pid returns the recorded pid of a lab process, if it is still that
// process: alive and with the state directory in its command line (so a
// recycled pid is never taken for ours).
func (l *Lab) pid(name string) (int, bool) {
	b, err := os.ReadFile(l.path("pids", name+".pid"))
	if err != nil {
		return 0, false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return 0, false
	}
	return pid, l.isOurs(pid)
}

// isOurs reports whether pid is alive and names the state directory in
// its command line. A live process whose command line reads empty is in
// the middle of execve (nsenter becoming the daemon) and counts as ours.
func (l *Lab) isOurs(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// The state is the field after the parenthesised command name.
	if i := bytes.LastIndexByte(stat, ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X' {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	return len(b) == 0 || bytes.Contains(b, []byte(l.cfg.State+"/"))
}

// stop sends SIGTERM to a lab process and waits up to grace for it to
// exit, then SIGKILL. It returns whether it was running.
func (l *Lab) stop(name string, grace time.Duration) bool {
	pid, ok := l.pid(name)
	if !ok {
		return false
	}
	_ = syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(grace)
	for l.isOurs(pid) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if l.isOurs(pid) {
		l.logf("%s (pid %d) did not exit within %s of SIGTERM: SIGKILL", name, pid, grace)
		_ = syscall.Kill(pid, syscall.SIGKILL)
		for i := 0; i < 100 && l.isOurs(pid); i++ {
			time.Sleep(50 * time.Millisecond)
		}
	}
	return true
}

// poll calls cond every interval until it returns nil or the deadline
// passes, printing progress every 10 s. If proc names a lab process that
// exits meanwhile, it fails at once with a pointer to its log.
func (l *Lab) poll(ctx context.Context, deadline time.Duration, what, proc string, cond func() error) error {
	start := time.Now()
	next := 10 * time.Second
	var err error
	for {
		if err = cond(); err == nil {
			return nil
		}
		if proc != "" {
			if _, ok := l.pid(proc); !ok {
				return fmt.Errorf("%s: %s exited (log: %s): %w", what, proc, l.path("logs", proc+".log"), err)
			}
		}
		el := time.Since(start)
		if el >= deadline {
			return fmt.Errorf("%s: not after %s: %w", what, deadline, err)
		}
		if el >= next {
			l.logf("    %s: still waiting (%s of %s): %s", what, el.Round(time.Second), deadline, lastLine(err))
			next += 10 * time.Second
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// lastLine is the last non-empty line of err's message, at most 200
// bytes: progress lines show what a command said, not its command line.
func lastLine(err error) string {
	lines := strings.Split(strings.TrimSpace(err.Error()), "\n")
	s := strings.TrimSpace(lines[len(lines)-1])
	if i := strings.LastIndex(s, ": "); len(lines) == 1 && i >= 0 && i+2 < len(s) {
		s = s[i+2:]
	}
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
