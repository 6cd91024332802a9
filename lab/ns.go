package lab

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NS is a named network namespace the lab created.
type NS struct {
	Name   string
	Handle netns.NsHandle
}

// NewNS creates a named network namespace (visible to `ip netns`) without
// moving the calling goroutine into it: the work happens on a locked
// thread that is thrown away afterwards.
func NewNS(name string) (*NS, error) {
	var h netns.NsHandle
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		// This thread ends up in the new namespace; it is never unlocked,
		// so the runtime retires it instead of reusing it.
		h, err = netns.NewNamed(name)
	}()
	<-done
	if err != nil {
		return nil, fmt.Errorf("lab: creating network namespace %s: %w", name, err)
	}
	ns := &NS{Name: name, Handle: h}
	// Bring loopback up.
	if err := ns.Do(func() error { return linkUp("lo") }); err != nil {
		ns.Delete()
		return nil, err
	}
	return ns, nil
}

// OpenNS opens an existing named namespace.
func OpenNS(name string) (*NS, error) {
	h, err := netns.GetFromName(name)
	if err != nil {
		return nil, fmt.Errorf("lab: network namespace %s: %w", name, err)
	}
	return &NS{Name: name, Handle: h}, nil
}

// Do runs fn on a fresh locked OS thread inside the namespace; the calling
// goroutine never changes namespace. Sockets fn creates stay in the
// namespace for their whole life.
func (n *NS) Do(fn func() error) error {
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		if e := netns.Set(n.Handle); e != nil {
			err = fmt.Errorf("lab: entering %s: %w", n.Name, e)
			return
		}
		err = fn()
		// Never unlock: the thread is in another namespace now.
	}()
	<-done
	return err
}

// Go runs fn inside the namespace on its own locked thread, in the
// background (a server loop); it returns at once.
func (n *NS) Go(fn func()) {
	go func() {
		runtime.LockOSThread()
		if netns.Set(n.Handle) != nil {
			return
		}
		fn()
	}()
}

// Delete removes the namespace (and with it every link inside).
func (n *NS) Delete() {
	n.Handle.Close()
	_ = netns.DeleteNamed(n.Name)
}

// RequireRoot returns an error explaining why labs cannot run here.
func RequireRoot() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("lab: network namespaces need root (euid %d)", os.Geteuid())
	}
	if _, err := os.Stat("/proc/self/ns/net"); err != nil {
		return fmt.Errorf("lab: this kernel has no network namespaces: %w", err)
	}
	return nil
}

// NSEnv makes sockets and starts processes inside a namespace from one
// OS thread kept there, for code that must act in a namespace other than
// its process's (health checks run by a test's in-process director). It
// satisfies health.Env.
type NSEnv struct {
	req  chan func()
	done chan struct{}
	err  error
}

// Env starts a thread in the namespace; Close ends it.
func (n *NS) Env() (*NSEnv, error) {
	e := &NSEnv{req: make(chan func()), done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		// Never unlocked: the thread leaves with the namespace.
		if err := netns.Set(n.Handle); err != nil {
			e.err = fmt.Errorf("lab: entering %s: %w", n.Name, err)
			close(ready)
			return
		}
		close(ready)
		for {
			select {
			case f := <-e.req:
				f()
			case <-e.done:
				return
			}
		}
	}()
	<-ready
	if e.err != nil {
		return nil, e.err
	}
	return e, nil
}

func (e *NSEnv) do(f func()) {
	ran := make(chan struct{})
	select {
	case e.req <- func() { f(); close(ran) }:
		<-ran
	case <-e.done:
		f = nil
	}
}

// Socket is socket(2) in the namespace.
func (e *NSEnv) Socket(domain, typ, proto int) (fd int, err error) {
	err = fmt.Errorf("lab: namespace thread closed")
	e.do(func() { fd, err = unix.Socket(domain, typ, proto) })
	return fd, err
}

// Start starts cmd in the namespace.
func (e *NSEnv) Start(cmd *exec.Cmd) (err error) {
	err = fmt.Errorf("lab: namespace thread closed")
	e.do(func() { err = cmd.Start() })
	return err
}

// Close ends the namespace thread.
func (e *NSEnv) Close() {
	select {
	case <-e.done:
	default:
		close(e.done)
	}
}
