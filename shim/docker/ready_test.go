package docker

import (
	"net"
	"os"
	"path/filepath"
	"testing"
)

// TestReadinessStaysInScratch: the readiness check, run as root on the host,
// sees what is in the sandbox's scratch directory, and through a symlink
// planted there neither a host file nor a host socket.
func TestReadinessStaysInScratch(t *testing.T) {
	host := t.TempDir()
	hostFile := filepath.Join(host, "secret")
	if err := os.WriteFile(hostFile, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	hostSock := filepath.Join(host, "host.sock")
	l, err := net.Listen("unix", hostSock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	scratch := t.TempDir()
	for name, target := range map[string]string{"abs-file": hostFile, "abs-sock": hostSock, "rel-file": "../../../../../../../" + hostFile, "rel-sock": "../../../../../../../" + hostSock} {
		if err := os.Symlink(target, filepath.Join(scratch, name)); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"abs-file", "rel-file"} {
		if inScratch(scratch, name, false) {
			t.Errorf("%s: the check followed a symlink to a host file", name)
		}
	}
	for _, name := range []string{"abs-sock", "rel-sock"} {
		if inScratch(scratch, name, true) {
			t.Errorf("%s: the check connected to a host socket through a symlink", name)
		}
	}
	// What is really inside counts.
	if err := os.WriteFile(filepath.Join(scratch, "ready"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	own, err := net.Listen("unix", filepath.Join(scratch, "ol.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer own.Close()
	go func() {
		for {
			c, err := own.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if !inScratch(scratch, "ready", false) || !inScratch(scratch, "ol.sock", true) {
		t.Error("the check misses a file or socket inside the scratch directory")
	}
	if inScratch(scratch, "ready", true) {
		t.Error("a plain file passed as a socket")
	}
}
