// Package units parses the human-readable sizes ol-shim's configuration,
// API and volume options accept. It is a leaf: the API's wire types and the
// volume plugin both use it.
package units

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ParseSize parses a byte count with an optional K, M, G or T suffix
// (powers of 1024; a trailing "B" or "iB" is allowed): "64M", "1G", "4096".
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if len(s) > 40 {
		return 0, fmt.Errorf("size %q...: want a whole number of bytes with an optional K, M, G or T suffix", s[:40])
	}
	t = strings.TrimSuffix(strings.TrimSuffix(t, "B"), "i")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		case 't', 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			t = t[:n-1]
		}
	}
	if t == "" || strings.TrimLeft(t, "0123456789") != "" {
		return 0, fmt.Errorf("size %q: want a whole number of bytes with an optional K, M, G or T suffix", s)
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("size %q: too large", s)
	}
	if n == 0 {
		return 0, fmt.Errorf("size %q: must be positive", s)
	}
	return n * mult, nil
}
