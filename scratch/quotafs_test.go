package scratch

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// needFUSE fails (in CI) or skips (elsewhere) when FUSE mounts cannot work.
func needFUSE(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "needs root to mount FUSE with allow_other"
	} else if _, err := os.Stat("/dev/fuse"); err != nil {
		why = "no /dev/fuse"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("FUSE test %s", why)
	}
	t.Skipf("FUSE test %s", why)
}

type qfs struct {
	t        *testing.T
	dir, mnt string
	q        *Quota
	srv      *QuotaMount
	// passthrough is the volume option.
	passthrough bool
}

// mountQuota mounts a quota'd loopback of a fresh directory (or of dir,
// if given), unmounted at cleanup.
func mountQuota(t *testing.T, maxBytes, maxInodes int64) *qfs {
	t.Helper()
	needFUSE(t)
	f := &qfs{t: t, dir: t.TempDir(), mnt: t.TempDir()}
	f.mount(maxBytes, maxInodes)
	return f
}

// mountPassthrough is mountQuota with the volume option passthrough=true.
func mountPassthrough(t *testing.T, maxBytes, maxInodes int64) *qfs {
	t.Helper()
	needFUSE(t)
	f := &qfs{t: t, dir: t.TempDir(), mnt: t.TempDir(), passthrough: true}
	f.mount(maxBytes, maxInodes)
	return f
}

func (f *qfs) mount(maxBytes, maxInodes int64) {
	f.t.Helper()
	q, err := NewQuota(f.dir, maxBytes, maxInodes)
	if err != nil {
		f.t.Fatal(err)
	}
	srv, err := MountQuota(f.dir, f.mnt, q, "test", f.passthrough, false)
	if err != nil {
		f.t.Fatal(err)
	}
	f.q, f.srv = q, srv
	f.t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			f.t.Errorf("unmount %s: %v", f.mnt, err)
		}
	})
}

func (f *qfs) path(name string) string { return filepath.Join(f.mnt, name) }

// usage returns the quota's usage, after checking it against a fresh walk
// of the backing directory: the accounting is exact. The kernel sends
// RELEASE after close(2) returns, so a file closed just before may still
// count for a moment: usage waits up to 5s for the two to agree.
func (f *qfs) usage() (int64, int64) {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, i := f.q.Usage()
		w, err := NewQuota(f.dir, 0, 0)
		if err != nil {
			f.t.Fatal(err)
		}
		wb, wi := w.Usage()
		if b == wb && i == wi {
			return b, i
		}
		if time.Now().After(deadline) {
			f.t.Errorf("quota counts %d bytes %d inodes; the backing directory holds %d bytes %d inodes", b, i, wb, wi)
			return b, i
		}
		time.Sleep(time.Millisecond)
	}
}

func (f *qfs) write(name string, n int) error {
	return os.WriteFile(f.path(name), bytes.Repeat([]byte{'x'}, n), 0o644)
}

const mib = 1 << 20

func TestQuotaWriteStopsAtLimit(t *testing.T) {
	t.Parallel()
	f := mountQuota(t, 8*mib, 0)
	file, err := os.Create(f.path("big"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, mib)
	for i := range chunk {
		chunk[i] = byte(i % 251)
	}
	var written int
	var werr error
	for range 16 {
		n, err := file.Write(chunk)
		written += n
		if err != nil {
			werr = err
			break
		}
	}
	file.Close()
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("writing 16 MiB into 8 MiB: %v, want ENOSPC", werr)
	}
	if written != 8*mib {
		t.Errorf("wrote %d bytes before ENOSPC, want exactly %d", written, 8*mib)
	}
	got, err := os.ReadFile(f.path("big"))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(got); i += mib {
		if !bytes.Equal(got[i:i+mib], chunk) {
			t.Fatalf("MiB %d corrupted", i/mib)
		}
	}
	if b, _ := f.usage(); b != 8*mib {
		t.Errorf("usage %d, want %d", b, 8*mib)
	}
	var sfs unix.Statfs_t
	if err := unix.Statfs(f.mnt, &sfs); err != nil {
		t.Fatal(err)
	}
	if sfs.Blocks*uint64(sfs.Bsize) != 8*mib || sfs.Bavail != 0 {
		t.Errorf("statfs: %d blocks of %d, %d free; want 8 MiB, none free", sfs.Blocks, sfs.Bsize, sfs.Bavail)
	}
	// Deleting the file frees the quota.
	if err := os.Remove(f.path("big")); err != nil {
		t.Fatal(err)
	}
	if b, i := f.usage(); b != 0 || i != 0 {
		t.Errorf("after rm: %d bytes %d inodes", b, i)
	}
	if err := f.write("again", 6*mib); err != nil {
		t.Errorf("write after freeing: %v", err)
	}
}

func TestQuotaAccounting(t *testing.T) {
	tests := []struct {
		name      string
		run       func(t *testing.T, f *qfs)
		wantBytes int64
	}{
		{"truncate down", func(t *testing.T, f *qfs) {
			must(t, f.write("a", 4*mib))
			must(t, os.Truncate(f.path("a"), mib))
		}, mib},
		{"truncate up is sparse", func(t *testing.T, f *qfs) {
			must(t, f.write("a", mib))
			must(t, os.Truncate(f.path("a"), 1<<30))
		}, mib},
		{"truncate through handle", func(t *testing.T, f *qfs) {
			must(t, f.write("a", 3*mib))
			h, err := os.OpenFile(f.path("a"), os.O_RDWR, 0)
			must(t, err)
			must(t, h.Truncate(2*mib))
			must(t, h.Close())
		}, 2 * mib},
		{"open with O_TRUNC", func(t *testing.T, f *qfs) {
			must(t, f.write("a", 3*mib))
			must(t, f.write("a", mib))
		}, mib},
		{"fallocate", func(t *testing.T, f *qfs) {
			h, err := os.Create(f.path("a"))
			must(t, err)
			must(t, unix.Fallocate(int(h.Fd()), 0, 0, 3*mib))
			must(t, unix.Fallocate(int(h.Fd()), unix.FALLOC_FL_KEEP_SIZE, 3*mib, 2*mib))
			must(t, h.Close())
		}, 5 * mib},
		{"unlink of an open file", func(t *testing.T, f *qfs) {
			h, err := os.Create(f.path("a"))
			must(t, err)
			_, err = h.Write(make([]byte, 4*mib))
			must(t, err)
			must(t, os.Remove(f.path("a")))
			if b, i := f.q.Usage(); b != 4*mib || i != 1 {
				t.Errorf("open unlinked file: %d bytes %d inodes, want it still counted", b, i)
			}
			_, err = h.Write(make([]byte, mib))
			must(t, err)
			must(t, h.Close())
		}, 0},
		{"rename over an existing file", func(t *testing.T, f *qfs) {
			must(t, f.write("a", 2*mib))
			must(t, f.write("b", 3*mib))
			must(t, os.Rename(f.path("a"), f.path("b")))
		}, 2 * mib},
		{"hard links count once", func(t *testing.T, f *qfs) {
			must(t, f.write("a", 2*mib))
			must(t, os.Link(f.path("a"), f.path("b")))
			if b, i := f.usage(); b != 2*mib || i != 1 {
				t.Errorf("two links: %d bytes %d inodes", b, i)
			}
			must(t, os.Remove(f.path("a")))
			if b, _ := f.usage(); b != 2*mib {
				t.Errorf("one link left: %d bytes", b)
			}
			must(t, os.Remove(f.path("b")))
		}, 0},
		{"rename over a hard link of itself", func(t *testing.T, f *qfs) {
			must(t, f.write("a", mib))
			must(t, os.Link(f.path("a"), f.path("b")))
			must(t, os.Rename(f.path("a"), f.path("b")))
		}, mib},
		{"copy through io.Copy", func(t *testing.T, f *qfs) {
			must(t, f.write("a", 2*mib))
			src, err := os.Open(f.path("a"))
			must(t, err)
			dst, err := os.Create(f.path("b"))
			must(t, err)
			_, err = io.Copy(dst, src)
			must(t, err)
			src.Close()
			must(t, dst.Close())
		}, 4 * mib},
		{"directories and symlinks", func(t *testing.T, f *qfs) {
			must(t, os.MkdirAll(f.path("d/e"), 0o755))
			must(t, os.Symlink("../a", f.path("d/l")))
			must(t, f.write("d/e/x", mib))
			must(t, os.RemoveAll(f.path("d/e")))
		}, blockSize}, // d remains, and a directory costs its block (a short symlink costs none)
		{"sparse write far past the end", func(t *testing.T, f *qfs) {
			h, err := os.Create(f.path("a"))
			must(t, err)
			_, err = h.WriteAt(make([]byte, mib), 100*mib)
			must(t, err)
			must(t, h.Close())
		}, mib},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := mountQuota(t, 64*mib, 0)
			tc.run(t, f)
			if b, _ := f.usage(); b != tc.wantBytes {
				t.Errorf("usage %d bytes, want %d", b, tc.wantBytes)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestQuotaRefusals(t *testing.T) {
	t.Parallel()
	f := mountQuota(t, 4*mib, 0)
	h, err := os.Create(f.path("a"))
	must(t, err)
	if err := unix.Fallocate(int(h.Fd()), 0, 0, 8*mib); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("fallocate past the limit: %v, want ENOSPC", err)
	}
	if _, err := h.WriteAt(make([]byte, mib), 10*mib); err != nil {
		t.Errorf("a sparse write that fits: %v", err)
	}
	h.Close()
	if err := unix.Mknod(f.path("dev"), unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))); !errors.Is(err, syscall.EPERM) {
		t.Errorf("mknod of a device: %v, want EPERM", err)
	}
	if err := unix.Mkfifo(f.path("fifo"), 0o600); err != nil {
		t.Errorf("mkfifo: %v", err)
	}
	f.usage()
}

func TestQuotaInodes(t *testing.T) {
	t.Parallel()
	f := mountQuota(t, 0, 3)
	must(t, f.write("a", 10))
	must(t, os.Mkdir(f.path("d"), 0o755))
	must(t, os.Symlink("a", f.path("l")))
	for what, err := range map[string]error{
		"create":  f.write("b", 1),
		"mkdir":   os.Mkdir(f.path("e"), 0o755),
		"symlink": os.Symlink("a", f.path("m")),
		"mkfifo":  unix.Mkfifo(f.path("p"), 0o600),
	} {
		if !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("%s past the inode limit: %v, want ENOSPC", what, err)
		}
	}
	if err := os.Link(f.path("a"), f.path("hard")); err != nil {
		t.Errorf("a hard link needs no inode: %v", err)
	}
	must(t, os.Remove(f.path("l")))
	must(t, f.write("b", 1))
	if _, i := f.usage(); i != 3 {
		t.Errorf("%d inodes, want 3", i)
	}
	var sfs unix.Statfs_t
	must(t, unix.Statfs(f.mnt, &sfs))
	if sfs.Files != 3 || sfs.Ffree != 0 {
		t.Errorf("statfs: %d files, %d free; want 3, 0", sfs.Files, sfs.Ffree)
	}
}

func TestQuotaUsageKnownAtStart(t *testing.T) {
	t.Parallel()
	needFUSE(t)
	f := &qfs{t: t, dir: t.TempDir(), mnt: t.TempDir()}
	must(t, os.WriteFile(filepath.Join(f.dir, "a"), make([]byte, 3*mib), 0o644))
	must(t, os.Mkdir(filepath.Join(f.dir, "d"), 0o755))
	must(t, os.Link(filepath.Join(f.dir, "a"), filepath.Join(f.dir, "d", "b")))
	f.mount(4*mib, 0)
	if b, i := f.usage(); b != 3*mib+blockSize || i != 2 {
		t.Errorf("at start: %d bytes %d inodes, want 3 MiB and d's block, 2", b, i)
	}
	if err := f.write("c", 2*mib); !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("writing past what is left: %v, want ENOSPC", err)
	}
}

func TestQuotaConcurrentWriters(t *testing.T) {
	t.Parallel()
	f := mountQuota(t, 16*mib, 0)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				name := f.path(fmt.Sprintf("w%d-%d", w, i))
				err := f.write(name[len(f.mnt)+1:], 256<<10)
				if errors.Is(err, syscall.ENOSPC) {
					return
				}
				if err != nil {
					t.Error(err)
					return
				}
				if i%3 == 0 {
					_ = os.Remove(name)
				}
			}
		})
	}
	wg.Wait()
	b, _ := f.usage()
	if b > 16*mib || b < 15*mib {
		t.Errorf("after filling with 8 writers: %d bytes, want within a MiB under the 16 MiB limit", b)
	}
}

// TestQuotaPermissionsForOtherUsers: through the quota mount, another user
// reads what the modes let it read, as on the directory underneath: a file
// of mode 0000 or 0600 is not readable by uid 65534, one of 0644 is.
func TestQuotaPermissionsForOtherUsers(t *testing.T) {
	needFUSE(t)
	parent, err := os.MkdirTemp("", "ol-shim-perm-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(parent) })
	must(t, os.Chmod(parent, 0o755))
	f := &qfs{t: t, dir: filepath.Join(parent, "data"), mnt: filepath.Join(parent, "mnt")}
	must(t, os.Mkdir(f.dir, 0o755))
	must(t, os.Mkdir(f.mnt, 0o755))
	f.mount(1<<20, 100)
	for name, mode := range map[string]os.FileMode{"none": 0, "private": 0o600, "public": 0o644} {
		must(t, os.WriteFile(f.path(name), []byte("secret"), 0o600))
		must(t, os.Chmod(f.path(name), mode))
	}
	for name, readable := range map[string]bool{"none": false, "private": false, "public": true} {
		for _, where := range []string{f.dir, f.mnt} {
			cmd := exec.Command("cat", filepath.Join(where, name))
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			out, err := cmd.CombinedOutput()
			if (err == nil) != readable {
				t.Errorf("uid 65534 reading %s/%s: %v %s; want readable=%v", filepath.Base(where), name, err, bytes.TrimSpace(out), readable)
			}
		}
	}
}

// TestQuotaCreateModes: a file or directory made through the mount gets
// the mode its creator asked for, after the creator's umask only, not the
// serving process's umask on top.
func TestQuotaCreateModes(t *testing.T) {
	f := mountQuota(t, 1<<20, 100)
	out, err := exec.Command("sh", "-c", "umask 000 && cd "+f.mnt+" && touch f && mkdir d && umask 027 && touch g && mkdir e").CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for name, want := range map[string]os.FileMode{"f": 0o666, "d": 0o777, "g": 0o640, "e": 0o750} {
		for _, where := range []string{f.mnt, f.dir} {
			fi, err := os.Stat(filepath.Join(where, name))
			if err != nil || fi.Mode().Perm() != want {
				t.Errorf("%s/%s: mode %v (%v); want %v", filepath.Base(where), name, fi.Mode().Perm(), err, want)
			}
		}
	}
}

// TestQuotaChargesNamesAndDirectories: every name costs something. On a
// 1 MiB volume, hard links with long names (no new inode, no new file
// bytes) fill its directory until ENOSPC; directories are charged their
// blocks; and the usage is what du reports for the directory underneath.
func TestQuotaChargesNamesAndDirectories(t *testing.T) {
	f := mountQuota(t, mib, 0)
	must(t, f.write("x", 10))
	must(t, os.Mkdir(f.path("links"), 0o755))
	long := strings.Repeat("n", 200)
	made, err := 0, error(nil)
	for ; made < 60_000; made++ {
		if err = os.Link(f.path("x"), f.path(fmt.Sprintf("links/%s-%d", long, made))); err != nil {
			break
		}
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("%d hard links on a 1 MiB volume, then %v; want ENOSPC before the 60,000th", made, err)
	}
	b, _ := f.usage()
	// du counts the volume's own directory, which the quota does not
	// (beyond its growth): its first block.
	du := duBytes(t, f.dir) - blockSize
	t.Logf("%d links until ENOSPC; quota counts %d bytes, du %d", made, b, du)
	if b != du {
		t.Errorf("quota counts %d bytes; du of the directory underneath says %d", b, du)
	}
	if du > mib+64<<10 {
		t.Errorf("the volume holds %d bytes on disk, more than its 1 MiB quota (and a block of slack)", du)
	}
	var sfs syscall.Statfs_t
	must(t, syscall.Statfs(f.mnt, &sfs))
	if used := int64(sfs.Blocks-sfs.Bfree) * int64(sfs.Bsize); used < b-blockSize || used > b+blockSize {
		t.Errorf("df shows %d bytes used; the quota counts %d", used, b)
	}
}

// TestQuotaSizeOnlyHasInodeLimit: a volume with only a size still has an
// inode limit, derived from the size.
func TestQuotaSizeOnlyHasInodeLimit(t *testing.T) {
	o, err := ParseOptions(map[string]string{"size": "1M"})
	must(t, err)
	if n := o.InodeLimit(); n <= 0 || n > 1024 {
		t.Errorf("inode limit of a 1 MiB volume: %d", n)
	}
	if o2, _ := ParseOptions(map[string]string{"size": "1M", "inodes": "7"}); o2.InodeLimit() != 7 {
		t.Errorf("an explicit inode limit is kept: %d", o2.InodeLimit())
	}
	if o3, _ := ParseOptions(nil); o3.InodeLimit() != 0 {
		t.Errorf("no quota, no inode limit: %d", o3.InodeLimit())
	}
}

// duBytes is du -s --block-size=1 of dir: every inode's blocks, once.
func duBytes(t *testing.T, dir string) int64 {
	t.Helper()
	out, err := exec.Command("du", "-s", "--block-size=1", dir).Output()
	must(t, err)
	n, err := strconv.ParseInt(strings.Fields(string(out))[0], 10, 64)
	must(t, err)
	return n
}

// TestQuotaDirectoryGrowthStops: the 22 MB case. 1,000 files with
// 240-character names moved through 60 new directories: every directory
// keeps the blocks its names took. Names made or moved once the volume is
// full are refused, so it holds no more than its 8 MiB (and the growth of
// the operation that filled it).
func TestQuotaDirectoryGrowthStops(t *testing.T) {
	f := mountQuota(t, 8*mib, 100_000)
	long := strings.Repeat("n", 236)
	for i := range 1000 {
		must(t, f.write(fmt.Sprintf("%s%04d", long, i), 0))
	}
	from := f.mnt
	var refused error
	for d := 0; d < 60 && refused == nil; d++ {
		to := f.path(fmt.Sprintf("d%02d", d))
		if refused = os.Mkdir(to, 0o755); refused != nil {
			break
		}
		for i := 0; i < 1000 && refused == nil; i++ {
			name := fmt.Sprintf("%s%04d", long, i)
			refused = os.Rename(filepath.Join(from, name), filepath.Join(to, name))
		}
		from = to
	}
	if !errors.Is(refused, syscall.ENOSPC) {
		t.Errorf("moving names through new directories: %v, want ENOSPC once the volume is full", refused)
	}
	// (Not f.usage: a walk at start takes the root directory's size then as
	// its base, and this root grew by its 1,000 long names before.)
	b, _ := f.q.Usage()
	du := duBytes(t, f.dir) - blockSize
	t.Logf("quota counts %d bytes, du %d", b, du)
	if du > 8*mib+64<<10 {
		t.Errorf("an 8 MiB volume holds %d bytes on disk in directories", du)
	}
}
