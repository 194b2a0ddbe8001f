package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/wren-net/wren/pkg/cniinstall"
)

// installCNI is "wren-agent install-cni": the DaemonSet's init container
// copies wren-cni, its conflist and the rt_protos entry from the image
// onto the host directories mounted under /host (pkg/cniinstall).
func installCNI(args []string) int {
	var c cniinstall.Config
	fs := flag.NewFlagSet("wren-agent install-cni", flag.ContinueOnError)
	fs.StringVar(&c.BinDir, "bin-dir", "/host/opt/cni/bin", "the host's CNI plugin directory, as mounted")
	fs.StringVar(&c.ConfDir, "conf-dir", "/host/etc/cni/net.d", "the host's CNI configuration directory, as mounted")
	fs.StringVar(&c.RTProtosDir, "rt-protos-dir", "/host/etc/iproute2/rt_protos.d", `the host's iproute2 protocol names, as mounted ("" skips it)`)
	fs.StringVar(&c.CNIBinary, "cni-binary", cniinstall.ImageCNIBinary, "the wren-cni binary to install")
	fs.StringVar(&c.Conflist, "conflist", cniinstall.ImageConflist, "the CNI configuration to install")
	fs.StringVar(&c.RTProtos, "rt-protos", cniinstall.ImageRTProtos, "the rt_protos.d file to install")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	c.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil)).With("component", "install-cni")
	r, err := cniinstall.Install(c)
	if err != nil {
		c.Logger.Error("install-cni failed", "err", err)
		return 1
	}
	fmt.Printf("wren %s: install-cni: %d files written, %d unchanged\n", version, len(r.Written), len(r.Unchanged))
	return 0
}
