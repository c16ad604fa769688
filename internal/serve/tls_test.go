package serve

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/open-lambda/ol-shim/internal/testpki"
)

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestTLSFilesReload: a renewed server certificate and a changed client
// CA take effect at Reload, without a restart: a client whose CA was taken
// off is refused at its next handshake, one of the new CA is served, and
// files that do not load keep the configuration in force.
func TestTLSFilesReload(t *testing.T) {
	dir := t.TempDir()
	old, next := testpki.NewCA(t, dir, "old"), testpki.NewCA(t, dir, "next")
	cert, key, ca := filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"), filepath.Join(dir, "clients.pem")
	use := func(s testpki.Pair, clients *testpki.CA) {
		copyFile(t, s.Cert, cert)
		copyFile(t, s.Key, key)
		copyFile(t, clients.File, ca)
	}
	use(old.Server(t, "host"), old)
	files, err := NewTLSFiles(cert, key, ca)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: TLSIdentity(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := Peer(r.Context())
		io.WriteString(w, c.Client)
	}))}
	go srv.Serve(tls.NewListener(l, files.Config()))
	t.Cleanup(func() { srv.Close() })

	// Clients trust both CAs for the server, so that only the server's
	// choice of client CA decides.
	roots := x509.NewCertPool()
	for _, c := range []*testpki.CA{old, next} {
		b, _ := os.ReadFile(c.File)
		roots.AppendCertsFromPEM(b)
	}
	get := func(p testpki.Pair) (string, error) {
		t.Helper()
		kp, err := tls.LoadX509KeyPair(p.Cert, p.Key)
		if err != nil {
			t.Fatal(err)
		}
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{kp}, ServerName: "127.0.0.1"}}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get("https://" + l.Addr().String() + "/")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	alice, bob := old.Client(t, "alice"), next.Client(t, "bob")
	if who, err := get(alice); err != nil || who != "CN=alice" {
		t.Fatalf("alice (old CA) before the reload: %q, %v", who, err)
	}
	if _, err := get(bob); err == nil {
		t.Fatal("bob (next CA) served before the reload")
	}

	use(next.Server(t, "host"), next)
	if err := files.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := get(alice); err == nil {
		t.Error("alice (old CA, taken off) still served after the reload")
	}
	if who, err := get(bob); err != nil || who != "CN=bob" {
		t.Errorf("bob (next CA) after the reload: %q, %v", who, err)
	}

	// Files that do not load: an error naming the file, and bob still
	// served.
	if err := os.WriteFile(cert, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := files.Reload(); err == nil || !strings.Contains(err.Error(), cert) {
		t.Errorf("reload of a broken certificate: %v, want an error naming %s", err, cert)
	}
	if who, err := get(bob); err != nil || who != "CN=bob" {
		t.Errorf("bob after a failed reload: %q, %v", who, err)
	}
}
