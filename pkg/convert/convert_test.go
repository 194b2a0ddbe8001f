package convert

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/wren-net/wren/pkg/cluster/v1alpha1"
)

// Test addresses: nodes and peers in 198.18.0.0/15, pools in
// 10.244.0.0/14; Calico's own samples keep their documentation ranges
// (198.51.100.0/24, 203.0.113.0/24). API objects only.

var update = flag.Bool("update", false, "rewrite the golden files of testdata")

// TestGolden converts each testdata/<case>/in.yaml, Calico manifests
// written from Calico's documented API (its guides and reference
// samples, calicoctl and kubectl list output), and compares the YAML with
// out.yaml, the report with report.txt, and whether an object failed with
// the case's expectation.
func TestGolden(t *testing.T) {
	cases := map[string]struct{ notConverted []string }{
		"route-reflectors":  {},
		"tor-peers":         {},
		"calicoctl-list":    {},
		"bgp-configuration": {},
		"ipam":              {},
		"not-converted":     {notConverted: []string{"IPPool/default-ipv6-ippool", "IPPool/loadbalancer-ipv4", "BGPPeer/v6-tor", "FelixConfiguration/default"}},
	}
	dirs, err := filepath.Glob("testdata/*/in.yaml")
	if err != nil || len(dirs) != len(cases) {
		t.Fatalf("testdata holds %d cases (%v), the table %d", len(dirs), err, len(cases))
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join("testdata", name)
			in, err := os.ReadFile(filepath.Join(dir, "in.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			res, err := Convert(in)
			if err != nil {
				t.Fatalf("Convert: %v", err)
			}
			out, err := res.YAML()
			if err != nil {
				t.Fatal(err)
			}
			var report bytes.Buffer
			if err := res.Report(&report); err != nil {
				t.Fatal(err)
			}
			golden(t, filepath.Join(dir, "out.yaml"), out)
			golden(t, filepath.Join(dir, "report.txt"), report.Bytes())
			if diff := cmp.Diff(tc.notConverted, res.NotConverted); diff != "" {
				t.Errorf("not converted (-want +got):\n%s", diff)
			}
		})
	}
}

func golden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test -run TestGolden -update writes it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s (-want +got):\n%s", path, diff)
	}
}

// TestASNumber: plain numbers, numeric strings and asdot (RFC 5396) are
// read; 0, out-of-range and malformed values fail the object.
func TestASNumber(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64 // 0: the object fails
		note Level
	}{
		{"asNumber: 64512", 64512, ""},
		{"asNumber: 4294967295", 4294967295, ""},
		{`asNumber: "65001"`, 65001, ""},
		{`asNumber: "1.10"`, 65546, Changed},
		{`asNumber: "65535.65535"`, 4294967295, Changed},
		{`asNumber: "0.1"`, 1, Changed},
		{"asNumber: 0", 0, Failed},
		{"asNumber: 4294967296", 0, Failed},
		{`asNumber: "0.0"`, 0, Failed},
		{`asNumber: "65536.1"`, 0, Failed},
		{`asNumber: "1.2.3"`, 0, Failed},
		{"asNumber: -1", 0, Failed},
		{"asNumber: 1.5", 0, Failed},
	} {
		in := "apiVersion: projectcalico.org/v3\nkind: BGPConfiguration\nmetadata: {name: default}\nspec:\n  " + tc.in + "\n"
		res, err := Convert([]byte(in))
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		var got int64
		if len(res.Objects) == 1 {
			if as := res.Objects[0].(*v1alpha1.BGPConfiguration).Spec.ASNumber; as != nil {
				got = int64(*as)
			}
		}
		var note Level
		if len(res.Findings) > 0 {
			note = res.Findings[0].Level
		}
		if got != tc.want || note != tc.note || (tc.want == 0) != (len(res.NotConverted) == 1) {
			t.Errorf("%s: AS %d, finding %q, not converted %v; want AS %d, finding %q", tc.in, got, note, res.NotConverted, tc.want, tc.note)
		}
	}
}

// TestNotYAML: input that is not YAML is an error, not a finding.
func TestNotYAML(t *testing.T) {
	for _, in := range []string{"kind: [IPPool\n", "- just\n- a list\n"} {
		if _, err := Convert([]byte(in)); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
	res, err := Convert([]byte("# only a comment\n---\n---\n"))
	if err != nil || res.In != 0 || len(res.Objects) != 0 {
		t.Errorf("comments only: %+v, %v; want nothing", res, err)
	}
}

// TestEveryFieldAccounted: every field of a Calico object is either in
// the output or named in a finding; a field added to Calico after this
// code is reported too.
func TestEveryFieldAccounted(t *testing.T) {
	in := `apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata: {name: p}
spec:
  peerIP: 198.18.1.1
  asNumber: 65001
  someFutureField: {x: 1}
  password: {secretKeyRef: {name: s, key: k}, futureSource: {}}
`
	res, err := Convert([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	var fields []string
	for _, f := range res.Findings {
		fields = append(fields, f.Field+" "+string(f.Level))
	}
	want := []string{"spec.password.futureSource dropped", "spec.someFutureField dropped"}
	if diff := cmp.Diff(want, fields); diff != "" {
		t.Errorf("findings (-want +got):\n%s", diff)
	}
	if !strings.Contains(res.Findings[1].Message, "Wren's BGPPeer has no such field") {
		t.Errorf("message %q", res.Findings[1].Message)
	}
}

// FuzzConvert: no input makes Convert panic, every object read is
// written, skipped or named as not converted, and the output renders.
func FuzzConvert(f *testing.F) {
	ins, _ := filepath.Glob("testdata/*/in.yaml")
	for _, in := range ins {
		b, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		res, err := Convert(in)
		if err != nil {
			return
		}
		if _, err := res.YAML(); err != nil {
			t.Fatalf("YAML: %v", err)
		}
		if n := len(res.Objects) + len(res.NotConverted); n > res.In {
			t.Fatalf("%d objects written or not converted, %d read", n, res.In)
		}
		if err := res.Report(io.Discard); err != nil {
			t.Fatal(err)
		}
	})
}
