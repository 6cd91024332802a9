package lab

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"sync/atomic"
)

// LineEcho answers every line a TCP client sends with the server's name and a
// newline, on long-lived connections (the HA lab's clients each hold one
// and send a request every 100 ms). It listens inside ns (nil: the
// current namespace) until ctx is done and counts the connections it
// accepted.
func LineEcho(ctx context.Context, ns *NS, port int, name string) (accepted *atomic.Int64, err error) {
	var l net.Listener
	listen := func() error {
		var err error
		l, err = net.Listen("tcp4", fmt.Sprintf(":%d", port))
		return err
	}
	if ns != nil {
		err = ns.Do(listen)
	} else {
		err = listen()
	}
	if err != nil {
		return nil, fmt.Errorf("lab: %s echo on tcp/%d: %w", name, port, err)
	}
	accepted = new(atomic.Int64)
	go func() {
		<-ctx.Done()
		l.Close()
	}()
	reply := []byte(name + "\n")
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer c.Close()
				r := bufio.NewReaderSize(c, 512)
				for {
					line, err := r.ReadSlice('\n')
					if err != nil || len(line) > 256 {
						return
					}
					if _, err := c.Write(reply); err != nil {
						return
					}
				}
			}()
		}
	}()
	return accepted, nil
}
