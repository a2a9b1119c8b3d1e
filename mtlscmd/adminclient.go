package mtlscmd

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

// addAdminFlags adds the flags that find the admin endpoint, as
// `caddy reload` has them.
func addAdminFlags(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.String("address", "", "the admin endpoint's address, e.g. localhost:2019 or unix//run/caddy/admin.sock (default: the admin address of --config, else localhost:2019)")
	f.StringP("config", "c", "", "a config file whose admin address to use, as caddy reload does")
	f.StringP("adapter", "a", "", "the config adapter of --config")
}

// adminClient makes requests to Caddy's admin endpoint, with Caddy's own
// client (the one of `caddy reload`), so that unix sockets work alike.
type adminClient struct {
	addr string
}

// newAdminClient finds the admin endpoint as `caddy reload` does: --address,
// else the admin address of the --config file, else Caddy's default.
func newAdminClient(cmd *cobra.Command) (*adminClient, error) {
	f := cmd.Flags()
	address, _ := f.GetString("address")
	config, _ := f.GetString("config")
	adapter, _ := f.GetString("adapter")
	if adapter != "" && config == "" {
		return nil, usagef("--adapter goes with --config")
	}
	if address != "" {
		// As AdminAPIRequest checks it.
		if parsed, err := caddy.ParseNetworkAddress(address); err != nil {
			return nil, usagef("--address %q: %v", address, err)
		} else if parsed.PortRangeSize() > 1 {
			return nil, usagef("--address %q: a port range", address)
		}
	}
	addr, err := caddycmd.DetermineAdminAPIAddress(address, nil, config, adapter)
	if err != nil {
		return nil, fmt.Errorf("finding the admin endpoint's address in %s: %w", config, err)
	}
	return &adminClient{addr: addr}, nil
}

// keepsKeyLocal reports, as an error, an admin endpoint that a private key
// would reach in clear over a network: the admin API is plain HTTP (as
// `caddy reload` speaks it), so only a unix socket or a loopback address
// keeps a key on the machine. A host name other than localhost may resolve
// anywhere.
func (c *adminClient) keepsKeyLocal() error {
	addr, err := caddy.ParseNetworkAddress(c.addr)
	if err != nil {
		return fmt.Errorf("admin address %q: %w", c.addr, err)
	}
	if addr.IsUnixNetwork() || addr.IsFdNetwork() {
		return nil
	}
	// An empty or unspecified host (":2019", "0.0.0.0:2019", as a
	// container's admin listens) is dialed on this machine.
	if addr.Host == "" || strings.EqualFold(addr.Host, "localhost") {
		return nil
	}
	if ip, err := netip.ParseAddr(addr.Host); err == nil && (ip.IsLoopback() || ip.IsUnspecified()) {
		return nil
	}
	return fmt.Errorf("the admin endpoint %s is not loopback or a unix socket, and the admin API is plain HTTP: the private key would cross the network in clear; upload on the Caddy host (or through an SSH tunnel to its localhost:2019), or give --send-key-in-clear", c.addr)
}

// apiError is an answer of the admin API with an error status.
type apiError struct {
	Status  int
	Message string // the API's "error", or its body when it is not JSON
}

func (e *apiError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message) }

// maxAnswer bounds an answer read from the admin endpoint.
const maxAnswer = 16 << 20

// call makes a request to the admin API and returns the body of its answer.
// body, if not nil, is sent as JSON. An error status is an *apiError.
func (c *adminClient) call(method, uri string, body any) ([]byte, error) {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(data)
	}
	resp, err := caddycmd.AdminAPIRequest(c.addr, method, uri, nil, rd)
	if err != nil {
		if apiErr, ok := parseAdminError(err); ok {
			return nil, apiErr
		}
		return nil, fmt.Errorf("admin endpoint %s not reachable: %w", c.addr, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, fmt.Errorf("admin endpoint %s: reading the answer: %w", c.addr, err)
	}
	return data, nil
}

// adminErrorRE reads the error that caddycmd.AdminAPIRequest makes of an
// answer with an error status. It has no typed error for it, so its text is
// read here, in this one place; TestAdminAPIRequestErrorText fails if a new
// Caddy words it otherwise.
var adminErrorRE = regexp.MustCompile(`^caddy responded with error: HTTP (\d{3}): ((?s).*)$`)

// parseAdminError returns the API error of an error of AdminAPIRequest, if
// it is one.
func parseAdminError(err error) (*apiError, bool) {
	m := adminErrorRE.FindStringSubmatch(err.Error())
	if m == nil {
		return nil, false
	}
	status, _ := strconv.Atoi(m[1])
	msg := strings.TrimSpace(m[2])
	var body struct {
		Error string `json:"error"`
	}
	if json.Unmarshal([]byte(msg), &body) == nil && body.Error != "" {
		msg = body.Error
	}
	return &apiError{Status: status, Message: msg}, true
}
