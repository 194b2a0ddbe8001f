//go:build linux

package lab

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
)

// Pod is a workload pod as the API reports it.
type Pod struct {
	Name, Node, IP string
}

// WorkloadPods returns the Running pods of the Deployment web, by name.
func (l *Lab) WorkloadPods(ctx context.Context) ([]Pod, error) {
	out, err := l.Kubectl(ctx, "-n", "default", "get", "pods", "-l", "app=web", "--field-selector", "status.phase=Running",
		"-o", `jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.podIP}{"\n"}{end}`)
	if err != nil {
		return nil, err
	}
	var pods []Pod
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 3 {
			pods = append(pods, Pod{Name: f[0], Node: f[1], IP: f[2]})
		}
	}
	sort.Slice(pods, func(i, j int) bool {
		if pods[i].Node != pods[j].Node {
			return pods[i].Node < pods[j].Node
		}
		return pods[i].Name < pods[j].Name
	})
	return pods, nil
}

// PingMatrix pings every pod from every other pod once (kubectl exec
// into the source pod, busybox ping -c1 -W1) and returns, per source,
// the targets that answered.
func (l *Lab) PingMatrix(ctx context.Context, pods []Pod) (map[string]map[string]bool, error) {
	res := map[string]map[string]bool{}
	for _, src := range pods {
		var script strings.Builder
		for _, dst := range pods {
			if dst.Name != src.Name {
				fmt.Fprintf(&script, "if ping -c1 -W1 %s >/dev/null 2>&1; then echo %s ok; else echo %s no; fi\n", dst.IP, dst.Name, dst.Name)
			}
		}
		out, err := l.Kubectl(ctx, "-n", "default", "exec", src.Name, "--", "sh", "-c", script.String())
		if err != nil {
			return nil, fmt.Errorf("exec in %s: %w", src.Name, err)
		}
		res[src.Name] = map[string]bool{}
		for _, line := range strings.Split(out, "\n") {
			if f := strings.Fields(line); len(f) == 2 {
				res[src.Name][f[0]] = f[1] == "ok"
			}
		}
	}
	return res, nil
}

// AllReachable pings all pairs and fails naming the first pair that does
// not answer.
func (l *Lab) AllReachable(ctx context.Context) error {
	pods, err := l.WorkloadPods(ctx)
	if err != nil {
		return err
	}
	m, err := l.PingMatrix(ctx, pods)
	if err != nil {
		return err
	}
	return firstUnanswered(pods, m)
}

// firstUnanswered names the first pair of the matrix m that did not
// answer.
func firstUnanswered(pods []Pod, m map[string]map[string]bool) error {
	for _, s := range pods {
		for _, d := range pods {
			if s.Name != d.Name && !m[s.Name][d.Name] {
				return fmt.Errorf("%s (%s) does not reach %s (%s, %s)", s.Name, s.Node, d.Name, d.Node, d.IP)
			}
		}
	}
	return nil
}

// Check prints what a user wants to see of the lab: the pods, the ping
// matrix, each node's routes, (tor mode) the router's BGP view,
// kubectl get pods -A -o wide and how to use kubectl. It fails if a ping
// fails.
func (l *Lab) Check(ctx context.Context, w io.Writer) error {
	pods, err := l.WorkloadPods(ctx)
	if err != nil {
		return err
	}
	// BGP may need a moment after the last pod to carry its block.
	var m map[string]map[string]bool
	_ = l.poll(ctx, 30*time.Second, "every pod reaching every other pod", "", func() error {
		var err error
		if m, err = l.PingMatrix(ctx, pods); err != nil {
			return err
		}
		return firstUnanswered(pods, m)
	})
	short := func(p Pod) string { return p.Name[strings.LastIndex(p.Name, "-")+1:] }
	fmt.Fprintf(w, "\nWorkload pods (Deployment web):\n")
	for _, p := range pods {
		fmt.Fprintf(w, "  %-24s %-7s %s\n", p.Name, p.Node, p.IP)
	}
	fmt.Fprintf(w, "\nPing matrix (row pings column, by pod name suffix; ✓ reply, ✗ none, · self):\n%-14s", "")
	for _, p := range pods {
		fmt.Fprintf(w, "%-7s", short(p))
	}
	fmt.Fprintln(w)
	fails, total := 0, 0
	for _, s := range pods {
		fmt.Fprintf(w, "%-6s %-7s", short(s), s.Node)
		for _, d := range pods {
			mark := "·"
			if s.Name != d.Name {
				total++
				mark = "✓"
				if m == nil || !m[s.Name][d.Name] {
					mark = "✗"
					fails++
				}
			}
			fmt.Fprintf(w, "%s      ", mark)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "%d of %d pings answered\n", total-fails, total)
	for _, n := range l.Nodes() {
		fmt.Fprintf(w, "\nip -n %s route\n", l.NodeNS(n))
		out, _ := run(ctx, "ip", "-n", l.NodeNS(n), "route")
		fmt.Fprint(w, indent(out))
	}
	if l.cfg.Mode == ModeTOR {
		fmt.Fprintf(w, "\nip netns exec %s birdc show route\n", l.RouterNS())
		out, _ := run(ctx, "birdc", "-s", l.path("bird.ctl"), "show", "route")
		fmt.Fprint(w, indent(out))
	}
	fmt.Fprintf(w, "\nkubectl get pods -A -o wide\n")
	out, _ := l.Kubectl(ctx, "get", "pods", "-A", "-o", "wide")
	fmt.Fprint(w, indent(out+"\n"))
	fmt.Fprintf(w, "\nThe API server is reachable only inside the lab's namespaces:\n  %s get nodes\n  (or: hack/lab/kubectl get nodes)\nRemove the lab: make lab-down\n",
		strings.Join(l.KubectlArgv(), " "))
	if fails > 0 {
		return fmt.Errorf("%d of %d pings failed (agent logs: hack/lab/kubectl -n wren-system logs ds/wren-agent)", fails, total)
	}
	return nil
}

func indent(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("  " + line + "\n")
	}
	return b.String()
}
