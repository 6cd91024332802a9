package control

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golvs/golvs/internal/testutil"
)

// rawRequest sends one line on a fresh connection and reads one reply.
func rawRequest(t testing.TB, line []byte, timeout time.Duration) (*Reply, error) {
	t.Helper()
	c, err := net.DialTimeout("unix", SocketPath(), timeout)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(line); err != nil {
		return nil, err
	}
	b, err := bufio.NewReader(c).ReadBytes('\n')
	if err != nil {
		return nil, err
	}
	var rep Reply
	if err := json.Unmarshal(b, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}

func listOK(t testing.TB) error {
	t.Helper()
	rep, err := rawRequest(t, []byte(`{"v":1,"op":"list"}`+"\n"), 3*time.Second)
	if err != nil {
		return err
	}
	if !rep.OK {
		return errors.New(rep.Error)
	}
	return nil
}

// When accept fails for lack of file descriptors, the daemon keeps
// serving once they are back (the accept loop used to end for good).
func TestAcceptSurvivesEMFILE(t *testing.T) {
	startDaemon(t, 1)
	if err := listOK(t); err != nil {
		t.Fatal(err)
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	// Lower the soft limit near what is in use, then fill the rest.
	n := countFDs(t)
	lim := old
	lim.Cur = uint64(n + 64)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old)
		}
	}
	defer restore()
	var fill []*os.File
	closeAll := func() {
		for _, f := range fill {
			f.Close()
		}
		fill = nil
	}
	defer closeAll()
	for {
		f, err := os.Open(os.DevNull)
		if err != nil {
			if !errors.Is(err, syscall.EMFILE) {
				t.Fatal(err)
			}
			break
		}
		fill = append(fill, f)
	}
	// One descriptor for the client: its connection is queued, and the
	// daemon's accept finds none left.
	fill[len(fill)-1].Close()
	fill = fill[:len(fill)-1]
	c, err := net.Dial("unix", SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the daemon meets EMFILE meanwhile
	c.Close()
	closeAll()
	restore()
	var lastErr error
	for i := 0; i < 20; i++ {
		if lastErr = listOK(t); lastErr == nil {
			return
		}
	}
	t.Fatalf("the control socket no longer answers after EMFILE: %v", lastErr)
}

func countFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// A request line longer than the limit is refused with a clear error as
// soon as the limit is passed: the daemon never buffers the whole line.
func TestRequestLineCapped(t *testing.T) {
	startDaemon(t, 1)
	c, err := net.Dial("unix", SocketPath())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var rep Reply
	done := make(chan error, 1)
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		b, err := bufio.NewReader(c).ReadBytes('\n')
		if err == nil {
			err = json.Unmarshal(b, &rep)
		}
		done <- err
	}()
	// 64 MiB of one request, no newline: a daemon that reads it whole
	// never answers before the end.
	chunk := bytes.Repeat([]byte("x"), 1<<20)
	_ = c.SetWriteDeadline(time.Now().Add(20 * time.Second))
	c.Write([]byte(`{"v":1,"op":"restore","text":"`))
	for i := 0; i < 64; i++ {
		if _, err := c.Write(chunk); err != nil {
			break // the daemon closed the connection after its answer
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("no answer to an over-long request line: %v", err)
	}
	if rep.OK || !strings.Contains(rep.Error, "longer than") {
		t.Fatalf("reply %+v, want an error naming the line limit", rep)
	}
	if err := listOK(t); err != nil {
		t.Fatal(err)
	}
}

// Arguments received over the socket must not carry control characters: a
// NUL must not cut an address short.
func TestControlCharactersRefused(t *testing.T) {
	dm := startDaemon(t, 1)
	cases := []Request{
		{Op: "exec", Args: []string{"-A", "-t", "198.18.0.100:80\x00junk", "-s", "rr"}},
		{Op: "exec", Args: []string{"-A", "-t", "198.18.0.100:80", "-s", "rr\x00"}},
		{Op: "exec", Args: []string{"-A", "-t", "198.18.0.100:80", "-s", "rr\n"}},
		{Op: "restore", Text: "-A -t 198.18.0.100:80\x00junk -s rr\n"},
		{Op: "exec", Args: []string{"--add-mark", "-f", "1", "--mark-dst", "198.18.0.100\x00/8"}},
	}
	for _, c := range cases {
		c.V = Version
		rep := dm.srv.Handle(&c)
		if b, _ := json.Marshal(c); rep.OK || !strings.Contains(rep.Error, "control character") {
			t.Errorf("%s: %+v, want refused for a control character", b, rep)
		}
	}
	if got := adm(t, "", "-S", "-n"); got != "" {
		t.Fatalf("refused requests changed the table:\n%s", got)
	}
}

// list reads the mark rules while a writer replaces them: under -race this
// catches an unlocked read, and every listing is one of the states the
// writer made.
func TestListWhileMarksChange(t *testing.T) {
	dm := startDaemon(t, 1)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 200; i++ {
			if err := dm.srv.Exec([]string{"--add-mark", "-f", "1", "--mark-dst", "198.18.0.100/32"}); err != nil {
				t.Error(err)
				return
			}
			if err := dm.srv.Exec([]string{"--del-mark", "-f", "1", "--mark-dst", "198.18.0.100/32"}); err != nil {
				t.Error(err)
				return
			}
		}
		close(stop)
	}()
	for {
		select {
		case <-stop:
			wg.Wait()
			return
		default:
		}
		rep := dm.srv.Handle(&Request{V: Version, Op: "list"})
		if !rep.OK || len(rep.Marks) > 1 || len(rep.Marks) == 1 && rep.Marks[0].Mark != 1 {
			t.Fatalf("list: %+v", rep)
		}
	}
}

// At most MaxConns connections at once: one more is answered busy (and
// golvs adm retries); a connection idle for IdleTimeout is closed, which
// frees its place.
func TestConnectionLimits(t *testing.T) {
	startDaemonOn(t, testutil.NATLab(t, 1), []int{80}, func(s *Server) {
		s.MaxConns, s.IdleTimeout = 2, 500*time.Millisecond
	})
	var held []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("unix", SocketPath())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	time.Sleep(50 * time.Millisecond) // both accepted
	rep, err := rawRequest(t, []byte(`{"v":1,"op":"list"}`+"\n"), 3*time.Second)
	if err != nil || rep.OK || !rep.Busy || !strings.Contains(rep.Error, "too many control connections (2 at once)") {
		t.Fatalf("a third connection: %+v %v, want busy", rep, err)
	}
	// golvs adm waits for a place: the idle ones are closed meanwhile.
	start := time.Now()
	if got := adm(t, "", "-L", "-n"); !strings.HasPrefix(got, "IP Virtual Server") {
		t.Fatalf("-L -n: %q", got)
	}
	t.Logf("golvs adm got through after %v", time.Since(start).Round(time.Millisecond))
	for _, c := range held {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("an idle connection was not closed: %v", err)
		}
	}
}
