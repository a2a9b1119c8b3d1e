package adminapi

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"

	"github.com/caddy-mtls/caddy-mtls/internal/demopki"
	"github.com/caddy-mtls/caddy-mtls/store"
)

// newTestAPI returns the API over a file storage in a temp dir that holds
// one client and one key pair, both named "keep".
func newTestAPI(t *testing.T) (*AdminAPI, *store.Store) {
	t.Helper()
	a := &AdminAPI{storage: &certmagic.FileStorage{Path: t.TempDir()}, logger: zap.NewNop()}
	s := a.store()
	ca := demopki.Must(demopki.NewCA("Unit Root"))
	keep := demopki.Must(ca.Issue(demopki.Options{CommonName: "keep"}))
	if _, err := s.PutClient(context.Background(), "keep", "gold", string(keep.CertPEM())); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GenerateKeyPair(context.Background(), "keep", store.GenerateRequest{CommonName: "keep"}, false); err != nil {
		t.Fatal(err)
	}
	return a, s
}

// serveTest runs the request through the route's handler, as Caddy's admin
// endpoint does, and returns the handler's error.
func serveTest(a *AdminAPI, r *http.Request) (*httptest.ResponseRecorder, error) {
	w := httptest.NewRecorder()
	return w, a.Routes()[0].Handler.ServeHTTP(w, r)
}

// eofReader records whether its reader was read to the end.
type eofReader struct {
	r   io.Reader
	eof bool
}

func (e *eofReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		e.eof = true
	}
	return n, err
}

// TestOversizeBody: a 5 MiB body to any route, with its length given or
// chunked, gets a 413 APIError with a clear message, changes nothing in the
// storage, and is read to its end, so that net/http does not close the
// connection under a client that is still sending (which the client sees as
// a reset instead of the 413).
func TestOversizeBody(t *testing.T) {
	a, s := newTestAPI(t)
	big := `{"certificate": "` + strings.Repeat("A", 5<<20) + `", "tier": "gold"}`
	for _, route := range []struct{ method, path string }{
		{http.MethodPut, "/mtls/clients/big"},
		{http.MethodPut, "/mtls/clients/keep"},
		{http.MethodPost, "/mtls/keypairs/big"},
		{http.MethodPost, "/mtls/keypairs/keep?replace=true"},
		{http.MethodDelete, "/mtls/clients/keep"},
		{http.MethodDelete, "/mtls/keypairs/keep"},
		{http.MethodGet, "/mtls/clients"},
		{http.MethodGet, "/mtls/keypairs"},
		{http.MethodGet, "/mtls/keypairs/keep/certificate"},
	} {
		for _, chunked := range []bool{false, true} {
			body := &eofReader{r: strings.NewReader(big)}
			r := httptest.NewRequest(route.method, route.path, body)
			r.ContentLength = int64(len(big))
			if chunked {
				r.ContentLength = -1
			}
			w, err := serveTest(a, r)
			var apiErr caddy.APIError
			if !errors.As(err, &apiErr) || apiErr.HTTPStatus != http.StatusRequestEntityTooLarge {
				t.Errorf("%s %s (chunked %v): %v (status %d), want a 413 APIError", route.method, route.path, chunked, err, w.Code)
				continue
			}
			if !strings.Contains(apiErr.Message, "request body larger than 256 KiB") {
				t.Errorf("%s %s: message %q", route.method, route.path, apiErr.Message)
			}
			if w.Code != http.StatusOK || w.Body.Len() != 0 {
				t.Errorf("%s %s: the handler wrote %d %q itself; Caddy writes the APIError", route.method, route.path, w.Code, w.Body.String())
			}
			if !body.eof {
				t.Errorf("%s %s (chunked %v): the oversize body was not read to its end", route.method, route.path, chunked)
			}
		}
	}
	checkOnlyKeep(t, s)
}

// TestBodyLimit: a body of exactly the limit is read and decoded (and
// refused for its content), one byte more gets the 413.
func TestBodyLimit(t *testing.T) {
	a, s := newTestAPI(t)
	value := `{"certificate": "not a certificate"}`
	for _, tc := range []struct {
		size   int
		status int
	}{
		{maxBody, http.StatusBadRequest},
		{maxBody + 1, http.StatusRequestEntityTooLarge},
	} {
		body := strings.Repeat(" ", tc.size-len(value)) + value
		_, err := serveTest(a, httptest.NewRequest(http.MethodPut, "/mtls/clients/edge", strings.NewReader(body)))
		var apiErr caddy.APIError
		if !errors.As(err, &apiErr) || apiErr.HTTPStatus != tc.status {
			t.Errorf("body of %d bytes: %v, want %d", tc.size, err, tc.status)
		}
	}
	checkOnlyKeep(t, s)
}

// checkOnlyKeep fails unless the storage holds just what newTestAPI put.
func checkOnlyKeep(t *testing.T, s *store.Store) {
	t.Helper()
	clients, err := s.Clients(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(clients) != 1 || clients[0].Info().Alias != "keep" || clients[0].Info().Tier != "gold" {
		t.Errorf("clients after refused calls: %+v", clients)
	}
	keyPairs, err := s.KeyPairs(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(keyPairs) != 1 || keyPairs[0].Name != "keep" {
		t.Errorf("key pairs after refused calls: %+v", keyPairs)
	}
}

// TestPutClientNeverAcceptable: a client certificate that could never be
// accepted (ended, or an extended key usage without clientAuth) is refused
// with 400 and the reason, not stored to refuse every call later; a
// self-signed CA certificate (openssl req -x509) and one not yet valid are
// stored.
func TestPutClientNeverAcceptable(t *testing.T) {
	a, s := newTestAPI(t)
	ca := demopki.Must(demopki.NewCA("Unit Root 2"))
	now := time.Now()
	put := func(alias string, c *demopki.Cert) error {
		body, _ := json.Marshal(map[string]string{"certificate": string(c.CertPEM())})
		r := httptest.NewRequest(http.MethodPut, "/mtls/clients/"+alias, bytes.NewReader(body))
		_, err := serveTest(a, r)
		return err
	}
	for alias, c := range map[string]*demopki.Cert{
		"ended":       demopki.Must(ca.Issue(demopki.Options{CommonName: "ended", NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})),
		"server-only": demopki.Must(ca.Issue(demopki.Options{CommonName: "server", ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})),
	} {
		err := put(alias, c)
		var apiErr caddy.APIError
		if !errors.As(err, &apiErr) || apiErr.HTTPStatus != http.StatusBadRequest || !strings.Contains(apiErr.Err.Error(), "could never be accepted") {
			t.Fatalf("%s: %v", alias, err)
		}
		clients, err := s.Clients(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range clients {
			if c.Alias == alias {
				t.Fatalf("%s: stored", alias)
			}
		}
	}
	for alias, c := range map[string]*demopki.Cert{
		"self-signed-ca": ca,
		"not-yet":        demopki.Must(ca.Issue(demopki.Options{CommonName: "future", NotBefore: now.Add(time.Hour), NotAfter: now.Add(48 * time.Hour)})),
	} {
		if err := put(alias, c); err != nil {
			t.Fatalf("%s: %v", alias, err)
		}
	}
}

// TestClientGroupsAndCertificates: groups are given with PUT, listed and
// filtered on; a second certificate is added with POST .../certificates
// and one removed with DELETE .../certificates/<fingerprint>, with 404,
// 409 and 400 where the store refuses.
func TestClientGroupsAndCertificates(t *testing.T) {
	a, _ := newTestAPI(t)
	ca := demopki.Must(demopki.NewCA("Unit Root 3"))
	old := demopki.Must(ca.Issue(demopki.Options{CommonName: "svc"}))
	renewed := demopki.Must(ca.Issue(demopki.Options{CommonName: "svc2"}))
	ended := demopki.Must(ca.Issue(demopki.Options{CommonName: "ended", NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)}))
	call := func(method, uri string, body any) (int, []byte) {
		t.Helper()
		var rd io.Reader = http.NoBody
		if body != nil {
			data, _ := json.Marshal(body)
			rd = bytes.NewReader(data)
		}
		w, err := serveTest(a, httptest.NewRequest(method, uri, rd))
		var apiErr caddy.APIError
		if errors.As(err, &apiErr) {
			return apiErr.HTTPStatus, []byte(err.Error())
		}
		if err != nil {
			t.Fatal(err)
		}
		return w.Code, w.Body.Bytes()
	}
	list := func(uri string) []store.ClientInfo {
		t.Helper()
		status, body := call(http.MethodGet, uri, nil)
		var infos []store.ClientInfo
		if status != 200 || json.Unmarshal(body, &infos) != nil {
			t.Fatalf("%s: %d %s", uri, status, body)
		}
		return infos
	}

	if status, body := call(http.MethodPut, "/mtls/clients/svc", map[string]any{"certificate": string(old.CertPEM()), "tier": "gold", "groups": []string{"payments", "billing"}}); status != 200 ||
		!strings.Contains(string(body), `"groups":["billing","payments"]`) {
		t.Fatalf("put with groups: %d %s", status, body)
	}
	if status, _ := call(http.MethodPut, "/mtls/clients/bad", map[string]any{"certificate": string(renewed.CertPEM()), "groups": []string{"../x"}}); status != 400 {
		t.Fatalf("bad group: %d", status)
	}
	if got := list("/mtls/clients?group=payments"); len(got) != 1 || got[0].Alias != "svc" {
		t.Fatalf("group payments: %+v", got)
	}
	if got := list("/mtls/clients?group=nobody"); len(got) != 0 {
		t.Fatalf("group nobody: %+v", got)
	}
	if got := list("/mtls/clients"); len(got) != 2 || got[0].Alias != "keep" || got[0].Groups == nil || len(got[0].Certificates) != 1 {
		t.Fatalf("all: %+v", got)
	}
	if status, _ := call(http.MethodGet, "/mtls/clients?group=a/b", nil); status != 400 {
		t.Fatalf("bad group filter: %d", status)
	}

	// Rotation.
	certs := "/mtls/clients/svc/certificates"
	if status, _ := call(http.MethodPost, "/mtls/clients/nobody/certificates", map[string]string{"certificate": string(renewed.CertPEM())}); status != 404 {
		t.Fatalf("unknown alias: %d", status)
	}
	keep := list("/mtls/clients")[0]
	clients, _ := a.store().Clients(context.Background())
	if status, _ := call(http.MethodPost, certs, map[string]string{"certificate": clients[0].Certificate}); status != 409 {
		t.Fatalf("another alias's certificate: %d", status)
	}
	if status, _ := call(http.MethodPost, certs, map[string]string{"certificate": string(ended.CertPEM())}); status != 400 {
		t.Fatalf("an ended certificate: %d", status)
	}
	if status, _ := call(http.MethodPut, certs, map[string]string{"certificate": string(renewed.CertPEM())}); status != 405 {
		t.Fatalf("PUT to certificates: %d", status)
	}
	status, body := call(http.MethodPost, certs, map[string]string{"certificate": string(renewed.CertPEM())})
	var info store.ClientInfo
	if status != 200 || json.Unmarshal(body, &info) != nil || len(info.Certificates) != 2 || info.Subject != "CN=svc2" || info.Tier != "gold" {
		t.Fatalf("added: %d %s", status, body)
	}
	oldFP := info.Certificates[0].Fingerprint
	if status, _ := call(http.MethodDelete, certs+"/"+keep.Fingerprint, nil); status != 404 {
		t.Fatalf("another client's fingerprint: %d", status)
	}
	status, body = call(http.MethodDelete, certs+"/"+oldFP, nil)
	if status != 200 || json.Unmarshal(body, &info) != nil || len(info.Certificates) != 1 || info.Subject != "CN=svc2" {
		t.Fatalf("removed the old one: %d %s", status, body)
	}
	if status, _ := call(http.MethodDelete, certs+"/"+info.Fingerprint, nil); status != 409 {
		t.Fatalf("removed the last: %d", status)
	}
	if status, _ := call(http.MethodDelete, "/mtls/clients/svc", nil); status != 204 {
		t.Fatalf("delete the client: %d", status)
	}
}

// TestListClientsPaged: pages of `limit` clients, in alias order, each
// with a Link to the next while clients remain, add up to the listing
// without limit (streamed), with a group or without; bad paging is a 400.
func TestListClientsPaged(t *testing.T) {
	a, s := newTestAPI(t)
	ca := demopki.Must(demopki.NewCA("Paging Root"))
	for i := range 25 {
		c := demopki.Must(ca.Issue(demopki.Options{CommonName: fmt.Sprint("p", i)}))
		groups := []string{"all"}
		if i%3 == 0 {
			groups = append(groups, "third")
		}
		if _, err := s.PutClient(context.Background(), fmt.Sprintf("p%02d", i), "", string(c.CertPEM()), groups...); err != nil {
			t.Fatal(err)
		}
	}
	list := func(target string) ([]store.ClientInfo, string) {
		t.Helper()
		w, err := serveTest(a, httptest.NewRequest(http.MethodGet, target, nil))
		if err != nil || w.Code != http.StatusOK {
			t.Fatalf("GET %s: %d %v", target, w.Code, err)
		}
		var infos []store.ClientInfo
		if err := json.Unmarshal(w.Body.Bytes(), &infos); err != nil {
			t.Fatalf("GET %s: %v: %s", target, err, w.Body)
		}
		next := w.Header().Get("Link")
		if next != "" {
			next = strings.TrimSuffix(strings.TrimPrefix(next, "<"), `>; rel="next"`)
		}
		return infos, next
	}
	aliases := func(infos []store.ClientInfo) (out []string) {
		for _, i := range infos {
			out = append(out, i.Alias)
		}
		return out
	}
	for _, group := range []string{"", "third"} {
		q := ""
		if group != "" {
			q = "&group=" + group
		}
		whole, next := list("/mtls/clients?" + strings.TrimPrefix(q, "&"))
		if next != "" {
			t.Fatalf("a listing without limit has a next page: %s", next)
		}
		wantLen := 26
		if group != "" {
			wantLen = 9
		}
		if len(whole) != wantLen || !slices.IsSorted(aliases(whole)) {
			t.Fatalf("group %q: %d clients %v", group, len(whole), aliases(whole))
		}
		var paged []store.ClientInfo
		pages := 0
		for target := "/mtls/clients?limit=4" + q; target != ""; pages++ {
			page, next := list(target)
			if len(page) > 4 || (next != "" && len(page) != 4) {
				t.Fatalf("%s: a page of %d, next %q", target, len(page), next)
			}
			paged = append(paged, page...)
			target = next
		}
		if !slices.Equal(aliases(paged), aliases(whole)) || pages != (wantLen+3)/4 {
			t.Fatalf("group %q: %d pages of %v, want %v", group, pages, aliases(paged), aliases(whole))
		}
	}
	if page, next := list("/mtls/clients?limit=2&after=p23"); !slices.Equal(aliases(page), []string{"p24"}) || next != "" {
		t.Fatalf("last page: %v %q", aliases(page), next)
	}
	for _, bad := range []string{"limit=0", "limit=1001", "limit=x", "limit=", "after=..", "after=a/b", "group=%00"} {
		w, err := serveTest(a, httptest.NewRequest(http.MethodGet, "/mtls/clients?"+bad, nil))
		var apiErr caddy.APIError
		if !errors.As(err, &apiErr) || apiErr.HTTPStatus != http.StatusBadRequest {
			t.Errorf("?%s: %d %v", bad, w.Code, err)
		}
	}
}

// TestPutClientsRoute: POST /mtls/clients stores many clients at once, and
// refuses the whole batch (storing none) for one bad client.
func TestPutClientsRoute(t *testing.T) {
	a, s := newTestAPI(t)
	ca := demopki.Must(demopki.NewCA("Import Root"))
	var clients []store.NewClient
	for i := range 20 {
		c := demopki.Must(ca.Issue(demopki.Options{CommonName: fmt.Sprint("imp", i)}))
		clients = append(clients, store.NewClient{Alias: fmt.Sprint("imp", i), Certificate: string(c.CertPEM()), Groups: []string{"import"}})
	}
	post := func(clients []store.NewClient) (*httptest.ResponseRecorder, error) {
		body, _ := json.Marshal(map[string]any{"clients": clients})
		return serveTest(a, httptest.NewRequest(http.MethodPost, "/mtls/clients", bytes.NewReader(body)))
	}
	expired := demopki.Must(ca.Issue(demopki.Options{CommonName: "old", NotAfter: time.Now().Add(-time.Hour)}))
	for _, tc := range []struct {
		name   string
		edit   func([]store.NewClient) []store.NewClient
		status int
	}{
		{"expired", func(c []store.NewClient) []store.NewClient { c[5].Certificate = string(expired.CertPEM()); return c }, 400},
		{"bad alias", func(c []store.NewClient) []store.NewClient { c[5].Alias = "a b"; return c }, 400},
		{"none", func([]store.NewClient) []store.NewClient { return []store.NewClient{} }, 400},
	} {
		w, err := post(tc.edit(slices.Clone(clients)))
		var apiErr caddy.APIError
		if !errors.As(err, &apiErr) || apiErr.HTTPStatus != tc.status {
			t.Errorf("%s: %d %v", tc.name, w.Code, err)
		}
	}
	if all, _ := s.Clients(context.Background()); len(all) != 1 {
		t.Fatalf("refused imports stored %d clients", len(all)-1)
	}
	w, err := post(clients)
	if err != nil || w.Code != 200 || !strings.Contains(w.Body.String(), `"stored":20`) {
		t.Fatalf("import: %d %v %s", w.Code, err, w.Body)
	}
	w, err = serveTest(a, httptest.NewRequest(http.MethodGet, "/mtls/clients?group=import&limit=100", nil))
	var infos []store.ClientInfo
	if err != nil || json.Unmarshal(w.Body.Bytes(), &infos) != nil || len(infos) != 20 {
		t.Fatalf("listing the imported group: %v %s", err, w.Body)
	}
}

// TestPutClientsLimits: an import of store.MaxPutClients clients with
// RSA-2048 certificates (the largest usual) fits in one call's body; one
// client more is refused (400), and so is a body over the import's limit
// (413). Nothing refused is stored.
func TestPutClientsLimits(t *testing.T) {
	a, s := newTestAPI(t)
	ca := demopki.Must(demopki.NewCA("Import Root"))
	// Certificates differ by their serial and name only: one RSA-2048
	// certificate's PEM stands for each, with its own alias.
	one := demopki.Must(ca.Issue(demopki.Options{CommonName: "import-client-000000", RSABits: 2048}))
	var clients []store.NewClient
	for i := range store.MaxPutClients + 1 {
		c := demopki.Must(ca.Issue(demopki.Options{CommonName: fmt.Sprintf("import-client-%06d", i)}))
		clients = append(clients, store.NewClient{Alias: fmt.Sprintf("import-client-%06d", i), Tier: "gold", Groups: []string{"payments"}, Certificate: string(c.CertPEM())})
	}
	body := func(clients []store.NewClient) []byte {
		b, _ := json.Marshal(map[string]any{"clients": clients})
		return b
	}
	// The size of a batch of RSA-2048 certificates, of the most clients.
	padded := slices.Clone(clients[:store.MaxPutClients])
	for i := range padded {
		padded[i].Certificate = string(one.CertPEM())
	}
	if n := len(body(padded)); n > maxImportBody {
		t.Fatalf("%d clients with RSA-2048 certificates take %d bytes, over the import's %d", store.MaxPutClients, n, maxImportBody)
	}
	post := func(b []byte) (*httptest.ResponseRecorder, error) {
		return serveTest(a, httptest.NewRequest(http.MethodPost, "/mtls/clients", bytes.NewReader(b)))
	}
	var apiErr caddy.APIError
	if _, err := post(body(clients)); !errors.As(err, &apiErr) || apiErr.HTTPStatus != http.StatusBadRequest {
		t.Fatalf("%d clients: %v", len(clients), err)
	}
	big := append(body(clients[:1])[:0:0], body(clients[:1])...)
	big = append(big[:len(big)-1], []byte(strings.Repeat(" ", maxImportBody))...)
	big = append(big, '}')
	if _, err := post(big); !errors.As(err, &apiErr) || apiErr.HTTPStatus != http.StatusRequestEntityTooLarge ||
		!strings.Contains(apiErr.Message, fmt.Sprintf("larger than %d KiB", maxImportBody>>10)) {
		t.Fatalf("a body over %d bytes: %v", maxImportBody, err)
	}
	checkOnlyKeep(t, s)
	w, err := post(body(clients[:store.MaxPutClients]))
	if err != nil || !strings.Contains(w.Body.String(), fmt.Sprintf(`"stored":%d`, store.MaxPutClients)) {
		t.Fatalf("%d clients: %v %s", store.MaxPutClients, err, w.Body)
	}
}

// deadlineStorage records the latest deadline of the contexts its Store
// calls get.
type deadlineStorage struct {
	certmagic.Storage
	mu       sync.Mutex
	deadline time.Time
}

func (d *deadlineStorage) Store(ctx context.Context, key string, value []byte) error {
	if dl, ok := ctx.Deadline(); ok {
		d.mu.Lock()
		d.deadline = dl
		d.mu.Unlock()
	}
	return d.Storage.Store(ctx, key, value)
}

// TestImportTimeout: an import runs within store.Timeout, as every change
// does; only a whole listing (GET without limit) gets listAllTimeout.
func TestImportTimeout(t *testing.T) {
	a, _ := newTestAPI(t)
	ds := &deadlineStorage{Storage: a.storage}
	a.storage = ds
	ca := demopki.Must(demopki.NewCA("Import Root"))
	c := demopki.Must(ca.Issue(demopki.Options{CommonName: "imp"}))
	body, _ := json.Marshal(map[string]any{"clients": []store.NewClient{{Alias: "imp", Certificate: string(c.CertPEM())}}})
	start := time.Now()
	if _, err := serveTest(a, httptest.NewRequest(http.MethodPost, "/mtls/clients", bytes.NewReader(body))); err != nil {
		t.Fatal(err)
	}
	if ds.deadline.IsZero() || ds.deadline.After(start.Add(store.Timeout+time.Second)) {
		t.Fatalf("import ran with deadline %v after its start, want at most %v", ds.deadline.Sub(start), store.Timeout)
	}
}
