//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/open-lambda/ol-shim/internal/testpki"
	"github.com/open-lambda/ol-shim/shim/api"
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

// TestServeTLSProxiesReload: a front end taken off [daemon] tls_proxies
// stops speaking for clients at SIGHUP, without a restart: its
// X-OL-Shim-Client header is then ignored and its requests are its own.
func TestServeTLSProxiesReload(t *testing.T) {
	dir := t.TempDir()
	ca := testpki.NewCA(t, dir, "cluster")
	server, proxy := ca.Server(t, "host-1"), ca.Client(t, "proxy")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	conf := func(proxies string) string {
		return "[daemon]\ntls_proxies = [" + proxies + "]\n" + bbConfig
	}
	d := newDaemonWith(t, conf(`"CN=proxy"`), func(d *testDaemon) {
		d.extra = []string{"--tls-listen", addr, "--tls-cert", server.Cert, "--tls-key", server.Key, "--tls-ca", ca.File}
	})
	d.waitIdle("bb", 1)
	acquireFor := func(client string) string {
		t.Helper()
		cfg, err := api.Remote{Host: "tcp://" + addr, CACert: ca.File, Cert: proxy.Cert, Key: proxy.Key}.TLSConfig()
		if err != nil {
			t.Fatal(err)
		}
		tr := &http.Transport{TLSClientConfig: cfg}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest("POST", "https://"+addr+"/v1/acquire", strings.NewReader(`{"pool":"bb","timeout":"30s"}`))
		req.Header.Set("X-OL-Shim-Client", client)
		resp, err := (&http.Client{Transport: tr, Timeout: 40 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var lease api.Lease
		if err := json.NewDecoder(resp.Body).Decode(&lease); err != nil || lease.ID == "" {
			t.Fatalf("acquire through the proxy: %d, %v", resp.StatusCode, err)
		}
		if err := d.c.Release(context.Background(), lease.ID); err != nil {
			t.Fatal(err)
		}
		return lease.Client
	}
	if who := acquireFor("CN=alice"); who != "CN=alice" {
		t.Fatalf("the trusted proxy for alice: lease of %q", who)
	}
	if err := os.WriteFile(d.config, []byte(conf("")), 0o644); err != nil {
		t.Fatal(err)
	}
	mark := len(d.log.String())
	d.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(d.log.String()[mark:], "reloaded") {
		if time.Now().After(deadline) {
			t.Fatalf("no log line of the reload:\n%s", d.log.String()[mark:])
		}
		time.Sleep(20 * time.Millisecond)
	}
	if who := acquireFor("CN=alice"); who != "CN=proxy" {
		t.Errorf("a proxy taken off tls_proxies, after SIGHUP, still speaks for %q", who)
	}
}
