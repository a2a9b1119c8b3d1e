package safe

import (
	"errors"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestDecode(t *testing.T) {
	before := testutil.ToFloat64(Panics.WithLabelValues("decode"))
	v, err := Decode("keystore gw.p12", func() (int, error) {
		var m map[string]int
		m["boom"] = 1 // a nil map: panics
		return 1, nil
	})
	if v != 0 || !errors.Is(err, ErrPanic) || !strings.Contains(err.Error(), "keystore gw.p12") {
		t.Fatalf("a panicking decoder: %d, %v", v, err)
	}
	if got := testutil.ToFloat64(Panics.WithLabelValues("decode")); got != before+1 {
		t.Fatalf("panics counted: %v, want %v", got, before+1)
	}
	if v, err := Decode("x", func() (int, error) { return 7, nil }); v != 7 || err != nil {
		t.Fatalf("a good decoder: %d, %v", v, err)
	}
}

func TestRun(t *testing.T) {
	before := testutil.ToFloat64(Panics.WithLabelValues("background"))
	Run("test task", nil, func() { panic("boom") })
	if got := testutil.ToFloat64(Panics.WithLabelValues("background")); got != before+1 {
		t.Fatalf("panics counted: %v, want %v", got, before+1)
	}
	ran := false
	Run("test task", nil, func() { ran = true })
	if !ran {
		t.Fatal("fn not run")
	}
}
