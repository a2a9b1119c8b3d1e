package upstream

import (
	"fmt"
	"strings"
	"testing"
)

// manyWildcards is a profiles file of one profile with n wildcard servers
// (*.tenant<i>.example:443) and n exact ones, as a large WSO2 or Choreo
// estate has them.
func manyWildcards(n int) string {
	var b strings.Builder
	b.WriteString(`{"profiles":[{"servers":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"*.tenant%d.example:443","api%d.example:8443"`, i, i)
	}
	b.WriteString(`]}]}`)
	return b.String()
}

// TestManyPatterns: wildcard matching keeps its order (exact, then the
// longest suffix, the pattern with the port before the one without, then the
// host alone) in a set of 100,000 patterns.
func TestManyPatterns(t *testing.T) {
	set := newProfileSet()
	big, deep, deepPort, any, exact, hostOnly := &profile{name: "big"}, &profile{name: "deep"}, &profile{name: "deep:443"}, &profile{name: "any"}, &profile{name: "exact"}, &profile{name: "host"}
	var patterns []string
	for i := range 50_000 {
		patterns = append(patterns, fmt.Sprintf("*.tenant%d.example:443", i), fmt.Sprintf("api%d.example:8443", i))
	}
	for _, c := range []struct {
		p        *profile
		patterns []string
	}{
		{big, patterns},
		{deep, []string{"*.a.tenant7.example"}},
		{deepPort, []string{"*.a.tenant7.example:443"}},
		{any, []string{"*.example"}},
		{exact, []string{"x.a.tenant7.example:443"}},
		{hostOnly, []string{"solo.internal"}},
	} {
		if err := set.add(c.p, c.patterns); err != nil {
			t.Fatal(err)
		}
	}
	if err := set.add(&profile{name: "again"}, []string{"*.tenant9.example:443"}); err == nil || !strings.Contains(err.Error(), "given twice (profiles big and again)") {
		t.Fatalf("a wildcard given twice: %v", err)
	}
	for addr, want := range map[string]*profile{
		"x.a.tenant7.example:443":  exact,
		"y.a.tenant7.example:443":  deepPort,
		"y.a.tenant7.example:80":   deep,
		"Y.A.Tenant7.Example.:443": deepPort,
		"a.tenant7.example:443":    big,
		"a.tenant7.example:80":     any,
		"api3.example:8443":        big,
		"api3.example:443":         any,
		"tenant7.example:443":      any,
		"solo.internal:9443":       hostOnly,
		".example:443":             nil,
		"example:443":              nil,
		"other.test:443":           nil,
	} {
		if got := set.match(addr); got != want {
			t.Errorf("match(%s) = %v, want %v", addr, got, want)
		}
	}
}

// BenchmarkProfilesFileWildcards loads a profiles file of 300,000 wildcard
// and 300,000 exact servers, near the 16 MiB a profiles file may have:
// 100,000 wildcards took 24 s when each was checked against every other.
func BenchmarkProfilesFileWildcards(b *testing.B) {
	data := []byte(manyWildcards(300_000))
	if len(data) > maxProfilesFile {
		b.Fatalf("%d bytes: over the profiles file limit", len(data))
	}
	tr := mustTransport(b, `{}`)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		profiles, _, err := parseProfilesFile(data, b.TempDir())
		if err != nil {
			b.Fatal(err)
		}
		built, _, _, err := tr.buildFileProfiles(profiles)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := tr.merge(built); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMatchManyWildcards: one lookup among 100,000 wildcards.
func BenchmarkMatchManyWildcards(b *testing.B) {
	set := newProfileSet()
	var patterns []string
	for i := range 100_000 {
		patterns = append(patterns, fmt.Sprintf("*.tenant%d.example:443", i))
	}
	if err := set.add(&profile{name: "big"}, patterns); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if set.match("api.tenant99999.example:443") == nil {
			b.Fatal("no match")
		}
	}
}
