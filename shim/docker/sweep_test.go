package docker

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadProc: readProc reads a whole file past its first buffer, as
// os.ReadFile does, and names the file it cannot open.
func TestReadProc(t *testing.T) {
	big := filepath.Join(t.TempDir(), "big")
	want := bytes.Repeat([]byte("0123456789abcdef"), 1000) // 16000 bytes
	if err := os.WriteFile(big, want, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{0, 1, 512, 16000, 20000} {
		got, err := readProc(big, make([]byte, 0, size))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("buffer of %d: %d bytes, %v; want the file's %d", size, len(got), err, len(want))
		}
	}
	// A file of /proc, whose size stat does not give.
	got, err := readProc("/proc/self/status", nil)
	if err != nil || !strings.Contains(string(got), "\nPid:\t") {
		t.Errorf("/proc/self/status: %q, %v", got, err)
	}
	missing := filepath.Join(t.TempDir(), "missing")
	if _, err := readProc(missing, nil); !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing file: %v, want a not-exist error naming it", err)
	}
}

// TestProcStatOfSelf: the start time and parent read from /proc/PID/stat
// are this process's.
func TestProcStatOfSelf(t *testing.T) {
	start, state, ppid, ok := procStatParent(os.Getpid())
	if !ok || start == 0 || ppid != os.Getppid() || state == 0 {
		t.Errorf("procStatParent(self) = %d, %q, %d, %v; want a start time, a state, parent %d", start, state, ppid, ok, os.Getppid())
	}
	if _, _, _, ok := procStatParent(1 << 30); ok {
		t.Error("procStatParent of a pid that cannot exist: ok")
	}
	// A Go test binary runs several threads: what procThreads reads is the
	// kernel's count, which /proc/PID/task lists one by one.
	tasks, _ := os.ReadDir("/proc/self/task")
	if n := procThreads(os.Getpid()); n < 2 || n > len(tasks)+8 {
		t.Errorf("procThreads(self) = %d; /proc/self/task lists %d", n, len(tasks))
	}
	if n := procThreads(1 << 30); n != 0 {
		t.Errorf("procThreads of a pid that cannot exist = %d", n)
	}
}
