package daemon

import (
	"errors"
	"reflect"
	"strings"

	"github.com/open-lambda/ol-shim/shim/config"
)

// Reload makes the configured pools those of file (SIGHUP): new pools are
// made, changed ones replaced, removed ones drained; ad-hoc pools stay.
func (d *Daemon) Reload(file config.Config) error {
	if d.reg == nil {
		return errors.New("reload: the daemon has not started")
	}
	if err := d.reg.Apply(file.Pools, file.AdHoc); err != nil {
		return err
	}
	if keys := ChangedDaemonKeys(d.cfg.File.Daemon, file.Daemon); len(keys) > 0 {
		// The TLS certificates and tls_proxies are read again by the
		// reload's caller; every other [daemon] key is read at start.
		d.log.Warn("reload: these [daemon] keys changed and take effect at the next start (systemctl restart ol-shim)", "keys", strings.Join(keys, ", "))
	}
	d.cfg.File = file
	return nil
}

// reloadedKeys are the [daemon] keys a reload applies (the TLS listener's
// certificates and its trusted proxies).
var reloadedKeys = map[string]bool{"tls_cert": true, "tls_key": true, "tls_ca": true, "tls_proxies": true}

// ChangedDaemonKeys returns the [daemon] keys (by their TOML names) whose
// values differ between old and new, and that a reload does not apply.
func ChangedDaemonKeys(old, new config.DaemonConfig) []string {
	var keys []string
	ov, nv := reflect.ValueOf(old), reflect.ValueOf(new)
	for i := range ov.NumField() {
		f := ov.Type().Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
		if name == "" || name == "-" || reloadedKeys[name] {
			continue
		}
		if !reflect.DeepEqual(ov.Field(i).Interface(), nv.Field(i).Interface()) {
			keys = append(keys, name)
		}
	}
	return keys
}

// SetTLSProxies replaces the front ends trusted to name a request's client
// (Config.TLSProxies), for the requests that come after: a reload.
func (d *Daemon) SetTLSProxies(subjects []string) { d.proxies.Set(subjects) }
