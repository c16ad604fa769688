package daemon

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/containerd/errdefs"

	"github.com/open-lambda/ol-shim/internal/serve"
	"github.com/open-lambda/ol-shim/internal/testpki"
	"github.com/open-lambda/ol-shim/shim/api"
)

// tlsDaemon is a mock-backend daemon serving its API over mutual TLS on a
// loopback port, with a CA, and clients signed by it and by another.
type tlsDaemon struct {
	*testDaemon
	addr       string
	ca, rogue  *testpki.CA
	server     testpki.Pair
	alice, bob testpki.Pair
	mallory    testpki.Pair // signed by a CA the daemon does not trust
	proxy      testpki.Pair // CN=proxy, a trusted front end
}

func startTLSDaemon(t *testing.T) *tlsDaemon {
	t.Helper()
	td := &tlsDaemon{testDaemon: startDaemonWith(t, normalPool, func(c *Config) { c.Metrics = true; c.TLSProxies = []string{"CN=proxy"} })}
	dir := t.TempDir()
	td.ca = testpki.NewCA(t, dir, "cluster")
	td.rogue = testpki.NewCA(t, t.TempDir(), "rogue")
	td.server = td.ca.Server(t, "host-1")
	td.alice, td.bob = td.ca.Client(t, "alice"), td.ca.Client(t, "bob")
	td.mallory = td.rogue.Client(t, "mallory")
	td.proxy = td.ca.Client(t, "proxy")
	cfg, err := serve.TLSConfig(td.server.Cert, td.server.Key, td.ca.File)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	td.addr = l.Addr().String()
	go td.d.ServeAPITLS(l, cfg)
	return td
}

func (td *tlsDaemon) client(t *testing.T, p testpki.Pair) *api.Client {
	t.Helper()
	c, err := api.NewRemoteClient(api.Remote{Host: "tcp://" + td.addr, CACert: td.ca.File, Cert: p.Cert, Key: p.Key})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A remote client is known by its certificate's subject: it owns the
// leases it acquires, and another client, however trusted, sees none of
// them and may not touch them. Neither is ever taken for local root.
func TestTLSLeasesOwnedByCertificate(t *testing.T) {
	td := startTLSDaemon(t)
	ctx := context.Background()
	alice, bob := td.client(t, td.alice), td.client(t, td.bob)
	l, err := alice.Acquire(ctx, api.AcquireRequest{Pool: "fn", Timeout: "10s"})
	if err != nil {
		t.Fatal(err)
	}
	if l.Client != "CN=alice" || l.Owner != nil {
		t.Errorf("lease acquired over TLS: client %q, owner %v; want CN=alice and no uid", l.Client, l.Owner)
	}
	st, err := bob.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Leases) != 0 {
		t.Errorf("bob's status lists alice's leases: %+v", st.Leases)
	}
	for name, op := range map[string]func() error{
		"release": func() error { return bob.Release(ctx, l.ID) },
		"destroy": func() error { return bob.Destroy(ctx, l.ID, "not mine") },
		"renew":   func() error { _, err := bob.Renew(ctx, l.ID, "1m"); return err },
	} {
		if err := op(); !errdefs.IsNotFound(err) {
			t.Errorf("bob's %s of alice's lease: %v; want not found", name, err)
		}
	}
	if st, err := alice.Status(ctx); err != nil || len(st.Leases) != 1 || st.Leases[0].ID != l.ID {
		t.Errorf("alice's status: %+v, %v; want her lease", st.Leases, err)
	}
	// Local root sees it, owned by alice's certificate.
	if st, err := td.c.Status(ctx); err != nil || len(st.Leases) != 1 || st.Leases[0].Client != "CN=alice" {
		t.Errorf("root's status: %+v, %v", st.Leases, err)
	}
	if err := alice.Release(ctx, l.ID); err != nil {
		t.Errorf("alice's release of her lease: %v", err)
	}
	h, err := alice.Health(ctx)
	if err != nil || !h.Ready {
		t.Errorf("health over TLS: %+v, %v", h, err)
	}
}

// What is not a client with a certificate the cluster's CA signed is
// refused at the handshake: a CA no one trusts, no certificate, TLS 1.2,
// and plaintext HTTP, which never reaches the API.
func TestTLSRefusesStrangers(t *testing.T) {
	td := startTLSDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := td.client(t, td.mallory).Status(ctx); err == nil {
		t.Error("a client certificate of another CA was served")
	} else {
		t.Logf("another CA's client: %v", err)
	}
	cfg, err := api.Remote{Host: "tcp://" + td.addr, CACert: td.ca.File, Cert: td.alice.Cert, Key: td.alice.Key}.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	// Go's client sends no certificate the server's CA list does not
	// name: mallory's is pushed on the server regardless.
	rogue, err := tls.LoadX509KeyPair(td.mallory.Cert, td.mallory.Key)
	if err != nil {
		t.Fatal(err)
	}
	pushed := cfg.Clone()
	pushed.Certificates = nil
	pushed.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &rogue, nil }
	noCert := cfg.Clone()
	noCert.Certificates = nil
	tls12 := cfg.Clone()
	tls12.MinVersion, tls12.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
	for name, c := range map[string]*tls.Config{"another CA's certificate, pushed": pushed, "no client certificate": noCert, "TLS 1.2": tls12} {
		conn, err := tls.Dial("tcp", td.addr, c)
		if err == nil {
			// TLS 1.3 checks the client's certificate after the client's
			// handshake ends: the refusal comes with the first read.
			fmt.Fprintf(conn, "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
			_, err = bufio.NewReader(conn).ReadString('\n')
			conn.Close()
		}
		if err == nil {
			t.Errorf("%s: served", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	// Plaintext: the TLS server answers a bare 400, never the API.
	conn, err := net.Dial("tcp", td.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err == nil {
		defer resp.Body.Close()
		if resp.StatusCode < 400 || resp.Header.Get("Content-Type") == "application/json" {
			t.Errorf("plaintext HTTP on the TLS port: %s %v", resp.Status, resp.Header)
		}
		t.Logf("plaintext HTTP: %s", resp.Status)
	} else {
		t.Logf("plaintext HTTP: %v", err)
	}
	// A TLS listener that does not require verified client certificates
	// is refused outright: such a client would be an unknown peer.
	loose, err := serve.TLSConfig(td.server.Cert, td.server.Key, td.ca.File)
	if err != nil {
		t.Fatal(err)
	}
	loose.ClientAuth = tls.RequestClientCert
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := td.d.ServeAPITLS(l, loose); err == nil || !strings.Contains(err.Error(), "verified client certificates only") {
		t.Errorf("ServeAPITLS with client certificates optional: %v", err)
	}
	// The daemon is still fine.
	if _, err := td.client(t, td.bob).Status(context.Background()); err != nil {
		t.Errorf("status after the strangers: %v", err)
	}
}

// A streamed run's call may come in the X-OL-Shim-Run header instead of
// the body (a proxy drops an upgrade that has a body): read strictly,
// once, and never with a body as well.
func TestRunCallInHeader(t *testing.T) {
	td := startTLSDaemon(t)
	cfg, err := api.Remote{Host: "tcp://" + td.addr, CACert: td.ca.File, Cert: td.alice.Cert, Key: td.alice.Key}.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	send := func(extra, body string) string {
		t.Helper()
		c, err := tls.Dial("tcp", td.addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		fmt.Fprintf(c, "POST /v1/run HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: ol-shim-run/1\r\n%sContent-Length: %d\r\n\r\n%s", extra, len(body), body)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b := make([]byte, 512)
		n, _ := resp.Body.Read(b)
		return fmt.Sprintf("%d %s", resp.StatusCode, b[:n])
	}
	// {"pool":"fn","cmd":["true"]}: read, then refused by the mock
	// backend, which runs nothing.
	const call = "eyJwb29sIjoiZm4iLCJjbWQiOlsidHJ1ZSJdfQ"
	for _, tc := range []struct{ name, extra, body, want string }{
		{"in the header", "X-OL-Shim-Run: " + call + "\r\n", "", "501 "},
		{"in the header and the body", "X-OL-Shim-Run: " + call + "\r\n", `{"pool":"fn","cmd":["true"]}`, "400 "},
		{"twice in headers", "X-OL-Shim-Run: " + call + "\r\nX-OL-Shim-Run: " + call + "\r\n", "", "400 "},
		{"not base64url", "X-OL-Shim-Run: {\"pool\":\"fn\"}\r\n", "", "400 "},
		{"an unknown field", "X-OL-Shim-Run: eyJwb29sIjoiZm4iLCJ4Ijox\r\n", "", "400 "},
	} {
		if got := send(tc.extra, tc.body); !strings.HasPrefix(got, tc.want) {
			t.Errorf("run call %s: %s; want %s", tc.name, got, tc.want)
		}
	}
}

// Prometheus scrapes a cluster's host over its TLS listener with a client
// certificate of the cluster's CA; a certificate of another CA, or none,
// gets no metrics.
func TestTLSMetrics(t *testing.T) {
	td := startTLSDaemon(t)
	get := func(p *testpki.Pair) (int, string, error) {
		cfg, err := api.Remote{Host: "tcp://" + td.addr, CACert: td.ca.File, Cert: td.alice.Cert, Key: td.alice.Key}.TLSConfig()
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = nil
		if p != nil {
			kp, err := tls.LoadX509KeyPair(p.Cert, p.Key)
			if err != nil {
				t.Fatal(err)
			}
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &kp, nil }
		}
		tr := &http.Transport{TLSClientConfig: cfg}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + td.addr + "/metrics")
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), err
	}
	code, body, err := get(&td.alice)
	if err != nil || code != http.StatusOK || !strings.Contains(body, "ol_shim_") {
		t.Fatalf("metrics for a client of the cluster's CA: %d, %v:\n%.300s", code, err, body)
	}
	for name, p := range map[string]*testpki.Pair{"another CA's certificate": &td.mallory, "no certificate": nil} {
		if code, body, err := get(p); err == nil && strings.Contains(body, "ol_shim_") {
			t.Errorf("%s: metrics served (%d)", name, code)
		}
	}
}

// A trusted front end (CN=proxy) names the client a request is for in
// X-OL-Shim-Client, and the request is that client's: its leases are the
// same whether it comes through the proxy or directly. Anyone else's
// header is ignored, so no client can speak for another.
func TestTLSProxyNamesClient(t *testing.T) {
	td := startTLSDaemon(t)
	ctx := context.Background()
	acquire := func(p testpki.Pair, fwd ...string) (int, api.Lease, string) {
		t.Helper()
		cfg, err := api.Remote{Host: "tcp://" + td.addr, CACert: td.ca.File, Cert: p.Cert, Key: p.Key}.TLSConfig()
		if err != nil {
			t.Fatal(err)
		}
		tr := &http.Transport{TLSClientConfig: cfg}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequest("POST", "https://"+td.addr+"/v1/acquire", strings.NewReader(`{"pool":"fn","timeout":"10s"}`))
		for _, f := range fwd {
			req.Header.Add(serve.ClientHeader, f)
		}
		resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var l api.Lease
		json.Unmarshal(b, &l)
		return resp.StatusCode, l, string(b)
	}
	alice, bob := td.client(t, td.alice), td.client(t, td.bob)

	// alice cannot pass as bob.
	if code, l, body := acquire(td.alice, "CN=bob"); code != http.StatusOK || l.Client != "CN=alice" {
		t.Errorf("alice naming bob: %d, lease client %q; want hers (%s)", code, l.Client, body)
	} else if err := alice.Release(ctx, l.ID); err != nil {
		t.Error(err)
	}
	// Through the proxy, alice's lease is alice's: bob cannot touch it,
	// alice can, directly.
	code, l, body := acquire(td.proxy, "CN=alice")
	if code != http.StatusOK || l.Client != "CN=alice" {
		t.Fatalf("through the proxy for alice: %d, lease client %q (%s)", code, l.Client, body)
	}
	if err := bob.Release(ctx, l.ID); !errdefs.IsNotFound(err) {
		t.Errorf("bob's release of alice's lease made through the proxy: %v; want not found", err)
	}
	if err := alice.Release(ctx, l.ID); err != nil {
		t.Errorf("alice's release of her lease made through the proxy: %v", err)
	}
	// The proxy's own calls (no header) are its own; a header twice is
	// refused.
	if code, l, body := acquire(td.proxy); code != http.StatusOK || l.Client != "CN=proxy" {
		t.Errorf("the proxy on its own: %d, lease client %q (%s)", code, l.Client, body)
	} else if err := td.c.Release(ctx, l.ID); err != nil {
		t.Error(err)
	}
	for name, fwd := range map[string][]string{
		"two clients":      {"CN=alice", "CN=bob"},
		"a 2000-byte name": {"CN=" + strings.Repeat("a", 2000)},
	} {
		if code, _, body := acquire(td.proxy, fwd...); code != http.StatusBadRequest {
			t.Errorf("the proxy naming %s: %d (%s); want 400", name, code, body)
		}
	}
}

// TestTLSSilentPeersCannotLockOut: peers that open TCP connections and
// never finish a handshake (many more than the API's connection bound,
// held open, and more arriving all the time) do not keep a client with a
// certificate from being served.
func TestTLSSilentPeersCannotLockOut(t *testing.T) {
	td := startTLSDaemon(t)
	alice := td.client(t, td.alice)
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	silent := 2*serve.DefaultLimits.MaxConns + 100
	for range silent {
		c, err := net.Dial("tcp", td.addr)
		if err != nil {
			t.Fatalf("silent connection %d: %v", len(held), err)
		}
		held = append(held, c)
	}
	// And more, without pause, while alice asks.
	stop := make(chan struct{})
	flooded := make(chan int)
	go func() {
		n := 0
		var mine []net.Conn
		defer func() {
			for _, c := range mine {
				c.Close()
			}
			flooded <- n
		}()
		for {
			select {
			case <-stop:
				return
			default:
			}
			c, err := net.DialTimeout("tcp", td.addr, time.Second)
			if err != nil {
				continue
			}
			n++
			mine = append(mine, c)
			if len(mine) > 4*silent {
				mine[0].Close()
				mine = mine[1:]
			}
		}
	}()
	served := 0
	for i := range 10 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		h, err := alice.Health(ctx)
		cancel()
		if err != nil || !h.Ready {
			t.Errorf("alice's health check %d under %d silent connections: %+v, %v", i, silent, h, err)
			continue
		}
		served++
	}
	close(stop)
	t.Logf("alice served %d of 10 times; %d silent connections held, %d more opened meanwhile", served, silent, <-flooded)
	// The silent peers never took a served connection's place.
	if c := td.d.Conns()[td.addr]; c[1] > 10 {
		t.Errorf("the TLS socket counts %d connections served; only alice's (at most 10) got past a handshake", c[1])
	}
}

// TestTLSProxyNotImpersonated: a client whose certificate's subject holds
// two common names, its own and then the proxy's, is not the proxy: it
// cannot name another client in the proxy's header.
func TestTLSProxyNotImpersonated(t *testing.T) {
	td := startTLSDaemon(t)
	cn := asn1.ObjectIdentifier{2, 5, 4, 3}
	twoNames := td.ca.ClientNamed(t, "bob-proxy", pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{{Type: cn, Value: "bob"}, {Type: cn, Value: "proxy"}}})
	cfg, err := api.Remote{Host: "tcp://" + td.addr, CACert: td.ca.File, Cert: twoNames.Cert, Key: twoNames.Key}.TLSConfig()
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest("POST", "https://"+td.addr+"/v1/acquire", strings.NewReader(`{"pool":"fn","timeout":"10s"}`))
	req.Header.Set(serve.ClientHeader, "CN=alice")
	resp, err := (&http.Client{Transport: tr, Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var l api.Lease
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &l)
	if l.Client == "CN=alice" || l.Client == "CN=proxy" {
		t.Errorf("a certificate of subject CN=bob, CN=proxy: lease for %q (%d %s); want its own subject, never the proxy's or the client it names", l.Client, resp.StatusCode, b)
	}
	t.Logf("lease client %q", l.Client)
}
