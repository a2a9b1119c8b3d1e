package upstream

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddytls"
	"go.uber.org/zap"

	"github.com/caddy-mtls/caddy-mtls/internal/bounded"
	"github.com/caddy-mtls/caddy-mtls/internal/safe"
	"github.com/caddy-mtls/caddy-mtls/keystore"
	"github.com/caddy-mtls/caddy-mtls/metrics"
	"github.com/caddy-mtls/caddy-mtls/trustpool"
)

// profilesFile is the state of a watched profiles file.
type profilesFile struct {
	path    string
	baseDir string             // relative paths in the file resolve against it
	cancel  context.CancelFunc // stops watching

	mu      sync.Mutex        // serializes attempts, guards the fields below
	state   [sha256.Size]byte // of the file and the files it names, as last tried
	deps    []string          // the files the profiles of the last attempt name
	lastErr string            // the last error logged, so as not to repeat it
	noted   [sha256.Size]byte // of the file whose unapplied WSO2 elements were last logged
	modules []caddy.Module    // trust pool modules of the profiles in force
	stopped bool
}

// maxProfilesFile bounds the size of a profiles file.
const maxProfilesFile = 16 << 20

// stateOf digests the file's content and the size and time of each file
// its profiles name (keystores, PEM files), so that replacing a keystore
// the file points to counts as a change too.
func stateOf(data []byte, deps []string) [sha256.Size]byte {
	h := sha256.New()
	h.Write(data)
	for _, d := range deps {
		fmt.Fprintf(h, "\x00%s", d)
		if fi, err := os.Stat(d); err == nil {
			fmt.Fprintf(h, "\x00%d\x00%d", fi.Size(), fi.ModTime().UnixNano())
		}
	}
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return sum
}

// attempt builds the profiles of data, a new version of the file, and the
// set they make with the configured profiles; on success it puts them in
// force. f.mu must be held.
func (f *profilesFile) attempt(t *Transport, data []byte) (int, error) {
	var built []*profile
	var mods []caddy.Module
	var deps []string
	err := safe.Do("profiles file "+f.path, func() error {
		profiles, unapplied, err := parseProfilesFile(data, f.baseDir)
		if err != nil {
			return err
		}
		f.noteUnapplied(t.logger, data, unapplied)
		built, mods, deps, err = t.buildFileProfiles(profiles)
		return err
	})
	f.deps = deps
	f.state = stateOf(data, deps)
	var set *profileSet
	if err == nil {
		set, err = t.merge(built)
	}
	if err != nil {
		cleanupModules(mods)
		return 0, err
	}
	old := t.profiles.Swap(set)
	t.trackExpiry(set)
	cleanupModules(f.modules)
	f.modules = mods
	if old != nil {
		t.closeRetired(old, set)
	}
	return len(built), nil
}

func (f *profilesFile) stop() {
	if f.cancel != nil {
		f.cancel()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped = true
	cleanupModules(f.modules)
	f.modules = nil
}

// profilesBaseDir returns the directory relative paths in the profiles
// file resolve against: configured, its placeholders replaced, which must
// be a directory; by default the file's folder.
func profilesBaseDir(file, configured string) (string, error) {
	if configured == "" {
		return filepath.Dir(file), nil
	}
	dir, err := caddy.NewReplacer().ReplaceOrErr(configured, true, true)
	if err != nil {
		return "", fmt.Errorf("profiles_base_dir %s: %w", configured, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return "", fmt.Errorf("profiles_base_dir: %w", err)
	}
	if !fi.IsDir() {
		return "", fmt.Errorf("profiles_base_dir %s: not a directory", dir)
	}
	return dir, nil
}

// reload puts the file's profiles in force if it changed and is good; a
// broken or missing file is logged (once per distinct reason) and the last
// good profiles stay.
func (t *Transport) reload() {
	f := t.file
	data, err := bounded.ReadFile(f.path, maxProfilesFile)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.stopped {
		return
	}
	n := 0
	if err == nil {
		if stateOf(data, f.deps) == f.state {
			// Readable again and as last tried: whatever made it
			// unreadable is over, and is logged again if it comes back.
			f.lastErr = ""
			return
		}
		n, err = f.attempt(t, data)
	}
	if err != nil {
		if msg := err.Error(); msg != f.lastErr {
			f.lastErr = msg
			metrics.ProfilesFileRejected(f.path)
			t.logger.Error("profiles file rejected; the last good profiles stay in force",
				zap.String("file", f.path), zap.Error(err))
		}
		return
	}
	f.lastErr = ""
	metrics.ProfilesFileReloaded(f.path)
	t.logger.Info("profiles file reloaded", zap.String("file", f.path), zap.Int("profiles", n))
}

// closeRetired closes the idle connections of the profiles of old that are
// not in set. Requests in flight finish on their connections; those that
// come back idle later are closed by their idle timeout.
func (t *Transport) closeRetired(old, set *profileSet) {
	current := map[*profile]bool{}
	for _, p := range set.all {
		current[p] = true
	}
	for _, p := range old.all {
		if !current[p] {
			p.retire()
		}
	}
	t.pools.drop(func(p *profile) bool { return current[p] })
}

// profilesJSON is the JSON profiles file.
type profilesJSON struct {
	Profiles []*Profile `json:"profiles"`
}

// noteUnapplied logs, once per version of the file, the elements of a
// WSO2 file that the transport does not apply: one warning per profile that
// has some (and one for those outside any profile), naming them, never
// their values. f.mu must be held.
func (f *profilesFile) noteUnapplied(logger *zap.Logger, data []byte, unapplied []unappliedElements) {
	sum := sha256.Sum256(data)
	if sum == f.noted {
		return
	}
	f.noted = sum
	for _, u := range unapplied {
		fields := []zap.Field{zap.String("file", f.path)}
		if len(u.servers) > 0 {
			fields = append(fields, zap.Strings("servers", u.servers))
		}
		fields = append(fields, zap.Strings("elements", u.names))
		logger.Warn("WSO2 SSL profiles file: elements not applied", fields...)
	}
}

// buildFileProfiles builds the profiles of a profiles file. It returns the
// trust pool modules it provisioned and the files the profiles name.
func (t *Transport) buildFileProfiles(profiles []*Profile) (built []*profile, mods []caddy.Module, deps []string, err error) {
	for _, p := range profiles {
		if p != nil {
			deps = append(deps, p.files()...)
		}
	}
	// Many profiles name the same keystore: each file is looked at once
	// per reload.
	slices.Sort(deps)
	deps = slices.Compact(deps)
	for i, p := range profiles {
		if p == nil {
			return nil, mods, deps, fmt.Errorf("profile %d: null", i+1)
		}
		b, err := t.buildProfile(p, func(p *Profile) (caddytls.CA, error) {
			ca, mod, err := trustpool.LoadStandalone(t.ctx, p.TrustPoolRaw)
			if mod != nil {
				mods = append(mods, mod)
			}
			return ca, err
		})
		if err != nil {
			return nil, mods, deps, fmt.Errorf("profile %d (%s): %w", i+1, profileName(p), err)
		}
		built = append(built, b)
	}
	return built, mods, deps, nil
}

// parseProfilesFile parses a profiles file: WSO2's XML when it starts
// with '<', else JSON. Relative paths in it resolve against dir. For a WSO2
// file it also returns the elements it does not apply.
func parseProfilesFile(data []byte, dir string) ([]*Profile, []unappliedElements, error) {
	trimmed := bytes.TrimLeft(data, " \t\r\n\ufeff")
	if bytes.HasPrefix(trimmed, []byte("<")) {
		return parseWSO2(trimmed, dir)
	}
	var doc profilesJSON
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, nil, fmt.Errorf("parsing JSON: %w", err)
	}
	if dec.More() {
		return nil, nil, errors.New("parsing JSON: data after the profiles object")
	}
	for i, p := range doc.Profiles {
		if p == nil {
			continue // refused when built, with its number
		}
		if err := p.resolvePaths(dir); err != nil {
			return nil, nil, fmt.Errorf("profile %d (%s): %w", i+1, profileName(p), err)
		}
	}
	return doc.Profiles, nil, nil
}

// resolvePaths makes the relative file paths of a profile read from a
// profiles file relative to dir: its keystore, PEM key pair, trust pool
// files and CRL files.
func (p *Profile) resolvePaths(dir string) error {
	p.ClientCertificateFile = resolvePath(dir, p.ClientCertificateFile)
	p.ClientKeyFile = resolvePath(dir, p.ClientKeyFile)
	if p.ClientKeystore != nil {
		p.ClientKeystore.File = resolvePath(dir, p.ClientKeystore.File)
	}
	if p.Revocation != nil {
		for i, crl := range p.Revocation.CRLs {
			if !strings.Contains(crl, "://") {
				p.Revocation.CRLs[i] = resolvePath(dir, crl)
			}
		}
	}
	if len(p.TrustPoolRaw) == 0 {
		return nil
	}
	var pool map[string]json.RawMessage
	if json.Unmarshal(p.TrustPoolRaw, &pool) != nil || pool["pem_files"] == nil {
		return nil // not a file pool: refused or loaded as it is
	}
	var files []string
	if err := json.Unmarshal(pool["pem_files"], &files); err != nil {
		return fmt.Errorf("trust_pool pem_files: %w", err)
	}
	for i, f := range files {
		files[i] = resolvePath(dir, f)
	}
	var err error
	if pool["pem_files"], err = json.Marshal(files); err != nil {
		return err
	}
	p.TrustPoolRaw, err = json.Marshal(pool)
	return err
}

// files returns the files the profile names, for change detection.
func (p *Profile) files() []string {
	if resolved, err := p.withEnv(); err == nil {
		p = resolved // the files it reads
	}
	var out []string
	for _, f := range []string{p.ClientCertificateFile, p.ClientKeyFile, p.trustFile} {
		if f != "" {
			out = append(out, f)
		}
	}
	if p.ClientKeystore != nil {
		out = append(out, p.ClientKeystore.File)
	}
	return append(out, trustpool.Files(p.TrustPoolRaw)...)
}

func cleanupModules(mods []caddy.Module) {
	for _, m := range mods {
		if c, ok := m.(caddy.CleanerUpper); ok {
			_ = c.Cleanup()
		}
	}
}

// wso2Profiles is WSO2 API Manager's multi_ssl_profiles.xml, as Synapse's
// HTTPS sender reads it. The ",any" fields keep what else a file has, so
// that it can be named rather than silently ignored.
type wso2Profiles struct {
	XMLName    xml.Name      `xml:"parameter"`
	Name       string        `xml:"name,attr"`
	Profiles   []wso2Profile `xml:"profile"`
	OtherAttrs []xml.Attr    `xml:",any,attr"`
	Other      []wso2Other   `xml:",any"`
}

type wso2Profile struct {
	Servers    string          `xml:"servers"`
	TrustStore *wso2TrustStore `xml:"TrustStore"`
	KeyStore   *wso2KeyStore   `xml:"KeyStore"`
	OtherAttrs []xml.Attr      `xml:",any,attr"`
	Other      []wso2Other     `xml:",any"`
}

type wso2TrustStore struct {
	Location   string      `xml:"Location"`
	Type       string      `xml:"Type"`
	Password   string      `xml:"Password"`
	OtherAttrs []xml.Attr  `xml:",any,attr"`
	Other      []wso2Other `xml:",any"`
}

type wso2KeyStore struct {
	Location    string      `xml:"Location"`
	Type        string      `xml:"Type"`
	Password    string      `xml:"Password"`
	KeyPassword string      `xml:"KeyPassword"`
	OtherAttrs  []xml.Attr  `xml:",any,attr"`
	Other       []wso2Other `xml:",any"`
}

// wso2Other is an element the transport does not apply; only its name is
// kept.
type wso2Other struct {
	XMLName xml.Name
}

// unappliedElements names the elements and attributes of a WSO2 file that
// the transport does not apply, with the servers of their profile (none
// for those outside any profile).
type unappliedElements struct {
	servers []string
	names   []string
}

// unapplied appends to names the unknown attributes of element (as
// `<element attr>`) and its unknown children (as `<parent><child>`).
func unapplied(names []string, parent, element string, attrs []xml.Attr, others []wso2Other) []string {
	for _, a := range attrs {
		names = append(names, "<"+element+" "+xmlName(a.Name)+">")
	}
	for _, o := range others {
		names = append(names, parent+"<"+xmlName(o.XMLName)+">")
	}
	return names
}

func xmlName(n xml.Name) string {
	if n.Space != "" {
		return n.Space + ":" + n.Local
	}
	return n.Local
}

// parseWSO2 turns a multi_ssl_profiles.xml into profiles. Relative
// Locations resolve against dir, as WSO2 resolves them against its home.
func parseWSO2(data []byte, dir string) ([]*Profile, []unappliedElements, error) {
	var doc wso2Profiles
	dec := xml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, nil, fmt.Errorf("parsing WSO2 SSL profiles XML: %w", err)
	}
	if len(doc.Profiles) == 0 {
		return nil, nil, errors.New("WSO2 SSL profiles XML has no <profile>")
	}
	var notes []unappliedElements
	if names := unapplied(nil, "", "parameter", doc.OtherAttrs, doc.Other); len(names) > 0 {
		notes = append(notes, unappliedElements{names: names})
	}
	var out []*Profile
	for i, wp := range doc.Profiles {
		p := &Profile{}
		for s := range strings.SplitSeq(wp.Servers, ",") {
			if s = strings.TrimSpace(s); s != "" {
				p.Servers = append(p.Servers, s)
			}
		}
		if len(p.Servers) == 0 {
			return nil, nil, fmt.Errorf("<profile> %d has no <servers>", i+1)
		}
		names := unapplied(nil, "", "profile", wp.OtherAttrs, wp.Other)
		if ts := wp.TrustStore; ts != nil {
			names = unapplied(names, "<TrustStore>", "TrustStore", ts.OtherAttrs, ts.Other)
			path, err := wso2Location(dir, ts.Location)
			if err != nil {
				return nil, nil, fmt.Errorf("<profile> %d (%s) TrustStore: %w", i+1, p.Servers[0], err)
			}
			typ, err := keystore.ParseType(strings.TrimSpace(ts.Type), path)
			if err != nil {
				return nil, nil, fmt.Errorf("<profile> %d (%s) TrustStore: %w", i+1, p.Servers[0], err)
			}
			st, err := keystore.Load(path, typ, caddy.NewReplacer().ReplaceKnown(ts.Password, ""), "")
			if err != nil {
				return nil, nil, fmt.Errorf("<profile> %d (%s) TrustStore %s: %w", i+1, p.Servers[0], filepath.Base(path), err)
			}
			p.trustFile = path
			p.trustDeclared, p.trustReadAs = typ, st.Type
			p.trustPool = st.Trusted
			if p.trustPool == nil {
				p.trustPool = []*x509.Certificate{}
			}
		}
		if ks := wp.KeyStore; ks != nil {
			names = unapplied(names, "<KeyStore>", "KeyStore", ks.OtherAttrs, ks.Other)
			path, err := wso2Location(dir, ks.Location)
			if err != nil {
				return nil, nil, fmt.Errorf("<profile> %d (%s) KeyStore: %w", i+1, p.Servers[0], err)
			}
			p.ClientKeystore = &Keystore{File: path, Type: strings.TrimSpace(ks.Type), Password: ks.Password, KeyPassword: ks.KeyPassword}
		}
		if len(names) > 0 {
			notes = append(notes, unappliedElements{servers: p.Servers, names: names})
		}
		out = append(out, p)
	}
	return out, notes, nil
}

// wso2Location resolves a WSO2 <Location> against dir, the WSO2 home
// (base_dir): relative to it, or starting with WSO2's ${carbon.home}, which
// stands for it. Another ${...} variable is an error.
func wso2Location(dir, location string) (string, error) {
	location = strings.TrimSpace(location)
	if rest, ok := strings.CutPrefix(location, "${carbon.home}"); ok && (rest == "" || rest[0] == '/' || rest[0] == '\\') {
		location = filepath.Join(dir, rest)
	}
	if i := strings.Index(location, "${"); i >= 0 {
		end := strings.IndexByte(location[i:], '}')
		if end < 0 {
			end = len(location) - i - 1
		}
		return "", fmt.Errorf("<Location> %.200q: WSO2 variable %.100s is not known here (only ${carbon.home}, which stands for base_dir)", location, location[i:i+end+1])
	}
	return resolvePath(dir, location), nil
}

// resolvePath resolves a relative path against dir. An absolute path, and
// one that starts with a placeholder (`{env.HOME}/x.p12`), is taken as
// written.
func resolvePath(dir, location string) string {
	location = strings.TrimSpace(location)
	if location == "" || filepath.IsAbs(location) || strings.HasPrefix(location, "{") {
		return location
	}
	return filepath.Join(dir, location)
}
