// Command demopki writes a throwaway PKI for the demo into a folder:
//
//	server.pem, server-key.pem     the gateway's TLS certificate (localhost), from server-ca.pem
//	clients-ca.pem                 the CA that API callers' certificates chain to
//	alice.pem, alice-key.pem       a caller issued by clients-ca
//	partner.pem, partner-key.pem   a self-signed caller, pinned by alias in the demo config
//	mallory.pem, mallory-key.pem   a caller from a CA nobody trusts
//
// Nothing it makes is fit for production.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"

	"github.com/caddy-mtls/caddy-mtls/internal/testpki"
)

func main() {
	out := flag.String("out", "", "folder to write the PKI into")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "usage: demopki -out <folder>")
		os.Exit(2)
	}
	if err := write(*out); err != nil {
		fmt.Fprintln(os.Stderr, "demopki:", err)
		os.Exit(1)
	}
}

func write(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	serverCA, err := testpki.NewCA("Demo Server CA")
	if err != nil {
		return err
	}
	clientsCA, err := testpki.NewCA("Demo Clients CA")
	if err != nil {
		return err
	}
	rogueCA, err := testpki.NewCA("Rogue CA")
	if err != nil {
		return err
	}
	server, err := serverCA.Issue(testpki.Options{CommonName: "localhost", DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		return err
	}
	alice, err := clientsCA.Issue(testpki.Options{CommonName: "alice", Organization: "Demo Payments", Emails: []string{"alice@example.com"}})
	if err != nil {
		return err
	}
	partner, err := testpki.SelfSigned(testpki.Options{CommonName: "partner-app", Organization: "Partner Inc"})
	if err != nil {
		return err
	}
	mallory, err := rogueCA.Issue(testpki.Options{CommonName: "mallory"})
	if err != nil {
		return err
	}
	for name, c := range map[string]*testpki.Cert{
		"server-ca": serverCA, "clients-ca": clientsCA, "server": server,
		"alice": alice, "partner": partner, "mallory": mallory,
	} {
		if _, _, err := c.WriteFiles(dir, name); err != nil {
			return err
		}
	}
	return nil
}
