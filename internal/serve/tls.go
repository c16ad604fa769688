package serve

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
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

// TLSIdentity puts each request's verified client certificate subject in
// its context as the peer's credentials (Cred.Client), so that leases are
// owned by it and it is never taken for local root. A request with no
// verified certificate (which the TLS config does not let through) is
// refused, never served as an unknown, in-process caller.
func TLSIdentity(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 || len(r.TLS.VerifiedChains[0]) == 0 {
			http.Error(w, "a client certificate signed by the cluster's CA is required", http.StatusForbidden)
			return
		}
		subject := r.TLS.VerifiedChains[0][0].Subject.String()
		if subject == "" {
			http.Error(w, "the client certificate has an empty subject", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r.WithContext(WithPeer(r.Context(), Cred{Client: subject})))
	})
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
