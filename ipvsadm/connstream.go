package ipvsadm

import (
	"bytes"
	"io"
)

// ConnWriter writes ipvsadm -L -c as the conns arrive, batch by batch, so
// a listing of any size is printed in bounded memory. The output is
// WriteConns's for all the batches together.
type ConnWriter struct {
	l       *Lister
	w       io.Writer
	started bool
	buf     bytes.Buffer
}

// NewConnWriter returns a ConnWriter printing to w in l's format.
func (l *Lister) NewConnWriter(w io.Writer) *ConnWriter { return &ConnWriter{l: l, w: w} }

// Write prints a batch of conns (the header before the first).
func (cw *ConnWriter) Write(conns []Conn) error {
	cw.buf.Reset()
	if err := cw.l.WriteConns(&cw.buf, conns); err != nil {
		return err
	}
	b := cw.buf.Bytes()
	if cw.started {
		// WriteConns's header is two lines: the title and the columns.
		for i := 0; i < 2; i++ {
			j := bytes.IndexByte(b, '\n')
			if j < 0 {
				return nil
			}
			b = b[j+1:]
		}
	}
	cw.started = true
	_, err := cw.w.Write(b)
	return err
}

// Close prints the header if no batch came.
func (cw *ConnWriter) Close() error {
	if cw.started {
		return nil
	}
	return cw.Write(nil)
}
