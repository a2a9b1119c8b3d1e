// Package mtlscmd registers `caddy mtls`, commands for people: manage the
// trusted clients and key pairs over the admin API, make a key pair or a
// small test PKI, and inspect a certificate or a certificate header value.
package mtlscmd

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-mtls/caddy-mtls/certcheck"
	"github.com/caddy-mtls/caddy-mtls/certcodec"
	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/store"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "mtls",
		Short: "Manage trusted clients and key pairs; make key pairs and test PKIs; inspect certificates",
		Long: `
Tools for the caddy-mtls plugin:

  caddy mtls clients   list, add or remove the trusted clients, over the
                       admin API (what clients_from_storage trusts)
  caddy mtls keypairs  list, generate, upload, download or delete the
                       gateway's key pairs, over the admin API
  caddy mtls keygen    make a self-signed key pair, or a small test PKI (--demo)
  caddy mtls inspect   show a certificate from a PEM file or a header value
                       (any format client_cert_auth reads), and whether it
                       verifies as a client certificate against a CA

Exit status: 0 done; 1 refused or failed (an error of the admin API, whose
message is shown; an admin endpoint not reachable; a certificate that does
not verify); 2 a usage error.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
				return exitStatus(c, &usageError{err})
			})
			groupCommand(cmd)
			cmd.AddCommand(clientsCommand(), keyPairsCommand(), keygenCommand(), inspectCommand())
		},
	})
}

// usageError is a mistake in the command line: the exit status is 2.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Errorf(format, args...)}
}

// exitUsage is the exit status of a usage error.
const exitUsage = 2

// exitStatus returns what cmd's RunE returns for err: a usage error is
// shown with the command's usage line and exits with status 2; any other
// error is shown by cobra ("Error: ...") and exits with status 1.
func exitStatus(cmd *cobra.Command, err error) error {
	var usage *usageError
	if !errors.As(err, &usage) {
		return err
	}
	cmd.SilenceErrors = true
	fmt.Fprintf(cmd.ErrOrStderr(), "Error: %v\nUsage: %s\n", err, cmd.UseLine())
	// Caddy's main exits with the status of the error its wrapper makes.
	return caddycmd.WrapCommandFuncForCobra(func(caddycmd.Flags) (int, error) { return exitUsage, nil })(cmd, nil)
}

// run makes a RunE of f whose usage errors exit with status 2.
func run(f func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error { return exitStatus(cmd, f(cmd, args)) }
}

// positional checks the positional arguments with check; a mismatch is a usage
// error.
func positional(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return exitStatus(cmd, &usageError{err})
		}
		return nil
	}
}

// groupCommand makes cmd, a command of subcommands, show its help when
// called alone and refuse an unknown subcommand as a usage error.
func groupCommand(cmd *cobra.Command) *cobra.Command {
	cmd.RunE = run(func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		var names []string
		for _, sub := range cmd.Commands() {
			if sub.IsAvailableCommand() {
				names = append(names, sub.Name())
			}
		}
		return usagef("unknown command %q for %q: want %s", args[0], cmd.CommandPath(), strings.Join(names, ", "))
	})
	return cmd
}

func keygenCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keygen --out <dir> [--name <name>] [--cn <common name>] [--org <O>] [--ou <OU>] [--country <C>] [--province <ST>] [--locality <L>] [--dns <name>]... [--ip <address>]... [--uri <URI>]... [--email <address>]... [--days <n>] [--key-type p256|p384|rsa2048|rsa3072|rsa4096] [--force] | --demo --out <dir> [--force]",
		Short: "Make a self-signed client key pair, or a test PKI",
		Long: `
Writes <name>.pem and <name>-key.pem (mode 0600) into --out: a self-signed
certificate for client authentication and its key, as the admin API's
POST /mtls/keypairs/<name> makes them: subject --cn (default: the name),
--org, --ou, --country (two letters), --province (or --state) and
--locality; subject alternative names --dns, --ip, --uri and --email, each
repeatable.

With --demo, writes a throwaway PKI for trying the plugin instead:
server-ca.pem, server.pem (localhost), clients-ca.pem, alice.pem (from
clients-ca), partner.pem (self-signed), mallory.pem (from a CA nobody
trusts), each with its -key.pem. Not fit for production.

Files that exist are left alone, and nothing is written, unless --force is
given. What was written is listed.
`,
		Args: positional(cobra.NoArgs),
		RunE: run(func(cmd *cobra.Command, _ []string) error {
			f := cmd.Flags()
			out, _ := f.GetString("out")
			if out == "" {
				return usagef("--out is required")
			}
			force, _ := f.GetBool("force")
			if demo, _ := f.GetBool("demo"); demo {
				return writeDemoPKI(cmd.OutOrStdout(), out, force)
			}
			name, _ := f.GetString("name")
			if err := store.CheckName(name); err != nil {
				return &usageError{err}
			}
			certPath, keyPath := filepath.Join(out, name+".pem"), filepath.Join(out, name+"-key.pem")
			if !force {
				if err := refuseExisting(certPath, keyPath); err != nil {
					return err
				}
			}
			req := store.GenerateRequest{}
			req.CommonName, _ = f.GetString("cn")
			if req.CommonName == "" {
				req.CommonName = name
			}
			if err := subjectFromFlags(cmd, &req); err != nil {
				return err
			}
			req.ValidityDays, _ = f.GetInt("days")
			req.KeyType, _ = f.GetString("key-type")
			certPEM, keyPEM, err := store.Generate(req)
			var input *store.InputError
			if errors.As(err, &input) {
				return &usageError{err}
			}
			if err != nil {
				return err
			}
			if err := os.MkdirAll(out, 0o700); err != nil {
				return err
			}
			if err := os.WriteFile(certPath, []byte(certPEM), 0o644); err != nil {
				return err
			}
			if err := os.WriteFile(keyPath, []byte(keyPEM), 0o600); err != nil {
				return err
			}
			// WriteFile keeps the mode of a file it overwrites.
			if err := os.Chmod(keyPath, 0o600); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s and %s\n", certPath, keyPath)
			return nil
		}),
	}
	cmd.Flags().String("out", "", "folder to write into")
	cmd.Flags().String("name", "gateway", "file name (and key pair name)")
	cmd.Flags().String("cn", "", "subject common name (default: the name)")
	addSubjectFlags(cmd)
	cmd.Flags().Int("days", 365, "days of validity, 1 to 3650")
	cmd.Flags().String("key-type", "p256", "p256, p384, rsa2048, rsa3072 or rsa4096")
	cmd.Flags().Bool("demo", false, "write a throwaway test PKI instead")
	cmd.Flags().Bool("force", false, "overwrite files that exist")
	return cmd
}

// refuseExisting returns an error naming the first of paths that exists.
func refuseExisting(paths ...string) error {
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("%s exists; nothing was written (--force overwrites)", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

// demoNames are the items of the demo's PKI, in the order they are listed.
var demoNames = []string{"server-ca", "server", "clients-ca", "alice", "partner", "mallory"}

// writeDemoPKI writes the demo's PKI into dir, and lists what it wrote on
// w. Unless force, it writes nothing if any of its files exists.
func writeDemoPKI(w io.Writer, dir string, force bool) error {
	var paths []string
	for _, name := range demoNames {
		paths = append(paths, filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem"))
	}
	if !force {
		if err := refuseExisting(paths...); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	serverCA, err := demopki.NewCA("Demo Server CA")
	if err != nil {
		return err
	}
	clientsCA, err := demopki.NewCA("Demo Clients CA")
	if err != nil {
		return err
	}
	rogueCA, err := demopki.NewCA("Rogue CA")
	if err != nil {
		return err
	}
	certs := map[string]*demopki.Cert{"server-ca": serverCA, "clients-ca": clientsCA}
	for name, mk := range map[string]func() (*demopki.Cert, error){
		"server": func() (*demopki.Cert, error) {
			return serverCA.Issue(demopki.Options{CommonName: "localhost", DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
		},
		"alice": func() (*demopki.Cert, error) {
			return clientsCA.Issue(demopki.Options{CommonName: "alice", Organization: "Demo Payments", Emails: []string{"alice@example.com"}})
		},
		"partner": func() (*demopki.Cert, error) {
			return demopki.SelfSigned(demopki.Options{CommonName: "partner-app", Organization: "Partner Inc"})
		},
		"mallory": func() (*demopki.Cert, error) { return rogueCA.Issue(demopki.Options{CommonName: "mallory"}) },
	} {
		if certs[name], err = mk(); err != nil {
			return err
		}
	}
	for _, name := range demoNames {
		if _, _, err := certs[name].WriteFiles(dir, name); err != nil {
			return err
		}
	}
	fmt.Fprintf(w, "wrote into %s:\n", dir)
	for _, p := range paths {
		fmt.Fprintf(w, "  %s\n", filepath.Base(p))
	}
	return nil
}

func inspectCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "inspect [--ca <ca.pem>] (<cert.pem> | --header <value> [--chain <value>])",
		Short: "Show a certificate, from a PEM file or a header value, and verify it",
		Long: `
Shows the certificate in a PEM file ("-" for standard input), or in a
header value in any format client_cert_auth reads (rfc9440, url_pem, pem,
base64_der: the format found is shown), with --chain the value of the chain
header (an RFC 9440 Client-Cert-Chain list, PEM blocks, or comma-separated
base64 DER). With --ca, also verifies it as a client certificate against the
CA(s) in that PEM file, with the rules of client_cert_auth; the exit status
is 1 when it does not verify.
`,
		Args: positional(cobra.MaximumNArgs(1)),
		RunE: run(func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			header, _ := f.GetString("header")
			chain, _ := f.GetString("chain")
			caPath, _ := f.GetString("ca")
			var (
				certs  []*x509.Certificate
				format string
				err    error
			)
			switch {
			case chain != "" && header == "":
				return usagef("--chain goes with --header")
			case header != "" && len(args) == 0:
				var chains []string
				if chain != "" {
					chains = []string{chain}
				}
				var found certcodec.Format
				certs, found, err = certcodec.ParseHeader(header, chains, certcodec.Auto, certcodec.HeaderFields{Cert: "--header", Chain: "--chain"})
				format = "header, " + found.String()
			case header == "" && len(args) == 1:
				certs, err = readPEMFile(args[0], cmd.InOrStdin())
				format = "PEM file"
			case header == "" && len(args) == 0:
				return usagef("give a PEM file or --header <value>")
			default:
				return usagef("give a PEM file or --header <value>, not both")
			}
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "source:       %s\n", format)
			describe(w, certs[0])
			if len(certs) > 1 {
				fmt.Fprintf(w, "chain:        %d more certificate(s)\n", len(certs)-1)
			}
			if caPath == "" {
				return nil
			}
			roots, err := readPool(caPath)
			if err != nil {
				return err
			}
			if _, reason := certcheck.Verify(certs[0], certs[1:], roots, time.Now()); reason != certcheck.OK {
				fmt.Fprintf(w, "verifies:     no (%s) against %s\n", reason, caPath)
				return fmt.Errorf("does not verify: %s", reason)
			}
			fmt.Fprintf(w, "verifies:     yes, as a client certificate, against %s\n", caPath)
			return nil
		}),
	}
	cmd.Flags().String("header", "", "a certificate header value")
	cmd.Flags().String("chain", "", "the chain header's value (intermediates), with --header")
	cmd.Flags().String("ca", "", "PEM file of the CA(s) to verify against")
	return cmd
}

func describe(w io.Writer, c *x509.Certificate) {
	fmt.Fprintf(w, "subject:      %s\n", c.Subject)
	fmt.Fprintf(w, "issuer:       %s\n", c.Issuer)
	fmt.Fprintf(w, "serial:       %s\n", c.SerialNumber)
	fmt.Fprintf(w, "not before:   %s\n", c.NotBefore.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "not after:    %s\n", c.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "fingerprint:  %s (SHA-256)\n", certcodec.Fingerprint(c.Raw))
	fmt.Fprintf(w, "key type:     %s\n", store.KeyTypeOf(c))
	if len(c.DNSNames)+len(c.URIs)+len(c.EmailAddresses)+len(c.IPAddresses) > 0 {
		var sans []string
		sans = append(sans, c.DNSNames...)
		for _, u := range c.URIs {
			sans = append(sans, u.String())
		}
		sans = append(sans, c.EmailAddresses...)
		for _, ip := range c.IPAddresses {
			sans = append(sans, ip.String())
		}
		fmt.Fprintf(w, "names:        %s\n", strings.Join(sans, ", "))
	}
	switch {
	case !c.BasicConstraintsValid:
		fmt.Fprintf(w, "CA:           not said (no basic constraints)\n")
	case c.IsCA:
		fmt.Fprintf(w, "CA:           yes (refused as a leaf under a trust pool: ca_certificate; fine pinned)\n")
	default:
		fmt.Fprintf(w, "CA:           no\n")
	}
	fmt.Fprintf(w, "key usage:    %s\n", keyUsages(c.KeyUsage))
	fmt.Fprintf(w, "ext key use:  %s\n", extKeyUsages(c))
}

// keyUsages names the key usage bits of a certificate.
func keyUsages(ku x509.KeyUsage) string {
	names := []string{"digitalSignature", "contentCommitment", "keyEncipherment", "dataEncipherment",
		"keyAgreement", "keyCertSign", "cRLSign", "encipherOnly", "decipherOnly"}
	var out []string
	for i, name := range names {
		if ku&(1<<i) != 0 {
			out = append(out, name)
		}
	}
	if len(out) == 0 {
		return "none (any)"
	}
	return strings.Join(out, ", ")
}

// extKeyUsages names the extended key usages of a certificate, saying
// whether client authentication is among them.
func extKeyUsages(c *x509.Certificate) string {
	names := map[x509.ExtKeyUsage]string{
		x509.ExtKeyUsageAny: "any", x509.ExtKeyUsageServerAuth: "serverAuth", x509.ExtKeyUsageClientAuth: "clientAuth",
		x509.ExtKeyUsageCodeSigning: "codeSigning", x509.ExtKeyUsageEmailProtection: "emailProtection",
		x509.ExtKeyUsageTimeStamping: "timeStamping", x509.ExtKeyUsageOCSPSigning: "OCSPSigning",
	}
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return "none (any, clientAuth included)"
	}
	var out []string
	client := false
	for _, u := range c.ExtKeyUsage {
		client = client || u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny
		if name, ok := names[u]; ok {
			out = append(out, name)
		} else {
			out = append(out, fmt.Sprintf("%d", u))
		}
	}
	for _, oid := range c.UnknownExtKeyUsage {
		out = append(out, oid.String())
	}
	if !client {
		out = append(out, "(no clientAuth: refused as eku)")
	}
	return strings.Join(out, ", ")
}

// readPEMFile returns the certificates of a PEM file ("-" for stdin, when
// stdin is given), in order, passing over other blocks.
func readPEMFile(path string, stdin io.Reader) ([]*x509.Certificate, error) {
	var data []byte
	var err error
	if path == "-" && stdin != nil {
		data, err = io.ReadAll(io.LimitReader(stdin, 1<<20))
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, err
	}
	certs, err := certcodec.ParsePEM(data, certcodec.PEMAll)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}

// readPool reads the CA(s) of a PEM file as client_cert_auth's trust_pool
// file does.
func readPool(path string) (*x509.CertPool, error) {
	certs, err := readPEMFile(path, nil)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}
