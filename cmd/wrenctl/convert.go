package main

import (
	"fmt"
	"io"
	"os"

	"github.com/wren-net/wren/pkg/convert"
)

// runConvert is "wrenctl convert [FILE|-]": Calico YAML in (the file, or
// stdin for "-" or no argument), Wren YAML on stdout, the report on
// stderr. It needs no agent. Exit status: 0 when every object was
// converted (fields it could not carry over are in the report), 1 when
// the input is not YAML, cannot be read, or holds an object that could
// not be converted (the others are still written), 2 for bad usage.
// See docs/migrating.md.
func runConvert(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) > 1 {
		fmt.Fprintf(stderr, "wrenctl convert: want one file (or - for stdin), got %q\n", args)
		return 2
	}
	var (
		data []byte
		err  error
		from = "stdin"
	)
	if len(args) == 0 || args[0] == "-" {
		data, err = io.ReadAll(stdin)
	} else {
		from = args[0]
		data, err = os.ReadFile(args[0])
	}
	if err != nil {
		fmt.Fprintf(stderr, "wrenctl convert: read %s: %v\n", from, err)
		return 1
	}
	res, err := convert.Convert(data)
	if err != nil {
		fmt.Fprintf(stderr, "wrenctl convert: %s: %v\n", from, err)
		return 1
	}
	out, err := res.YAML()
	if err != nil {
		fmt.Fprintf(stderr, "wrenctl convert: %v\n", err)
		return 1
	}
	if _, err := stdout.Write(out); err != nil {
		fmt.Fprintf(stderr, "wrenctl convert: write: %v\n", err)
		return 1
	}
	if err := res.Report(stderr); err != nil {
		return 1
	}
	if len(res.NotConverted) > 0 {
		return 1
	}
	return 0
}
