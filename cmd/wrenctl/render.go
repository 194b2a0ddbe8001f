package main

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// printMessage writes m as JSON (protojson: the field names of the
// .proto in lowerCamelCase, every field present, timestamps in RFC 3339)
// or as the same document in YAML.
func printMessage(w io.Writer, format string, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return err
	}
	return writeDoc(w, format, b)
}

// writeDoc writes the JSON document b as is, or as YAML for format
// "yaml".
func writeDoc(w io.Writer, format string, b []byte) error {
	if format == "yaml" {
		y, err := yaml.JSONToYAML(b)
		if err != nil {
			return err
		}
		_, err = w.Write(y)
		return err
	}
	_, err := fmt.Fprintf(w, "%s\n", b)
	return err
}

// table is a bordered table like calicoctl's.
type table struct {
	head []string
	rows [][]string
	// right marks columns aligned right (numbers).
	right map[int]bool
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) write(w io.Writer) {
	width := make([]int, len(t.head))
	for i, h := range t.head {
		width[i] = utf8.RuneCountInString(h)
	}
	for _, r := range t.rows {
		for i, c := range r {
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	rule := func() {
		for _, n := range width {
			b.WriteString("+" + strings.Repeat("-", n+2))
		}
		b.WriteString("+\n")
	}
	line := func(cells []string, center bool) {
		for i, c := range cells {
			pad := width[i] - utf8.RuneCountInString(c)
			switch {
			case center:
				l := pad / 2
				fmt.Fprintf(&b, "| %s%s%s ", strings.Repeat(" ", l), c, strings.Repeat(" ", pad-l))
			case t.right[i]:
				fmt.Fprintf(&b, "| %s%s ", strings.Repeat(" ", pad), c)
			default:
				fmt.Fprintf(&b, "| %s%s ", c, strings.Repeat(" ", pad))
			}
		}
		b.WriteString("|\n")
	}
	rule()
	line(t.head, true)
	rule()
	for _, r := range t.rows {
		line(r, false)
	}
	rule()
	io.WriteString(w, b.String())
}
