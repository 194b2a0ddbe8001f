// Command image writes Wren's container images (wren, pause, busybox) as
// OCI image layout archives, with no container engine:
//
//	go run ./hack/image [--out bin/images] [--version V]
//
// Import one on a node with `ctr -n k8s.io images import bin/images/wren.tar`;
// containerd keeps the digest and names the image by the printed ref.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"

	"github.com/wren-net/wren/internal/image"
)

func main() { os.Exit(run()) }

func run() int {
	o := image.Options{}
	flag.StringVar(&o.Repo, "repo", ".", "repository root (has go.mod)")
	flag.StringVar(&o.OutDir, "out", "bin/images", "directory for the archives and "+image.ListFile)
	flag.StringVar(&o.Version, "version", "", "version for the binaries and labels (default: git describe --always --dirty)")
	flag.StringVar(&o.Registry, "registry", image.DefaultRegistry, "name prefix of the refs")
	flag.StringVar(&o.Busybox, "busybox", image.DefaultBusybox, "static busybox binary (apt-get install busybox-static)")
	only := flag.String("images", strings.Join(image.Names, ","), "comma-separated images to build")
	verbose := flag.Bool("v", false, "debug logging")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "image: unexpected arguments %q\n", flag.Args())
		return 2
	}
	o.Images = strings.Split(*only, ",")
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	imgs, err := image.Build(ctx, o)
	if err != nil {
		o.Logger.Error("build images", "err", err)
		return 1
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tREF\tDIGEST\tPATH\tSIZE")
	for _, im := range imgs {
		size := "?"
		if fi, err := os.Stat(im.Path); err == nil {
			size = fmt.Sprintf("%.1fMiB", float64(fi.Size())/(1<<20))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", im.Name, im.Ref, im.Digest, im.Path, size)
	}
	if err := tw.Flush(); err != nil {
		o.Logger.Error("write output", "err", err)
		return 1
	}
	return 0
}
