package scratch

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// posixScript runs in a directory given as $1 and prints one line per step:
// its exit status and what it showed. Steps marked "as nobody" run as uid
// 65534. The same script on the plain directory underneath and on a
// quota'd volume must print the same transcript.
const posixScript = `
cd "$1" || exit 99
nobody() { setpriv --reuid 65534 --regid 65534 --clear-groups sh -c "$1"; }
step() { name=$1; shift; out=$( ( "$@" ) 2>&1 ); echo "$name: $? $(echo "$out" | sed "s|$PWD|.|g" | tr '\n' ' ')"; }
umask 022
step create touch f
step mode0000 chmod 0000 f
step stat0000 stat -c '%a %s %F' f
step read0000-nobody nobody 'cat f'
step read0000-root cat f
step chmod644 chmod 0644 f
step write-nobody nobody 'echo x >> f'
step chown chown 65534:65534 f
step stat-owner stat -c '%u:%g %a' f
step write-owner nobody 'echo data > f'
step link ln f l
step nlink stat -c '%h' f
step rename mv l l2
step gone test -e l
step truncate truncate -s 100 f
step size stat -c '%s' f
step truncate-nobody-root-file sh -c 'touch r && chmod 600 r && setpriv --reuid 65534 --regid 65534 --clear-groups truncate -s 0 r'
step mkfifo mkfifo p
step fifo stat -c '%F %a' p
step mtime touch -d @1234567 f
step see-mtime stat -c '%Y' f
step unlink rm l2
step nlink-after stat -c '%h' f
step umask000 sh -c 'umask 000 && touch g && mkdir gd && stat -c "%a" g gd'
step umask077 sh -c 'umask 077 && touch h && mkdir hd && stat -c "%a" h hd'
step umask027-nobody nobody 'umask 027 && touch nb && stat -c "%a %u" nb'
step symlink ln -s f s
step symlink-type stat -c '%F' s
step readlink readlink s
step chmod-through-symlink sh -c 'chmod 0600 s && stat -c "%a" f'
step private-dir sh -c 'mkdir pd && chmod 0700 pd && touch pd/x'
step enter-private-nobody nobody 'ls pd'
step create-in-root-dir-nobody sh -c 'mkdir rd && chmod 0755 rd && setpriv --reuid 65534 --regid 65534 --clear-groups touch rd/x'
step sticky sh -c 'mkdir st && chmod 1777 st && touch st/x && setpriv --reuid 65534 --regid 65534 --clear-groups rm -f st/x'
step sticky-kept test -e st/x
step setgid-dir sh -c 'mkdir sg && chown 0:65534 sg && chmod 2777 sg && setpriv --reuid 65534 --regid 100 --clear-groups touch sg/x && stat -c "%g" sg/x'
step setgid-subdir sh -c 'setpriv --reuid 65534 --regid 100 --clear-groups mkdir sg/d && stat -c "%g %a" sg/d'
step rename-over sh -c 'echo a > ra && echo b > rb && mv ra rb && cat rb'
step rmdir-nonempty rmdir pd
step long-path sh -c 'p=.; for i in $(seq 1 14); do p=$p/$(printf "%0250d" $i); done; mkdir -p $p && touch $p/leaf && ls $p'
step hardlink-dir ln gd gd2
step chmod-setuid-nobody nobody 'touch su && chmod 4755 su; stat -c "%a" su'
`

// TestQuotaPOSIXLikeUnderneath: file operations on a quota'd volume
// (chmod, chown, link, rename, truncate, mkfifo, utimes, unlink, open,
// umask, permissions for another user, long paths) behave as on the plain
// directory underneath: the same script prints the same transcript on both.
func TestQuotaPOSIXLikeUnderneath(t *testing.T) {
	needFUSE(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("needs setpriv (util-linux)")
	}
	parent, err := os.MkdirTemp("", "ol-shim-posix-")
	must(t, err)
	t.Cleanup(func() { os.RemoveAll(parent) })
	must(t, os.Chmod(parent, 0o755))
	plain := filepath.Join(parent, "plain")
	f := &qfs{t: t, dir: filepath.Join(parent, "data"), mnt: filepath.Join(parent, "mnt")}
	for _, d := range []string{plain, f.dir, f.mnt} {
		must(t, os.Mkdir(d, 0o755))
	}
	must(t, os.Chmod(plain, 0o777))
	must(t, os.Chmod(f.dir, 0o777))
	f.mount(256*mib, 100_000)
	run := func(dir string) []string {
		out, err := exec.Command("sh", "-c", posixScript, "sh", dir).CombinedOutput()
		if err != nil {
			t.Fatalf("script in %s: %v\n%s", dir, err, out)
		}
		return strings.Split(strings.TrimSpace(string(out)), "\n")
	}
	want, got := run(plain), run(f.mnt)
	if len(want) != len(got) {
		t.Fatalf("transcripts differ in length: %d plain, %d volume", len(want), len(got))
	}
	differ := 0
	for i := range want {
		if want[i] != got[i] {
			differ++
			t.Errorf("plain:  %s\nvolume: %s", want[i], got[i])
		}
	}
	t.Logf("%d steps, %d differ", len(want), differ)
	if testing.Verbose() {
		fmt.Println(strings.Join(got, "\n"))
	}
}
