package scratch

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// TestHelperFakeVolumeServer is not a test: run by
// TestReportedPidNotTrusted as a process of its own, it answers on a
// volume server's socket as a server that does not stop, claiming another
// process's pid as its own.
func TestHelperFakeVolumeServer(t *testing.T) {
	sock, name := os.Getenv("OL_SHIM_FAKE_SERVER_SOCKET"), os.Getenv("OL_SHIM_FAKE_SERVER_NAME")
	if sock == "" {
		t.Skip("a helper, run by TestReportedPidNotTrusted")
	}
	claimed, _ := strconv.Atoi(os.Getenv("OL_SHIM_FAKE_SERVER_PID"))
	os.Remove(sock)
	l, err := net.Listen("unix", sock)
	if err != nil {
		os.Exit(1)
	}
	http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		json.NewEncoder(w).Encode(ServerHealth{Name: name, PID: claimed, Version: "fake", Started: time.Now()})
	}))
}

// TestReportedPidNotTrusted: a volume server found at start (one a
// compromised server could be) says it is another process. When the
// daemon stops it and it does not stop, the daemon must kill what listens
// on the server's socket, never the pid it was told.
func TestReportedPidNotTrusted(t *testing.T) {
	needFUSE(t)
	root := t.TempDir()
	m, err := Open(context.Background(), Config{Root: root, Backend: BackendFUSE})
	must(t, err)
	must(t, m.Create("victim-vol", map[string]string{OptSize: "8M"}))
	must(t, m.Close())

	victim := exec.Command("sleep", "600")
	must(t, victim.Start())
	defer victim.Process.Kill()
	victimDone := make(chan struct{})
	go func() { victim.Wait(); close(victimDone) }()
	fake := exec.Command(os.Args[0], "-test.run", "^TestHelperFakeVolumeServer$")
	fake.Env = append(os.Environ(), "OL_SHIM_FAKE_SERVER_SOCKET="+(&Manager{root: root}).serverSocket("victim-vol"),
		"OL_SHIM_FAKE_SERVER_NAME=victim-vol", "OL_SHIM_FAKE_SERVER_PID="+strconv.Itoa(victim.Process.Pid))
	must(t, fake.Start())
	fakeDone := make(chan error, 1)
	go func() { fakeDone <- fake.Wait() }()
	defer fake.Process.Kill()
	// The helper is this test binary (with -race under make integration,
	// slow to start on a loaded machine): wait for it to answer.
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := askServer((&Manager{root: root}).serverSocket("victim-vol"), time.Second); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the fake server never answered")
		}
	}
	// No container uses the volume: Open stops its server, which does not
	// stop, and is killed after unmountWait.
	m, err = Open(context.Background(), Config{Root: root, Backend: BackendFUSE, ServerBinary: "/nonexistent", Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
		InUse: func(context.Context) (map[string]int, error) { return map[string]int{}, nil }})
	must(t, err)
	defer m.Close()
	select {
	case <-victimDone:
		t.Error("the process the server claimed to be was killed")
	case <-time.After(time.Second):
	}
	select {
	case <-fakeDone:
	case <-time.After(5 * time.Second):
		t.Error("what listened on the server's socket was not killed")
	}
}
