//go:build integration

package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/open-lambda/ol-shim/internal/testpki"
)

// TestServeTLSReload: the clients' CA of the TLS listener changes at
// SIGHUP (systemctl reload), without a restart: a client of the CA taken
// off is refused at its next connection, one of the new CA is served, and
// a CA file that does not load is refused, the one in force kept.
func TestServeTLSReload(t *testing.T) {
	dir := t.TempDir()
	old, next := testpki.NewCA(t, dir, "old"), testpki.NewCA(t, dir, "next")
	server := old.Server(t, "host-1")
	clients := filepath.Join(dir, "clients.pem")
	copyCA := func(ca *testpki.CA) {
		b, err := os.ReadFile(ca.File)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(clients, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	copyCA(old)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	d := newDaemonWith(t, "", func(d *testDaemon) {
		d.extra = []string{"--tls-listen", addr, "--tls-cert", server.Cert, "--tls-key", server.Key, "--tls-ca", clients}
	})
	t.Cleanup(func() { copyCA(next) }) // the daemon's cleanup starts it again
	alice, bob := old.Client(t, "alice"), next.Client(t, "bob")
	status := func(p testpki.Pair) (string, int) {
		_, stderr, code := d.cli("", "--host", "tcp://"+addr, "--tlscacert", old.File, "--tlscert", p.Cert, "--tlskey", p.Key, "pool", "ls")
		return stderr, code
	}
	if stderr, code := status(alice); code != 0 {
		t.Fatalf("alice (old CA) before the reload: exit %d: %s", code, stderr)
	}
	if _, code := status(bob); code == 0 {
		t.Fatal("bob (next CA) served before the reload")
	}
	hup := func() {
		t.Helper()
		mark := len(d.log.String())
		d.cmd.Process.Signal(syscall.SIGHUP)
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(d.log.String()[mark:], "TLS") {
			if time.Now().After(deadline) {
				t.Fatalf("no log line of the TLS reload; log:\n%s", d.log.String()[mark:])
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	copyCA(next)
	hup()
	if _, code := status(alice); code == 0 {
		t.Error("alice (old CA, taken off) served after the reload")
	}
	if stderr, code := status(bob); code != 0 {
		t.Errorf("bob (next CA) after the reload: exit %d: %s", code, stderr)
	}
	if err := os.WriteFile(clients, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	hup()
	if !strings.Contains(d.log.String(), "TLS files refused") || !strings.Contains(d.log.String(), clients) {
		t.Errorf("a broken CA file at reload: no log line naming it:\n%s", d.log.String())
	}
	if stderr, code := status(bob); code != 0 {
		t.Errorf("bob after a refused reload: exit %d: %s", code, stderr)
	}
}
