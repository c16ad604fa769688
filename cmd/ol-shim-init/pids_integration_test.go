//go:build integration

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/open-lambda/ol-shim/shim/agent"
)

// A sandbox that fills its pids limit (a fork bomb) leaves its init no
// task to spare: init must keep running and answering, refusing the runs it
// cannot start, rather than die when its runtime wants another thread (Go's
// runtime ends the process when it cannot make one). Here init runs in a
// pids cgroup whose limit is set to what it already holds, and many runs
// come at once.
func TestInitSurvivesPidsExhaustion(t *testing.T) {
	bin := buildInit(t)
	cg := newPidsCgroup(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	cmd := exec.Command(bin, "init", "--agent", sock)
	cmd.Stderr = &lockedBuffer{}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	if err := os.WriteFile(filepath.Join(cg, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	// The runs take each way a start can go: plain, on a terminal, with
	// stdin, in a working directory to make, as a user to look up.
	starts := []agent.Start{
		{Argv: []string{"true"}},
		{Argv: []string{"true"}, TTY: true, Rows: 24, Cols: 80},
		{Argv: []string{"true"}, Dir: filepath.Join(dir, "work")},
		{Argv: []string{"true"}, User: "0:0"},
	}
	run := func(ctx context.Context, i int) (agent.Exit, error) {
		var d net.Dialer
		nc, err := d.DialContext(ctx, "unix", sock)
		if err != nil {
			return agent.Exit{}, err
		}
		defer nc.Close()
		sio := agent.Stdio{}
		if i%5 == 4 {
			sio.Stdin = strings.NewReader("input")
		}
		return agent.Run(ctx, agent.NewConn(nc), starts[i%len(starts)], sio)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		ex, err := run(ctx, 0)
		cancel()
		if err == nil && ex.Code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("init's agent never ran true: %v %v", ex, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	held := readInt(t, filepath.Join(cg, "pids.current"))
	if err := os.WriteFile(filepath.Join(cg, "pids.max"), []byte(strconv.Itoa(held)), 0o644); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := map[string]int{}
	stop := time.Now().Add(3 * time.Second)
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; time.Now().Before(stop); i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				ex, err := run(ctx, i)
				cancel()
				k := fmt.Sprintf("exit %d", ex.Code)
				if err != nil {
					k = err.Error()
				}
				mu.Lock()
				seen[k]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-exited:
		exited <- err
		t.Fatalf("init ended when its pids ran out (%v; held %d tasks); it printed:\n%s", err, held, cmd.Stderr)
	default:
	}
	t.Logf("runs at the limit (%d tasks): %v", held, seen)
	var refused int
	for k, n := range seen {
		if strings.Contains(k, "resource temporarily unavailable") {
			refused += n
		}
	}
	if refused == 0 {
		t.Errorf("no run was refused for want of a task: %v", seen)
	}
	// The limit lifted, init runs commands again.
	if err := os.WriteFile(filepath.Join(cg, "pids.max"), []byte("max"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i := range starts {
		if ex, err := run(ctx, i); err != nil || ex.Code != 0 {
			t.Errorf("after the limit was lifted, %+v: %v %v", starts[i], ex, err)
		}
	}
}

// newPidsCgroup makes a pids cgroup for the test, cgroup v1's or v2's,
// removed at its end.
func newPidsCgroup(t *testing.T) string {
	name := fmt.Sprintf("ol-shim-test-%d", os.Getpid())
	for _, parent := range []string{"/sys/fs/cgroup/pids", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(parent, "pids.max")); err != nil && parent == "/sys/fs/cgroup/pids" {
			// v1's pids hierarchy has no pids.max at its root; its
			// cgroup.procs says it is there.
			if _, err := os.Stat(filepath.Join(parent, "cgroup.procs")); err != nil {
				continue
			}
		}
		if parent == "/sys/fs/cgroup" {
			b, err := os.ReadFile(filepath.Join(parent, "cgroup.subtree_control"))
			if err != nil || !strings.Contains(string(b), "pids") {
				continue
			}
		}
		dir := filepath.Join(parent, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatalf("pids cgroup: %v", err)
		}
		t.Cleanup(func() {
			// Its processes are killed by the test's other cleanup, which
			// runs first; rmdir waits for them to leave.
			for range 100 {
				if err := syscall.Rmdir(dir); err == nil || errors.Is(err, os.ErrNotExist) {
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
			t.Errorf("cgroup %s left behind", dir)
		})
		return dir
	}
	t.Fatal("no pids cgroup controller found (cgroup v1's /sys/fs/cgroup/pids or v2's with pids enabled): this test needs one, and root")
	return ""
}

func readInt(t *testing.T, path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return n
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
