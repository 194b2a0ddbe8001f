package cniv1

// DefaultSocket is the unix socket on which wren-agent serves this API
// (and its debug API), mode 0600 so only root on the node can call it.
// The CNI configuration's "agent_socket" overrides it for the plugin and
// the agent's flag for the agent.
const DefaultSocket = "/var/run/wren/wren.sock"
