package director

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultLockDir holds the interface locks (Config.LockDir).
const DefaultLockDir = "/run/golvs/ifaces"

// ErrInterfaceBusy says another golvs serves one of the interfaces.
var ErrInterfaceBusy = errors.New("director: interface served by another golvs")

// ifaceLocks are the director's claims on its interfaces: one file per
// interface, named after the network namespace and the interface index
// (so a renamed interface, or one of the same name in another namespace,
// is told apart), held with an exclusive flock while the director runs.
// The kernel lets go of a flock when its holder exits, however it exits:
// a golvs killed with -9 leaves no lock behind, only a file the next one
// takes.
//
// Two directors on one interface would both forward every frame (two
// copies to each peer, possibly to different real servers), and the
// second would remove the first's drop rule as if a crash had left it.
// So a director refuses an interface another one holds, except a
// successor (Config.Standby) that takes over from it through the control
// socket: that one notes the locks it could not take (pending) and takes
// them, with the drop rule, once its predecessor's process has exited
// (Director.TakeHost).
type ifaceLocks struct {
	files   []*os.File
	pending []pendingLock
}

// pendingLock is an interface lock a successor takes later.
type pendingLock struct{ name, path string }

// lockInterfaces takes the locks of the interfaces (index by name) in
// dir, in the calling thread's network namespace.
func lockInterfaces(dir string, names []string, index map[string]int, successor bool) (*ifaceLocks, error) {
	var st unix.Stat_t
	if err := unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
		return nil, fmt.Errorf("director: interface lock: the network namespace: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("director: interface lock: %w", err)
	}
	sweep(dir)
	l := &ifaceLocks{}
	for _, name := range names {
		path := filepath.Join(dir, fmt.Sprintf("net%d-if%d.lock", st.Ino, index[name]))
		tries := busyTries
		if successor {
			tries = 0 // its predecessor holds it: no need to look again
		}
		f, err := claim(name, path, tries)
		switch {
		case err == nil:
			l.files = append(l.files, f)
		case errors.Is(err, ErrInterfaceBusy) && successor:
			l.pending = append(l.pending, pendingLock{name, path})
		default:
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

// take takes a successor's pending locks; an error (ErrInterfaceBusy:
// a third golvs has one) leaves those it could not take pending.
func (l *ifaceLocks) take() error {
	var errs []error
	left := l.pending[:0]
	for _, p := range l.pending {
		f, err := claim(p.name, p.path, busyTries)
		if err != nil {
			errs = append(errs, err)
			left = append(left, p)
			continue
		}
		l.files = append(l.files, f)
	}
	l.pending = left
	return errors.Join(errs...)
}

// claim takes the lock of interface name at path, or says who holds it
// (ErrInterfaceBusy). A golvs starting elsewhere may hold a free file for
// a moment (sweep): a holder is one that keeps it through tries more
// looks, busyWait apart.
func claim(name, path string, tries int) (*os.File, error) {
	f, err := tryLock(path)
	for try := 0; errors.Is(err, unix.EWOULDBLOCK) && try < tries; try++ {
		time.Sleep(busyWait)
		f, err = tryLock(path)
	}
	switch {
	case err == nil:
		return f, nil
	case errors.Is(err, unix.EWOULDBLOCK):
		holder := "unknown"
		if b, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(b))) > 0 {
			holder = strings.TrimSpace(string(b))
		}
		return nil, fmt.Errorf("%w: %s (pid %s; lock %s): stop it first, or replace it with golvs run --takeover",
			ErrInterfaceBusy, name, holder, path)
	}
	return nil, fmt.Errorf("director: interface lock %s: %w", path, err)
}

// tryLock takes path's lock without waiting (an error that is
// EWOULDBLOCK: another holds it) and writes this process's pid into it.
func tryLock(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	return lockOpened(path, f)
}

// lockOpened takes the lock of f, opened at path. The holder removes the
// file as it lets go, so a lock taken on a file no longer at path
// (removed, and perhaps made again, since f was opened) is let go and
// taken again on the file there now.
func lockOpened(path string, f *os.File) (*os.File, error) {
	for {
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			return nil, err
		}
		if sameFile(f, path) {
			if err := f.Truncate(0); err == nil {
				_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
			}
			return f, nil
		}
		f.Close()
		var err error
		if f, err = os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644); err != nil {
			return nil, err
		}
	}
}

// sameFile says whether f is the file at path now (not one removed from
// it since f was opened).
func sameFile(f *os.File, path string) bool {
	var a, b unix.Stat_t
	return unix.Fstat(int(f.Fd()), &a) == nil && unix.Stat(path, &b) == nil && a.Ino == b.Ino && a.Dev == b.Dev
}

// sweep removes the lock files in dir that nobody holds: those of a
// golvs killed with SIGKILL (its namespace perhaps gone since). So the
// directory holds the live locks and the few left since the last start.
// Each is locked for the moment of its removal, as a holder removes its
// own, so whoever opened it meanwhile makes a new one (tryLock).
func sweep(dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		if n := e.Name(); !strings.HasPrefix(n, "net") || !strings.HasSuffix(n, ".lock") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		f, err := os.OpenFile(path, os.O_RDWR, 0)
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil && sameFile(f, path) {
			_ = os.Remove(path)
		}
		f.Close()
	}
}

// busyTries and busyWait: how long a start looks again at an interface's
// lock before it takes it for another golvs's.
const (
	busyTries = 5
	busyWait  = 10 * time.Millisecond
)

// release removes a held lock's file, then lets go of the lock (in this
// order: whoever then locks the file it had open finds it gone from the
// path, and makes a new one).
func release(f *os.File) {
	_ = os.Remove(f.Name())
	f.Close()
}

// Close lets go of the locks.
func (l *ifaceLocks) Close() {
	if l == nil {
		return
	}
	for _, f := range l.files {
		release(f)
	}
	l.files, l.pending = nil, nil
}
