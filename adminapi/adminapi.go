// Package adminapi implements admin.api.mtls: routes under /mtls/ on Caddy's
// admin endpoint that manage the trusted clients and the gateway's key
// pairs in Caddy's storage. Private keys never leave through it.
package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-mtls/caddy-mtls/certcheck"
	"github.com/caddy-mtls/caddy-mtls/certcodec"
	"github.com/caddy-mtls/caddy-mtls/store"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI serves:
//
//	GET    /mtls/clients[?group=<name>]       list the trusted clients (of a group)
//	PUT    /mtls/clients/<alias>              add or replace one: {"certificate": "<PEM>", "tier": "gold",
//	                                          "groups": ["payments"]}
//	POST   /mtls/clients/<alias>/certificates add a certificate to it (rotation): {"certificate": "<PEM>"};
//	                                          409 if stored under another alias
//	DELETE /mtls/clients/<alias>/certificates/<fingerprint>
//	                                          remove one; 409 for its last (delete the client)
//	DELETE /mtls/clients/<alias>
//	GET    /mtls/keypairs                     list the key pairs
//	POST   /mtls/keypairs/<name>              generate: {"common_name", "organization", "organizational_unit",
//	                                          "country", "province", "locality", "dns_names", "ip_addresses",
//	                                          "uris", "emails", "validity_days", "key_type"}
//	                                          or upload: {"certificate": "<PEM or base64 of DER>",
//	                                          "private_key": "<PEM>"};
//	                                          409 if it exists, unless ?replace=true
//	GET    /mtls/keypairs/<name>/certificate  the public certificate, PEM
//	DELETE /mtls/keypairs/<name>
//
// A request body over 256 KiB, to any route, gets 413 and changes nothing.
type AdminAPI struct {
	storage certmagic.Storage
	logger  *zap.Logger
}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.mtls",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Provision keeps the storage of the config being loaded, which the routes
// use.
func (a *AdminAPI) Provision(ctx caddy.Context) error {
	a.storage = ctx.Storage()
	a.logger = ctx.Logger(a)
	return nil
}

// Routes returns the admin routes.
func (a *AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/mtls/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

// maxBody bounds a request body, of any route but the import: a
// certificate chain or a key pair fits in far less.
const maxBody = 256 << 10

// maxImportBody bounds the body of POST /mtls/clients: store.MaxPutClients
// clients with RSA-2048 certificates fit (TestPutClientsLimits).
const maxImportBody = 2 << 20

// maxDrain bounds how much of a body over maxBody is read and thrown away
// before the 413 is sent: as much as Caddy's own /load accepts. Beyond it
// the answer is still 413, but the connection is closed while the client
// may still be sending, which it may see as a reset. The admin endpoint's
// read timeout (10 s) bounds the time spent.
const maxDrain = 100 << 20

// errBodyTooLarge is the reason of the 413.
var errBodyTooLarge = errors.New("request body too large")

func (a *AdminAPI) store() *store.Store {
	return store.New(a.storage, a.logger)
}

func (a *AdminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	// Every route reads the body the same way, those that take none too, so
	// that an oversize body gets its 413 before anything is done.
	limit := maxBody
	if r.URL.Path == "/mtls/clients" && r.Method == http.MethodPost {
		limit = maxImportBody
	}
	body, err := readBody(r, limit)
	if err != nil {
		return err
	}
	timeout := store.Timeout
	if r.URL.Path == "/mtls/clients" && r.Method == http.MethodGet && r.URL.Query().Get("limit") == "" {
		timeout = listAllTimeout
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	r = r.WithContext(ctx)
	// Split the path as sent, so that an escaped '/' stays inside its name
	// (and is refused there as a bad name).
	parts := strings.Split(strings.TrimPrefix(r.URL.EscapedPath(), "/mtls/"), "/")
	for i, p := range parts {
		unescaped, err := url.PathUnescape(p)
		if err != nil {
			return badRequest(fmt.Errorf("path: %w", err))
		}
		parts[i] = unescaped
	}
	switch {
	case len(parts) == 1 && parts[0] == "clients" && r.Method == http.MethodPost:
		return a.putClients(w, r, body)
	case len(parts) == 1 && parts[0] == "clients":
		return a.listClients(w, r)
	case len(parts) == 2 && parts[0] == "clients":
		return a.client(w, r, parts[1], body)
	case len(parts) == 3 && parts[0] == "clients" && parts[2] == "certificates":
		return a.addClientCertificate(w, r, parts[1], body)
	case len(parts) == 4 && parts[0] == "clients" && parts[2] == "certificates":
		return a.removeClientCertificate(w, r, parts[1], parts[3])
	case len(parts) == 1 && parts[0] == "keypairs":
		return a.listKeyPairs(w, r)
	case len(parts) == 2 && parts[0] == "keypairs":
		return a.keyPair(w, r, parts[1], body)
	case len(parts) == 3 && parts[0] == "keypairs" && parts[2] == "certificate":
		return a.keyPairCertificate(w, r, parts[1])
	}
	return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no such resource: %s", r.URL.Path)}
}

// MaxPage is the largest `limit` of a listing of clients.
const MaxPage = 1000

// listAllTimeout bounds a listing of every stored client (no `limit`).
const listAllTimeout = 5 * time.Minute

// listClients answers GET /mtls/clients[?group=&limit=&after=]: the stored
// clients in alias order, of a group if given. With limit, a page of at
// most that many clients after the alias after, and a Link header to the
// next page when clients remain; without, every client, written out as
// they are read, never held whole.
func (a *AdminAPI) listClients(w http.ResponseWriter, r *http.Request) error {
	if err := allow(r, http.MethodGet, http.MethodPost); err != nil {
		return err
	}
	q := r.URL.Query()
	group, after := q.Get("group"), q.Get("after")
	if group != "" {
		if err := store.CheckName(group); err != nil {
			return badRequest(fmt.Errorf("group: %w", err))
		}
	}
	if after != "" {
		if err := store.CheckName(after); err != nil {
			return badRequest(fmt.Errorf("after: %w", err))
		}
	}
	if q.Has("limit") {
		limit, err := strconv.Atoi(q.Get("limit"))
		if err != nil || limit < 1 || limit > MaxPage {
			return badRequest(fmt.Errorf("limit %.20q: want a number from 1 to %d", q.Get("limit"), MaxPage))
		}
		infos := make([]store.ClientInfo, 0, min(limit, 64))
		more, err := a.store().ListClients(r.Context(), after, group, func(c *store.Client) bool {
			infos = append(infos, c.Info())
			return len(infos) < limit
		})
		if err != nil {
			return apiError(err)
		}
		if more && len(infos) > 0 {
			next := url.Values{"limit": {strconv.Itoa(limit)}, "after": {infos[len(infos)-1].Alias}}
			if group != "" {
				next.Set("group", group)
			}
			w.Header().Set("Link", fmt.Sprintf(`</mtls/clients?%s>; rel="next"`, next.Encode()))
		}
		return writeJSON(w, http.StatusOK, infos)
	}
	// Every client, streamed: the answer starts with the first batch read,
	// and a storage failure after that cuts the answer short (the client
	// sees JSON that does not end), never a listing that looks whole.
	started := false
	enc := json.NewEncoder(w)
	_, err := a.store().ListClients(r.Context(), after, group, func(c *store.Client) bool {
		sep := ","
		if !started {
			started, sep = true, "["
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
		}
		_, _ = io.WriteString(w, sep)
		return enc.Encode(c.Info()) == nil
	})
	switch {
	case err != nil && started:
		panic(http.ErrAbortHandler)
	case err != nil:
		return apiError(err)
	case !started:
		return writeJSON(w, http.StatusOK, []store.ClientInfo{})
	}
	_, _ = io.WriteString(w, "]\n")
	return nil
}

// putClients answers POST /mtls/clients {"clients": [{"alias", "certificate",
// "tier", "groups"}, ...]}: many clients stored at once (an import), each
// as PUT /mtls/clients/<alias> stores it, all checked before any is
// stored, in one change that every instance reads at once.
func (a *AdminAPI) putClients(w http.ResponseWriter, r *http.Request, body []byte) error {
	var req struct {
		Clients []store.NewClient `json:"clients"`
	}
	if err := decodeJSON(body, &req); err != nil {
		return err
	}
	for _, c := range req.Clients {
		if err := checkAcceptable(c.Certificate); err != nil {
			return badRequest(fmt.Errorf("client %.130q: %w", c.Alias, err))
		}
	}
	if err := a.store().PutClients(r.Context(), req.Clients); err != nil {
		return apiError(err)
	}
	a.logger.Info("trusted clients stored", zap.Int("clients", len(req.Clients)))
	return writeJSON(w, http.StatusOK, map[string]int{"stored": len(req.Clients)})
}

func (a *AdminAPI) client(w http.ResponseWriter, r *http.Request, alias string, body []byte) error {
	if err := allow(r, http.MethodPut, http.MethodDelete); err != nil {
		return err
	}
	if r.Method == http.MethodDelete {
		return deleteEntry(w, r, alias, a.store().DeleteClient)
	}
	var req struct {
		Certificate string   `json:"certificate"`
		Tier        string   `json:"tier"`
		Groups      []string `json:"groups"`
	}
	if err := decodeJSON(body, &req); err != nil {
		return err
	}
	if err := checkAcceptable(req.Certificate); err != nil {
		return badRequest(err)
	}
	info, err := a.store().PutClient(r.Context(), alias, req.Tier, req.Certificate, req.Groups...)
	if err != nil {
		return apiError(err)
	}
	a.logger.Info("trusted client stored", zap.String("alias", alias), zap.String("fingerprint", info.Fingerprint), zap.Strings("groups", info.Groups))
	return writeJSON(w, http.StatusOK, info)
}

// checkAcceptable refuses a client certificate that could never be
// accepted, rather than storing it to refuse every call later. A PEM text
// that does not parse is left to the store to refuse.
func checkAcceptable(certPEM string) error {
	certs, err := certcodec.ParsePEM([]byte(certPEM), certcodec.PEMOne)
	if err != nil {
		return nil
	}
	if reason := certcheck.NeverAcceptable(certs[0], time.Now()); reason != certcheck.OK {
		return fmt.Errorf("certificate could never be accepted as a client's: %s (not after %s, extended key usages %v)",
			reason, certs[0].NotAfter.UTC().Format(time.RFC3339), certs[0].ExtKeyUsage)
	}
	return nil
}

// addClientCertificate adds a certificate to the client alias, to rotate
// it: both are accepted until the old one is removed.
func (a *AdminAPI) addClientCertificate(w http.ResponseWriter, r *http.Request, alias string, body []byte) error {
	if err := allow(r, http.MethodPost); err != nil {
		return err
	}
	var req struct {
		Certificate string `json:"certificate"`
	}
	if err := decodeJSON(body, &req); err != nil {
		return err
	}
	if err := checkAcceptable(req.Certificate); err != nil {
		return badRequest(err)
	}
	info, err := a.store().AddClientCertificate(r.Context(), alias, req.Certificate)
	if err != nil {
		return apiError(err)
	}
	a.logger.Info("client certificate added", zap.String("alias", alias), zap.String("fingerprint", info.Fingerprint))
	return writeJSON(w, http.StatusOK, info)
}

// removeClientCertificate removes one certificate of the client alias.
func (a *AdminAPI) removeClientCertificate(w http.ResponseWriter, r *http.Request, alias, fingerprint string) error {
	if err := allow(r, http.MethodDelete); err != nil {
		return err
	}
	info, err := a.store().RemoveClientCertificate(r.Context(), alias, fingerprint)
	if err != nil {
		return apiError(err)
	}
	a.logger.Info("client certificate removed", zap.String("alias", alias), zap.String("fingerprint", fingerprint))
	return writeJSON(w, http.StatusOK, info)
}

func (a *AdminAPI) listKeyPairs(w http.ResponseWriter, r *http.Request) error {
	if err := allow(r, http.MethodGet); err != nil {
		return err
	}
	infos, err := a.store().KeyPairs(r.Context())
	if err != nil {
		return apiError(err)
	}
	if infos == nil {
		infos = []store.KeyPairInfo{}
	}
	return writeJSON(w, http.StatusOK, infos)
}

func (a *AdminAPI) keyPair(w http.ResponseWriter, r *http.Request, name string, body []byte) error {
	if err := allow(r, http.MethodPost, http.MethodDelete); err != nil {
		return err
	}
	if r.Method == http.MethodDelete {
		return deleteEntry(w, r, name, a.store().DeleteKeyPair)
	}
	var req struct {
		store.GenerateRequest
		Certificate string `json:"certificate"`
		PrivateKey  string `json:"private_key"`
	}
	if err := decodeJSON(body, &req); err != nil {
		return err
	}
	var (
		info store.KeyPairInfo
		err  error
	)
	replace := r.URL.Query().Get("replace") == "true"
	switch {
	case req.Certificate != "" || req.PrivateKey != "":
		if !req.GenerateRequest.Empty() {
			return badRequest(errors.New("give either certificate and private_key (upload) or common_name and the like (generate), not both"))
		}
		info, err = a.store().PutKeyPair(r.Context(), name, req.Certificate, req.PrivateKey, replace)
	default:
		info, err = a.store().GenerateKeyPair(r.Context(), name, req.GenerateRequest, replace)
	}
	if err != nil {
		return apiError(err)
	}
	a.logger.Info("key pair stored", zap.String("name", name), zap.String("fingerprint", info.Fingerprint))
	return writeJSON(w, http.StatusOK, info)
}

// deleteEntry answers a DELETE of the entry name with del: 204, or the
// store's error.
func deleteEntry(w http.ResponseWriter, r *http.Request, name string, del func(context.Context, string) error) error {
	if err := del(r.Context(), name); err != nil {
		return apiError(err)
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (a *AdminAPI) keyPairCertificate(w http.ResponseWriter, r *http.Request, name string) error {
	if err := allow(r, http.MethodGet); err != nil {
		return err
	}
	kp, err := a.store().KeyPair(r.Context(), name)
	if err != nil {
		return apiError(err)
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, err = io.WriteString(w, kp.Certificate)
	return err
}

func allow(r *http.Request, methods ...string) error {
	for _, m := range methods {
		if r.Method == m {
			return nil
		}
	}
	return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed here (want %s)", r.Method, strings.Join(methods, " or "))}
}

// readBody reads the request body, at most limit bytes. A larger one is
// answered with 413, after reading the rest of it (up to maxDrain) and
// throwing it away: net/http reads at most 256 KiB of what a handler left
// unread, and with more left it closes the connection under a client that
// is still sending, whose TCP stack then answers with a reset that can
// discard the 413 before the client reads it.
func readBody(r *http.Request, limit int) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, int64(limit)+1))
	if err != nil {
		return nil, badRequest(fmt.Errorf("reading body: %w", err))
	}
	if len(body) <= limit {
		return body, nil
	}
	// A read error here changes nothing: the answer is the 413, and
	// net/http closes the connection if the body was not read to its end.
	_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, maxDrain))
	return nil, caddy.APIError{
		HTTPStatus: http.StatusRequestEntityTooLarge,
		Err:        fmt.Errorf("%w: larger than %d KiB", errBodyTooLarge, limit>>10),
		Message:    fmt.Sprintf("request body larger than %d KiB (%d bytes); nothing was changed", limit>>10, limit),
	}
}

// decodeJSON decodes body, read by readBody, into v: one JSON value with
// no unknown fields.
func decodeJSON(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return badRequest(fmt.Errorf("decoding JSON body: %w", err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest(errors.New("decoding JSON body: data after the JSON value"))
	}
	return nil
}

func badRequest(err error) error {
	return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
}

// apiError maps a store error to its answer: 400 for bad input, 404 for an
// unknown name, 409 for a clash with what is stored, 503 when the storage
// did not answer in time, 500 (with the reason) for another storage failure.
func apiError(err error) error {
	var input *store.InputError
	switch {
	case errors.As(err, &input):
		return badRequest(err)
	case errors.Is(err, store.ErrNotFound):
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: err}
	case errors.Is(err, store.ErrConflict):
		return caddy.APIError{HTTPStatus: http.StatusConflict, Err: err}
	case errors.Is(err, context.DeadlineExceeded):
		return caddy.APIError{HTTPStatus: http.StatusServiceUnavailable, Err: fmt.Errorf("storage: %w", err)}
	}
	return caddy.APIError{HTTPStatus: http.StatusInternalServerError, Err: fmt.Errorf("storage: %w", err)}
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// Interface guards
var (
	_ caddy.Provisioner = (*AdminAPI)(nil)
	_ caddy.AdminRouter = (*AdminAPI)(nil)
)
