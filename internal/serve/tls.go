package serve

import (
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"unicode"
)

// TLSConfig is the API's TLS listener's configuration: TLS 1.3 only, and a
// client certificate signed by the CA in caFile required of every client
// (mutual TLS: no anonymous client, no plaintext). HTTP/1.1 only: a run
// takes over its connection (an HTTP upgrade).
func TLSConfig(certFile, keyFile, caFile string) (*tls.Config, error) {
	if certFile == "" || keyFile == "" || caFile == "" {
		return nil, errors.New("tls: a server certificate, its key and the clients' CA are all needed (--tls-cert, --tls-key, --tls-ca)")
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: server certificate %s and key %s: %w", certFile, keyFile, err)
	}
	pool, err := CertPool(caFile)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		NextProtos:   []string{"http/1.1"},
	}, nil
}

// CertPool reads the PEM certificates of a CA file.
func CertPool(caFile string) (*x509.CertPool, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("tls: CA %s: %w", caFile, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("tls: CA %s: no PEM certificate in it", caFile)
	}
	return pool, nil
}

// ClientHeader carries, from a trusted proxy (TLSIdentity's proxies), the
// subject of the client certificate the proxy verified: the client the
// request is for.
const ClientHeader = "X-OL-Shim-Client"

// maxClientHeader bounds a forwarded subject.
const maxClientHeader = 1024

// TLSIdentity puts each request's verified client certificate subject in
// its context as the peer's credentials (Cred.Client), so that leases are
// owned by it and it is never taken for local root. A request with no
// verified certificate (which the TLS config does not let through) is
// refused, never served as an unknown, in-process caller.
//
// A peer whose subject is one of proxies (a front end such as HAProxy,
// which verified its own clients' certificates against the same CA) may
// name the client a request is for in ClientHeader; the request is then
// that client's. Any other peer's ClientHeader is ignored: no client can
// speak for another.
func TLSIdentity(h http.Handler, proxies ...string) http.Handler {
	var p Proxies
	p.Set(proxies)
	return TLSIdentityOf(h, &p)
}

// Proxies is the set of trusted front ends' subjects, which Set replaces
// for the requests that come after (a reload).
type Proxies struct {
	cur atomic.Pointer[map[string]bool]
}

// Set makes subjects the trusted proxies.
func (p *Proxies) Set(subjects []string) {
	m := make(map[string]bool, len(subjects))
	for _, s := range subjects {
		m[s] = true
	}
	p.cur.Store(&m)
}

func (p *Proxies) trusted(subject string) bool {
	m := p.cur.Load()
	return m != nil && (*m)[subject]
}

// TLSIdentityOf is TLSIdentity with the proxies read from p at each
// request.
func TLSIdentityOf(h http.Handler, proxies *Proxies) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
			http.Error(w, "a client certificate signed by the cluster's CA is required", http.StatusForbidden)
			return
		}
		subject := Subject(r.TLS.VerifiedChains[0][0])
		if subject == "" {
			http.Error(w, "the client certificate has an empty subject", http.StatusForbidden)
			return
		}
		if fwd := r.Header.Values(ClientHeader); proxies.trusted(subject) && len(fwd) > 0 {
			if len(fwd) > 1 || fwd[0] == "" || len(fwd[0]) > maxClientHeader || strings.ContainsFunc(fwd[0], unicode.IsControl) {
				http.Error(w, fmt.Sprintf("%s from proxy %s: want one client subject of at most %d characters", ClientHeader, subject, maxClientHeader), http.StatusBadRequest)
				return
			}
			subject = fwd[0]
		}
		r.Header.Del(ClientHeader)
		h.ServeHTTP(w, r.WithContext(WithPeer(r.Context(), Cred{Client: subject})))
	})
}

// Subject is a certificate's subject as a string (RFC 2253), every
// attribute of it in order, read from its raw bytes: x509's Subject keeps
// only the last of several common names, so "CN=bob, CN=proxy" would read
// as "CN=proxy". It is "" if the subject does not parse.
func Subject(c *x509.Certificate) string {
	var rdn pkix.RDNSequence
	if rest, err := asn1.Unmarshal(c.RawSubject, &rdn); err != nil || len(rest) != 0 {
		return ""
	}
	return rdn.String()
}

// TLSFiles serves the TLS configuration of its files and reads them again
// on Reload (the daemon's SIGHUP), so that a renewed certificate or a
// changed client CA takes effect without a restart: each new handshake
// gets the configuration in force at its start; connections made before
// keep theirs.
type TLSFiles struct {
	cert, key, ca string
	cur           atomic.Pointer[tls.Config]
}

// NewTLSFiles reads the files once (TLSConfig); an error names the file.
func NewTLSFiles(certFile, keyFile, caFile string) (*TLSFiles, error) {
	cfg, err := TLSConfig(certFile, keyFile, caFile)
	if err != nil {
		return nil, err
	}
	f := &TLSFiles{cert: certFile, key: keyFile, ca: caFile}
	f.cur.Store(cfg)
	return f, nil
}

// Reload reads the files again. On an error the configuration in force
// stays, whole.
func (f *TLSFiles) Reload() error {
	cfg, err := TLSConfig(f.cert, f.key, f.ca)
	if err != nil {
		return err
	}
	f.cur.Store(cfg)
	return nil
}

// Config is the listener's configuration: the one in force, for every
// handshake. It asks every client for a certificate as the one in force
// does.
func (f *TLSFiles) Config() *tls.Config {
	base := f.cur.Load().Clone()
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { return f.cur.Load(), nil }
	return base
}
