// Command evilagent is a hostile stand-in for a sandbox's agent, for the
// integration tests: code in a sandbox can remove the agent's socket and
// listen there itself. It answers every connection one way, named by its
// first argument:
//
//	bigframe  a frame header claiming 4 GiB
//	garbage   bytes that are no frame at all
//	flood     stdout frames without end
//	hello     frames only the daemon may send (a hello, then an exit)
//	capture   reads the start frame (argv, env: a run's secrets) and sends
//	          it back as the run's stdout, then a clean exit
//
// "evilagent hide FILE" outlives its run hidden as a zombie: its main
// thread exits (the process shows as state Z) while another thread runs
// on, writing a counter into FILE every 20 ms, and reading every other
// process's environment, as a survivor would a later run's secrets.
//
// "evilagent ipc" instead leaves System V IPC objects (a shared memory
// segment, a semaphore set, a message queue) in the sandbox's IPC
// namespace, where a later run would find them, and exits.
package main

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "hide" {
		hide(os.Args[2])
		return
	}
	if len(os.Args) == 2 && os.Args[1] == "ipc" {
		leaveIPC()
		return
	}
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: evilagent bigframe|garbage|flood|hello|capture SOCKET")
		os.Exit(2)
	}
	mode, path := os.Args[1], os.Args[2]
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for {
		c, err := l.Accept()
		if err != nil {
			os.Exit(1)
		}
		go serve(mode, c)
	}
}

func frame(kind byte, p []byte) []byte {
	h := []byte{kind, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(h[1:], uint32(len(p)))
	return append(h, p...)
}

func serve(mode string, c net.Conn) {
	defer c.Close()
	// The connection stays open after what it sends, read to its end:
	// the daemon must act on what it got, not on a hang-up.
	defer io.Copy(io.Discard, c)
	switch mode {
	case "bigframe":
		c.Write([]byte{'o', 0xff, 0xff, 0xff, 0xff})
		c.Write(make([]byte, 1<<20))
	case "garbage":
		c.Write([]byte("HTTP/1.1 200 OK\r\n\r\nthis is not the run protocol"))
	case "flood":
		go io.Copy(io.Discard, c)
		f := frame('o', make([]byte, 64<<10))
		for {
			if _, err := c.Write(f); err != nil {
				return
			}
		}
	case "capture":
		h := make([]byte, 5)
		if _, err := io.ReadFull(c, h); err != nil {
			return
		}
		n := binary.BigEndian.Uint32(h[1:])
		if n > 1<<20 {
			return
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(c, p); err != nil {
			return
		}
		c.Write(frame('o', append([]byte("CAPTURED "), p...)))
		c.Write(frame('x', []byte(`{"code":0}`)))
	case "hello":
		c.Write(frame('h', []byte(`{"pool":"forged","sandbox":"forged","via":"agent"}`)))
		c.Write(frame('x', []byte(`{"code":0}`)))
	}
}

// leaveIPC makes one System V object of each kind, private to no process.
func leaveIPC() {
	const create = unix.IPC_CREAT | 0o600
	if _, err := unix.SysvShmGet(unix.IPC_PRIVATE, 4096, create); err != nil {
		fmt.Fprintln(os.Stderr, "shmget:", err)
		os.Exit(1)
	}
	if _, _, e := unix.Syscall(unix.SYS_SEMGET, unix.IPC_PRIVATE, 1, create); e != 0 {
		fmt.Fprintln(os.Stderr, "semget:", e)
		os.Exit(1)
	}
	if _, _, e := unix.Syscall(unix.SYS_MSGGET, unix.IPC_PRIVATE, create, 0); e != 0 {
		fmt.Fprintln(os.Stderr, "msgget:", e)
		os.Exit(1)
	}
}

// hide ends the process's main thread and goes on in another.
func hide(file string) {
	runtime.LockOSThread() // the main goroutine is on the main thread until main starts
	go func() {
		for i := 0; ; i++ {
			seen := ""
			envs, _ := filepath.Glob("/proc/[0-9]*/environ")
			for _, e := range envs {
				if b, err := os.ReadFile(e); err == nil && strings.Contains(string(b), "SECRET=") {
					seen = " " + strings.ReplaceAll(string(b), "\x00", " ")
				}
			}
			os.WriteFile(file, []byte(strconv.Itoa(i)+seen+"\n"), 0o644)
			time.Sleep(20 * time.Millisecond)
		}
	}()
	time.Sleep(50 * time.Millisecond)
	// Only this thread exits: the thread group lives on in the goroutine's.
	unix.Syscall(unix.SYS_EXIT, 0, 0, 0)
}
