package units

import (
	"strings"
	"testing"
)

// TestParseSizeAsDocker: sizes read as docker run's --memory reads them.
func TestParseSizeAsDocker(t *testing.T) {
	for in, want := range map[string]int64{
		"4096": 4096, "64M": 64 << 20, "64m": 64 << 20, "64mb": 64 << 20, "64MiB": 64 << 20, "1.5g": 3 << 29,
		"1G": 1 << 30, "2t": 2 << 40, "512k": 512 << 10, " 8M ": 8 << 20, "1p": 1 << 50,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, why := range map[string]string{
		"0": "positive", "0.1": "positive", "-1": "want a number", "abc": "want a number", "64x": "want a number",
		"99999999999T": "too large", "": "want a number", strings.Repeat("9", 50): "too long",
	} {
		if _, err := ParseSize(in); err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("ParseSize(%q): %v; want an error saying %q", in, err, why)
		}
	}
}
