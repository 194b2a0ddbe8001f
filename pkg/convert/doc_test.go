package convert

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestDocExample: the worked example of docs/migrating.md (the fenced
// blocks under "### Input", "### Output" and "### Report") is what
// Convert writes for that input, so the page cannot drift from the code.
func TestDocExample(t *testing.T) {
	b, err := os.ReadFile("../../docs/migrating.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	block := func(heading string) string {
		t.Helper()
		_, after, ok := strings.Cut(doc, "\n"+heading+"\n")
		if !ok {
			t.Fatalf("no %q in docs/migrating.md", heading)
		}
		_, after, ok = strings.Cut(after, "```")
		if !ok {
			t.Fatalf("no code block under %q", heading)
		}
		_, body, _ := strings.Cut(after, "\n") // the info string
		body, _, ok = strings.Cut(body, "```")
		if !ok {
			t.Fatalf("code block under %q is not closed", heading)
		}
		return body
	}
	res, err := Convert([]byte(block("### Input")))
	if err != nil {
		t.Fatal(err)
	}
	out, err := res.YAML()
	if err != nil {
		t.Fatal(err)
	}
	var report bytes.Buffer
	if err := res.Report(&report); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(block("### Output"), string(out)); diff != "" {
		t.Errorf("docs/migrating.md output (-doc +Convert):\n%s", diff)
	}
	if diff := cmp.Diff(block("### Report"), report.String()); diff != "" {
		t.Errorf("docs/migrating.md report (-doc +Convert):\n%s", diff)
	}
	if len(res.NotConverted) != 0 {
		t.Errorf("the example says exit status 0, but %v are not converted", res.NotConverted)
	}
}
