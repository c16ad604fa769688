package ociruntime

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// DaemonJSON is dockerd's configuration file, where runtimes are
// registered.
const DaemonJSON = "/etc/docker/daemon.json"

// Name is the runtime's name in dockerd's runtimes.
const Name = "ol-shim"

// maxDaemonJSON bounds the daemon.json read.
const maxDaemonJSON = 4 << 20

// readConf reads daemon.json as its keys, each as it was written; a file
// that is not there is empty.
func readConf(path string) (map[string]json.RawMessage, os.FileInfo, error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]json.RawMessage{}, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxDaemonJSON {
		return nil, nil, fmt.Errorf("%s: not a regular file of at most %d bytes", path, maxDaemonJSON)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	conf := map[string]json.RawMessage{}
	if len(bytes.TrimSpace(b)) > 0 {
		if err := json.Unmarshal(b, &conf); err != nil {
			return nil, nil, fmt.Errorf("%s: not a JSON object, left as it is: %v", path, err)
		}
	}
	return conf, fi, nil
}

// writeConf replaces path with conf, keeping the file's owner and mode
// (0644 root's for a new one), through a file beside it renamed over it.
func writeConf(path string, conf map[string]json.RawMessage, fi os.FileInfo) error {
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		return err
	}
	mode, uid, gid := os.FileMode(0o644), 0, 0
	if fi != nil {
		mode = fi.Mode().Perm()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(st.Uid), int(st.Gid)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".daemon.json.ol-shim-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chown(uid, gid); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// runtimeEntry is one of daemon.json's runtimes.
type runtimeEntry struct {
	Path        string   `json:"path"`
	RuntimeArgs []string `json:"runtimeArgs,omitempty"`
}

// Register adds (or points anew) the runtime name at binary in the
// daemon.json at path, keeping every other key, and reports whether the
// file changed. args are the runtime's own global flags dockerd passes it
// (runtimeArgs), e.g. --ol-shim-socket=PATH.
func Register(path, name, binary string, args ...string) (bool, error) {
	if !filepath.IsAbs(binary) {
		return false, fmt.Errorf("runtime binary %q: not an absolute path", binary)
	}
	if fi, err := os.Stat(binary); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return false, fmt.Errorf("runtime binary %s: not an executable file", binary)
	}
	conf, fi, err := readConf(path)
	if err != nil {
		return false, err
	}
	runtimes := map[string]json.RawMessage{}
	if raw, ok := conf["runtimes"]; ok {
		if err := json.Unmarshal(raw, &runtimes); err != nil {
			return false, fmt.Errorf("%s: runtimes: not an object, left as it is: %v", path, err)
		}
	}
	entry, _ := json.Marshal(runtimeEntry{Path: binary, RuntimeArgs: args})
	var cur runtimeEntry
	if json.Unmarshal(runtimes[name], &cur) == nil && cur.Path == binary && slices.Equal(cur.RuntimeArgs, args) {
		return false, nil
	}
	runtimes[name] = entry
	if conf["runtimes"], err = json.Marshal(runtimes); err != nil {
		return false, err
	}
	return true, writeConf(path, conf, fi)
}

// Unregister removes the runtime name from the daemon.json at path,
// keeping every other key, and reports whether the file changed.
func Unregister(path, name string) (bool, error) {
	conf, fi, err := readConf(path)
	if err != nil || fi == nil {
		return false, err
	}
	raw, ok := conf["runtimes"]
	if !ok {
		return false, nil
	}
	runtimes := map[string]json.RawMessage{}
	if err := json.Unmarshal(raw, &runtimes); err != nil {
		return false, fmt.Errorf("%s: runtimes: not an object, left as it is: %v", path, err)
	}
	if _, ok := runtimes[name]; !ok {
		return false, nil
	}
	delete(runtimes, name)
	// An empty runtimes stays: dockerd keeps the runtimes it has at a
	// reload whose file has no runtimes key.
	if conf["runtimes"], err = json.Marshal(runtimes); err != nil {
		return false, err
	}
	return true, writeConf(path, conf, fi)
}

// Registered returns the binary the runtime name points at in the
// daemon.json at path, "" if it is not there.
func Registered(path, name string) (string, error) {
	conf, _, err := readConf(path)
	if err != nil {
		return "", err
	}
	runtimes := map[string]runtimeEntry{}
	if raw, ok := conf["runtimes"]; ok {
		if err := json.Unmarshal(raw, &runtimes); err != nil {
			return "", fmt.Errorf("%s: runtimes: %v", path, err)
		}
	}
	return runtimes[name].Path, nil
}

// ReloadDockerd sends SIGHUP to dockerd (its pid file, /var/run/docker.pid,
// checked against the process: named dockerd, in this pid namespace), so
// that it reads its runtimes again.
func ReloadDockerd() error {
	b, err := os.ReadFile("/var/run/docker.pid")
	if err != nil {
		return fmt.Errorf("dockerd's pid file: %w (reload dockerd yourself: systemctl reload docker)", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return fmt.Errorf("/var/run/docker.pid: %q is not a pid", strings.TrimSpace(string(b)))
	}
	comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	self, _ := os.Readlink("/proc/self/ns/pid")
	ns, _ := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if strings.TrimSpace(string(comm)) != "dockerd" || ns == "" || ns != self {
		return fmt.Errorf("pid %d of /var/run/docker.pid is not dockerd (reload dockerd yourself: systemctl reload docker)", pid)
	}
	return syscall.Kill(pid, syscall.SIGHUP)
}
