package ipvsadm

import (
	"errors"
	"fmt"
)

// Exit statuses of ipvsadm (spec §6.1).
const (
	StatusOK     = 0
	StatusList   = 1   // a listing failed
	StatusFail   = 2   // fail(): parse and validation errors
	StatusKernel = 255 // the kernel refused, popt errors, "try help"
)

// Sentinel errors of this package. Errors from the grammar and from
// Table.Apply are *Error values that wrap these or the ipvs.Err* ones.
var (
	ErrUsage       = errors.New("ipvsadm: usage error")
	ErrSCTP        = errors.New("SCTP services are not supported by golvs")
	ErrUnsupported = errors.New("ipvsadm: command not supported by golvs")
	ErrNotTable    = errors.New("ipvsadm: command does not change the table")
)

// Error is an ipvsadm error: the words ipvsadm prints (golvs detail, if
// any, follows them) and the exit status ipvsadm ends with. In a restore,
// Line and Text name the input line.
type Error struct {
	Status int
	Msg    string
	Line   int
	Text   string
	Err    error
}

func (e *Error) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", e.Line, e.Text, e.Msg)
	}
	return e.Msg
}

func (e *Error) Unwrap() error { return e.Err }

// ExitStatus returns the exit status ipvsadm would end with after err:
// 0 for nil, the Status of an *Error, and 255 otherwise.
func ExitStatus(err error) int {
	if err == nil {
		return StatusOK
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return StatusKernel
}

func failf(format string, args ...any) *Error {
	return &Error{Status: StatusFail, Msg: fmt.Sprintf(format, args...), Err: ErrUsage}
}

// failErr is fail() with golvs detail: err's text (which begins with
// ipvsadm's words) becomes the message.
func failErr(err error) *Error {
	return &Error{Status: StatusFail, Msg: err.Error(), Err: err}
}
