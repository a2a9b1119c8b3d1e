package mtlscmd

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/spf13/cobra"

	"github.com/caddy-mtls/caddy-mtls/store"
)

// The subcommands of `caddy mtls clients` and `caddy mtls keypairs` are the
// admin API's routes (admin.api.mtls), for people and scripts: a table by
// default, the API's JSON with --json.

func clientsCommand() *cobra.Command {
	cmd := groupCommand(&cobra.Command{
		Use:   "clients",
		Short: "List, add or remove the trusted clients, over the admin API",
		Long: `
Manages the trusted clients stored in Caddy's storage (those that
client_cert_auth's clients_from_storage trusts), through the admin API of a
running Caddy (admin.api.mtls): --address, or the admin address of --config,
else localhost:2019.
`,
	})
	addAdminFlags(cmd)
	list := &cobra.Command{
		Use:   "list [--group <group>] [--json]",
		Short: "List the trusted clients: alias, tier, subject, fingerprint, not after, groups, certificates",
		Long: `
Lists the trusted clients, or with --group those of the group. Subject,
fingerprint and not after are those of a client's newest certificate;
CERTS counts its certificates (more than one while it rotates: --json
lists them).
`,
		Args: positional(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			group, _ := cmd.Flags().GetString("group")
			if group != "" {
				if err := store.CheckName(group); err != nil {
					return &usageError{fmt.Errorf("--group: %w", err)}
				}
			}
			return listClients(cmd, group)
		}),
	}
	list.Flags().String("group", "", "list only the clients of this group")
	add := &cobra.Command{
		Use:   "add <alias> <cert.pem> [--tier <tier>] [--group <group>]... [--json]",
		Short: "Trust a client certificate under an alias (replacing the alias's certificates)",
		Long: `
Stores the client certificate of the PEM file ("-" for standard input) as
the trusted client <alias>, with its tier ({http.auth.user.tier}) and its
groups (clients_from_storage { group <name> } trusts only the clients of
its groups). An existing <alias> is replaced, certificates, tier and groups.
A certificate stored under another alias is refused (HTTP 409), as is one
that could never be accepted (HTTP 400). To give a client a new certificate
without downtime, use rotate.
`,
		Args: positional(cobra.ExactArgs(2)),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			alias, cert, err := aliasAndCertificate(cmd, args)
			if err != nil {
				return err
			}
			tier, _ := cmd.Flags().GetString("tier")
			groups, _ := cmd.Flags().GetStringArray("group")
			if _, err := store.CheckGroups(groups); err != nil {
				return &usageError{fmt.Errorf("--group: %w", err)}
			}
			if groups == nil {
				groups = []string{}
			}
			return changeCommand(cmd, http.MethodPut, "/mtls/clients/"+url.PathEscape(alias),
				map[string]any{"certificate": cert, "tier": tier, "groups": groups}, writeClients)
		}),
	}
	add.Flags().String("tier", "", "the client's tier")
	add.Flags().StringArray("group", nil, "a group of the client (repeat for more)")
	rotate := &cobra.Command{
		Use:   "rotate <alias> <new.pem> [--json]",
		Short: "Add a certificate to a client, which then accepts both (rotation without downtime)",
		Long: `
Adds the certificate of the PEM file ("-" for standard input) to the trusted
client <alias>: its old and new certificates are both accepted, with its
alias, tier and groups, until the old one is removed with remove-cert (the
fingerprints are in list --json). A certificate stored under another alias
is refused (HTTP 409).
`,
		Args: positional(cobra.ExactArgs(2)),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			alias, cert, err := aliasAndCertificate(cmd, args)
			if err != nil {
				return err
			}
			return changeCommand(cmd, http.MethodPost, "/mtls/clients/"+url.PathEscape(alias)+"/certificates",
				map[string]string{"certificate": cert}, writeClients)
		}),
	}
	removeCert := &cobra.Command{
		Use:   "remove-cert <alias> <fingerprint> [--json]",
		Short: "Remove one certificate of a client (the old one, after rotate)",
		Long: `
Removes the certificate with the SHA-256 fingerprint (hex, as list --json
shows it) from the trusted client <alias>. A client's last certificate is
not removed (HTTP 409): remove the client instead.
`,
		Args: positional(cobra.ExactArgs(2)),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			alias := args[0]
			if err := store.CheckName(alias); err != nil {
				return &usageError{err}
			}
			return changeCommand(cmd, http.MethodDelete, "/mtls/clients/"+url.PathEscape(alias)+"/certificates/"+url.PathEscape(args[1]),
				nil, writeClients)
		}),
	}
	remove := &cobra.Command{
		Use:   "remove <alias>",
		Short: "Stop trusting a client",
		Args:  positional(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			return deleteCommand(cmd, "/mtls/clients/", "client", args[0])
		}),
	}
	for _, c := range []*cobra.Command{list, add, rotate, removeCert} {
		c.Flags().Bool("json", false, "print the admin API's JSON answer")
	}
	cmd.AddCommand(list, add, rotate, removeCert, remove)
	return cmd
}

func keyPairsCommand() *cobra.Command {
	cmd := groupCommand(&cobra.Command{
		Use:   "keypairs",
		Short: "List, generate, upload, download or delete the gateway's key pairs, over the admin API",
		Long: `
Manages the gateway's key pairs stored in Caddy's storage (those that
ssl_profiles' tls_client_keypair presents to backends), through the admin
API of a running Caddy (admin.api.mtls): --address, or the admin address of
--config, else localhost:2019. Private keys never leave through the API:
download gives the public certificate.
`,
	})
	addAdminFlags(cmd)
	list := &cobra.Command{
		Use:   "list [--json]",
		Short: "List the key pairs: name, key type, subject, fingerprint, not after",
		Args:  positional(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			return listCommand(cmd, "/mtls/keypairs", writeKeyPairs)
		}),
	}
	generate := &cobra.Command{
		Use:   "generate <name> --cn <common name> [--org <O>] [--ou <OU>] [--country <C>] [--province <ST>] [--locality <L>] [--dns <name>]... [--ip <address>]... [--uri <URI>]... [--email <address>]... [--days <n>] [--key-type p256|p384|rsa2048|rsa3072|rsa4096] [--replace] [--json]",
		Short: "Generate a self-signed key pair in the storage",
		Long: `
Has the running Caddy generate a self-signed client key pair named <name>
and store it; the key never leaves it. The certificate's subject is --cn
with --org, --ou, --country (two letters), --province (or --state) and
--locality; its subject alternative names are --dns, --ip, --uri and
--email, each repeatable. It is for client authentication (extended key
usage clientAuth) and not a CA's. An existing <name> is refused (HTTP 409)
unless --replace is given (the old key is gone then).
`,
		Args: positional(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := store.CheckName(name); err != nil {
				return &usageError{err}
			}
			f := cmd.Flags()
			var req store.GenerateRequest
			req.CommonName, _ = f.GetString("cn")
			if req.CommonName == "" {
				return usagef("--cn is required")
			}
			if err := subjectFromFlags(cmd, &req); err != nil {
				return err
			}
			req.ValidityDays, _ = f.GetInt("days")
			req.KeyType, _ = f.GetString("key-type")
			return changeCommand(cmd, http.MethodPost, keyPairURI(cmd, name), req, writeKeyPairs)
		}),
	}
	generate.Flags().String("cn", "", "subject common name (required)")
	addSubjectFlags(generate)
	generate.Flags().Int("days", 0, "days of validity, 1 to 3650 (default: the API's, 365)")
	generate.Flags().String("key-type", "", "p256 (the API's default), p384, rsa2048, rsa3072 or rsa4096")
	upload := &cobra.Command{
		Use:   "upload <name> <cert.pem|cert.crt> <key.pem> [--replace] [--json]",
		Short: "Store a key pair: a certificate (chain) and its private key",
		Long: `
Stores the certificate (chain) and private key of the files as the key
pair <name>, after the API checks that the key is the certificate's. The
certificate file is PEM or DER (binary, as a .crt file of a Windows tool
often is); the key file is PEM (PKCS#8, PKCS#1 RSA or SEC1 EC) or the same
in DER. An existing <name> is refused (HTTP 409) unless --replace is given.
`,
		Args: positional(cobra.ExactArgs(3)),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := store.CheckName(name); err != nil {
				return &usageError{err}
			}
			cert, err := readInput(cmd, args[1])
			if err != nil {
				return err
			}
			if cert, err = certificateAsPEM(cert); err != nil {
				return &usageError{fmt.Errorf("%s: %w", args[1], err)}
			}
			c, err := newAdminClient(cmd)
			if err != nil {
				return err
			}
			if clear, _ := cmd.Flags().GetBool("send-key-in-clear"); !clear {
				if err := c.keepsKeyLocal(); err != nil {
					return &usageError{err}
				}
			}
			key, err := readInput(cmd, args[2])
			if err != nil {
				return err
			}
			if key, err = keyAsPEM(key); err != nil {
				return &usageError{fmt.Errorf("%s: %w", args[2], err)}
			}
			return changeCommand(cmd, http.MethodPost, keyPairURI(cmd, name),
				map[string]string{"certificate": cert, "private_key": key}, writeKeyPairs)
		}),
	}
	for _, c := range []*cobra.Command{generate, upload} {
		c.Flags().Bool("replace", false, "replace a key pair of that name")
	}
	upload.Flags().Bool("send-key-in-clear", false, "send the private key to an admin endpoint that is neither loopback nor a unix socket (the admin API is plain HTTP)")
	for _, c := range []*cobra.Command{list, generate, upload} {
		c.Flags().Bool("json", false, "print the admin API's JSON answer")
	}
	download := &cobra.Command{
		Use:   "download <name> [--out <file>]",
		Short: "Print (or write to --out) the key pair's public certificate, PEM",
		Args:  positional(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := store.CheckName(name); err != nil {
				return &usageError{err}
			}
			c, err := newAdminClient(cmd)
			if err != nil {
				return err
			}
			pem, err := c.call(http.MethodGet, "/mtls/keypairs/"+url.PathEscape(name)+"/certificate", nil)
			if err != nil {
				return err
			}
			out, _ := cmd.Flags().GetString("out")
			if out == "" {
				_, err = cmd.OutOrStdout().Write(pem)
				return err
			}
			if err := os.WriteFile(out, pem, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s\n", out)
			return nil
		}),
	}
	download.Flags().String("out", "", "write the certificate to this file, not to standard output")
	del := &cobra.Command{
		Use:   "delete <name>",
		Short: "Delete a key pair",
		Args:  positional(cobra.ExactArgs(1)),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			return deleteCommand(cmd, "/mtls/keypairs/", "key pair", args[0])
		}),
	}
	cmd.AddCommand(list, generate, upload, download, del)
	return cmd
}

// keyPairURI is the admin API's URI to store the key pair name, with
// --replace.
func keyPairURI(cmd *cobra.Command, name string) string {
	uri := "/mtls/keypairs/" + url.PathEscape(name)
	if replace, _ := cmd.Flags().GetBool("replace"); replace {
		uri += "?replace=true"
	}
	return uri
}

// listCommand prints the list at uri: the API's JSON with --json, else a
// table that write makes of it.
func listCommand[T any](cmd *cobra.Command, uri string, write func(io.Writer, []T) error) error {
	c, err := newAdminClient(cmd)
	if err != nil {
		return err
	}
	body, err := c.call(http.MethodGet, uri, nil)
	if err != nil {
		return err
	}
	return printAnswer(cmd, body, func(w io.Writer) error {
		var items []T
		if err := json.Unmarshal(body, &items); err != nil {
			return fmt.Errorf("decoding the admin API's answer: %w", err)
		}
		return write(w, items)
	})
}

// clientsPage is how many clients listClients asks for at a time.
const clientsPage = 1000

// listClients prints the stored clients (of group, if not ""), asking the
// admin API for a page at a time, so that neither side holds a listing of
// many clients whole: --json prints one JSON array of them all.
func listClients(cmd *cobra.Command, group string) error {
	c, err := newAdminClient(cmd)
	if err != nil {
		return err
	}
	asJSON, _ := cmd.Flags().GetBool("json")
	out := cmd.OutOrStdout()
	after, n := "", 0
	for {
		q := url.Values{"limit": {fmt.Sprint(clientsPage)}}
		if group != "" {
			q.Set("group", group)
		}
		if after != "" {
			q.Set("after", after)
		}
		body, err := c.call(http.MethodGet, "/mtls/clients?"+q.Encode(), nil)
		if err != nil {
			return err
		}
		var raw []json.RawMessage
		var page []store.ClientInfo
		if err := json.Unmarshal(body, &raw); err == nil {
			err = json.Unmarshal(body, &page)
		}
		if err != nil {
			return fmt.Errorf("decoding the admin API's answer: %w", err)
		}
		if len(page) > 0 && page[0].Alias <= after {
			break // an admin API without paging: the whole listing again
		}
		for i, item := range raw {
			switch {
			case !asJSON:
			case n+i == 0:
				_, err = fmt.Fprintf(out, "[%s", item)
			default:
				_, err = fmt.Fprintf(out, ",\n%s", item)
			}
			if err != nil {
				return err
			}
		}
		if !asJSON && (n == 0 || len(page) > 0) {
			if err := writeClientRows(out, page, n == 0); err != nil {
				return err
			}
		}
		n += len(page)
		if len(page) < clientsPage {
			break
		}
		after = page[len(page)-1].Alias
	}
	if asJSON {
		if n == 0 {
			_, err = fmt.Fprintln(out, "[]")
		} else {
			_, err = fmt.Fprintln(out, "]")
		}
	}
	return err
}

// changeCommand sends body to uri and prints the entry of the answer: the
// API's JSON with --json, else a table of one row.
func changeCommand[T any](cmd *cobra.Command, method, uri string, body any, write func(io.Writer, []T) error) error {
	c, err := newAdminClient(cmd)
	if err != nil {
		return err
	}
	answer, err := c.call(method, uri, body)
	if err != nil {
		return err
	}
	return printAnswer(cmd, answer, func(w io.Writer) error {
		var item T
		if err := json.Unmarshal(answer, &item); err != nil {
			return fmt.Errorf("decoding the admin API's answer: %w", err)
		}
		return write(w, []T{item})
	})
}

// deleteCommand deletes the entry name under prefix.
func deleteCommand(cmd *cobra.Command, prefix, what, name string) error {
	if err := store.CheckName(name); err != nil {
		return &usageError{err}
	}
	c, err := newAdminClient(cmd)
	if err != nil {
		return err
	}
	if _, err := c.call(http.MethodDelete, prefix+url.PathEscape(name), nil); err != nil {
		return err
	}
	fmt.Fprintf(cmd.OutOrStdout(), "deleted %s %s\n", what, name)
	return nil
}

// printAnswer prints body as it is with --json, else with table.
func printAnswer(cmd *cobra.Command, body []byte, table func(io.Writer) error) error {
	if asJSON, _ := cmd.Flags().GetBool("json"); asJSON {
		_, err := cmd.OutOrStdout().Write(body)
		return err
	}
	return table(cmd.OutOrStdout())
}

// readInput reads a PEM file named on the command line, "-" for standard
// input. A file that cannot be read is a usage error.
func readInput(cmd *cobra.Command, path string) (string, error) {
	var (
		data []byte
		err  error
	)
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(cmd.InOrStdin(), maxAnswer))
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return "", &usageError{fmt.Errorf("reading %s: %w", path, err)}
	}
	return string(data), nil
}

// addSubjectFlags adds the flags of a generated certificate's subject
// (but its common name) and subject alternative names.
func addSubjectFlags(cmd *cobra.Command) {
	f := cmd.Flags()
	f.String("org", "", "subject organization (O)")
	f.String("ou", "", "subject organizational unit (OU)")
	f.String("country", "", "subject country (C), two letters")
	f.String("province", "", "subject state or province (ST)")
	f.String("state", "", "same as --province")
	f.String("locality", "", "subject locality or city (L)")
	f.StringArray("dns", nil, "a DNS name subject alternative name (repeat for more)")
	f.StringArray("ip", nil, "an IP address subject alternative name (repeat for more)")
	f.StringArray("uri", nil, "a URI subject alternative name, such as spiffe://example.org/gw (repeat for more)")
	f.StringArray("email", nil, "an email address subject alternative name (repeat for more)")
}

// subjectFromFlags fills req's subject (but its common name) and subject
// alternative names from the flags of addSubjectFlags; the store checks
// them.
func subjectFromFlags(cmd *cobra.Command, req *store.GenerateRequest) error {
	f := cmd.Flags()
	req.Organization, _ = f.GetString("org")
	req.OrganizationalUnit, _ = f.GetString("ou")
	req.Country, _ = f.GetString("country")
	req.Province, _ = f.GetString("province")
	if state, _ := f.GetString("state"); state != "" {
		if req.Province != "" && req.Province != state {
			return usagef("--province and --state differ: give one")
		}
		req.Province = state
	}
	req.Locality, _ = f.GetString("locality")
	req.DNSNames, _ = f.GetStringArray("dns")
	req.IPAddresses, _ = f.GetStringArray("ip")
	req.URIs, _ = f.GetStringArray("uri")
	req.Emails, _ = f.GetStringArray("email")
	return nil
}

// certificateAsPEM returns a certificate file's content as PEM: PEM as it
// is, else DER (one certificate, or several one after the other)
// PEM-encoded.
func certificateAsPEM(data string) (string, error) {
	if strings.Contains(data, "-----BEGIN") {
		return data, nil
	}
	certs, err := x509.ParseCertificates([]byte(data))
	if err != nil {
		return "", fmt.Errorf("neither PEM (no -----BEGIN line) nor DER certificates: %w", err)
	}
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return string(out), nil
}

// keyAsPEM returns a private key file's content as PEM: PEM as it is, else
// a DER key (PKCS#8, PKCS#1 RSA or SEC1 EC) PEM-encoded as it was.
func keyAsPEM(data string) (string, error) {
	if strings.Contains(data, "-----BEGIN") {
		return data, nil
	}
	der := []byte(data)
	var typ string
	if _, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		typ = "PRIVATE KEY"
	} else if _, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		typ = "RSA PRIVATE KEY"
	} else if _, err := x509.ParseECPrivateKey(der); err == nil {
		typ = "EC PRIVATE KEY"
	} else {
		return "", errors.New("neither PEM (no -----BEGIN line) nor a DER private key (PKCS#8, PKCS#1 or SEC1)")
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})), nil
}

func writeClients(w io.Writer, clients []store.ClientInfo) error {
	return writeClientRows(w, clients, true)
}

// writeClientRows writes clients as table rows, after the heading if
// heading is set.
func writeClientRows(w io.Writer, clients []store.ClientInfo, heading bool) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	if heading {
		fmt.Fprintln(tw, "ALIAS\tTIER\tSUBJECT\tFINGERPRINT\tNOT_AFTER\tGROUPS\tCERTS")
	}
	for _, c := range clients {
		certs := len(c.Certificates)
		if certs == 0 {
			certs = 1 // an answer of before rotation
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\n", cell(c.Alias), cell(c.Tier), cell(c.Subject), shortFingerprint(c.Fingerprint),
			c.NotAfter.UTC().Format(time.RFC3339), cell(strings.Join(c.Groups, ",")), certs)
	}
	return tw.Flush()
}

func writeKeyPairs(w io.Writer, keyPairs []store.KeyPairInfo) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tKEY_TYPE\tSUBJECT\tFINGERPRINT\tNOT_AFTER")
	for _, k := range keyPairs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", cell(k.Name), cell(k.KeyType), cell(k.Subject), shortFingerprint(k.Fingerprint), k.NotAfter.UTC().Format(time.RFC3339))
	}
	return tw.Flush()
}

// shortFingerprintLen is how much of a SHA-256 fingerprint a table shows:
// the start of the full one, which --json gives.
const shortFingerprintLen = 16

func shortFingerprint(fp string) string {
	if len(fp) > shortFingerprintLen {
		return fp[:shortFingerprintLen]
	}
	return cell(fp)
}

// cell is s as a table cell: "-" when empty; control characters (a tab or
// a newline in a certificate's subject would break the table) as '?'.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
}

// aliasAndCertificate reads the <alias> <cert.pem> arguments of clients add
// and rotate: a valid alias, and the PEM ("-" for standard input).
func aliasAndCertificate(cmd *cobra.Command, args []string) (alias, cert string, err error) {
	alias = args[0]
	if err := store.CheckName(alias); err != nil {
		return "", "", &usageError{err}
	}
	cert, err = readInput(cmd, args[1])
	return alias, cert, err
}
