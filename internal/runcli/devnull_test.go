package runcli

import (
	"os"
	"path/filepath"
	"testing"
)

// TestIsDevNull: stdin from /dev/null is not sent (the command gets its
// own); from a pipe or a file it is.
func TestIsDevNull(t *testing.T) {
	null, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	file, err := os.Create(filepath.Join(t.TempDir(), "in"))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	zero, err := os.Open("/dev/zero")
	if err != nil {
		t.Fatal(err)
	}
	defer zero.Close()
	for f, want := range map[*os.File]bool{null: true, r: false, file: false, zero: false} {
		if got := isDevNull(f); got != want {
			t.Errorf("isDevNull(%s) = %v, want %v", f.Name(), got, want)
		}
	}
}
