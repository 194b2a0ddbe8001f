// Command wren-cni is Wren's CNI plugin. The container runtime runs it
// for every pod sandbox (ADD, DEL, CHECK, VERSION); it forwards the
// command over gRPC to wren-agent's unix socket, where the agent allocates
// the pod's address and builds its veth, and prints the CNI result.
//
// Install it as /opt/cni/bin/wren-cni with a network configuration such as
// deploy/cni/10-wren.conflist in /etc/cni/net.d; see docs/cni.md.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"
	cniversion "github.com/containernetworking/cni/pkg/version"
)

// version is the plugin's version, set at build time with
// -ldflags "-X main.version=v1.2.3".
var version = "dev"

// supportedVersions are the CNI spec versions of the configurations the
// plugin accepts. CHECK needs 0.4.0 or later (skel refuses it for 0.3.1).
var supportedVersions = []string{"0.3.1", "0.4.0", "1.0.0"}

func main() {
	skel.PluginMainFuncs(
		skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck},
		cniversion.PluginSupports(supportedVersions...),
		"CNI plugin wren-cni "+version,
	)
}
