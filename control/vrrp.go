package control

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/golvs/golvs/vrrp"
)

// VRRP is what the control plane asks of the VRRP speaker (issue 15).
type VRRP interface {
	Status() vrrp.Status
	SetPriority(ctx context.Context, instance string, prio int) error
	// Handover stops the speaker for a graceful restart's successor
	// (takeover.go) and names the instances that were master.
	Handover(ctx context.Context) ([]string, error)
}

// SetVRRP makes the control plane report (and adjust) a VRRP speaker;
// call before Serve.
func (s *Server) SetVRRP(v VRRP) { s.vr = v }

// vrrpOp answers {"op":"vrrp"} (the state) and
// {"op":"vrrp","args":["priority","N"[,"INSTANCE"]]}.
func (s *Server) vrrpOp(req *Request) *Reply {
	if s.vr == nil {
		return fail(fmt.Errorf("control: this director runs no VRRP (golvs run --vrrp-interface ...)"), 1)
	}
	switch {
	case len(req.Args) == 0:
	case req.Args[0] == "priority" && (len(req.Args) == 2 || len(req.Args) == 3):
		p, err := strconv.Atoi(req.Args[1])
		if err != nil {
			return fail(fmt.Errorf("control: VRRP priority %q is not a number", req.Args[1]), 2)
		}
		name := ""
		if len(req.Args) == 3 {
			name = req.Args[2]
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.vr.SetPriority(ctx, name, p); err != nil {
			return fail(err, 2)
		}
	default:
		return fail(fmt.Errorf("control: vrrp: unknown arguments %q", req.Args), 2)
	}
	st := s.vr.Status()
	return &Reply{OK: true, VRRP: &st}
}

// IsVRRPCommand reports golvs's VRRP extension of `golvs adm`:
// --vrrp (show) and --vrrp-priority N [--vrrp-instance NAME].
func IsVRRPCommand(args []string) bool {
	return len(args) > 0 && (args[0] == "--vrrp" || strings.HasPrefix(args[0], "--vrrp-priority"))
}

func admVRRP(args []string, stdout, stderr io.Writer) int {
	req := &Request{Op: "vrrp"}
	switch {
	case len(args) == 1 && args[0] == "--vrrp":
	default:
		var prio, inst string
		for i := 0; i < len(args); i++ {
			a := args[i]
			k, v, has := strings.Cut(a, "=")
			if !has && i+1 < len(args) {
				v = args[i+1]
				i++
			}
			switch k {
			case "--vrrp-priority":
				prio = v
			case "--vrrp-instance":
				inst = v
			default:
				fmt.Fprintf(stderr, "golvs adm: %q: VRRP takes --vrrp, or --vrrp-priority N [--vrrp-instance NAME]\n", a)
				return 2
			}
		}
		if prio == "" {
			fmt.Fprintln(stderr, "golvs adm: --vrrp-priority needs a value (1..254)")
			return 2
		}
		req.Args = []string{"priority", prio}
		if inst != "" {
			req.Args = append(req.Args, inst)
		}
	}
	cl, err := Dial(SocketPath())
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	defer cl.Close()
	rep, err := cl.Do(req)
	if code := report(rep, err)(stderr); code != 0 {
		return code
	}
	WriteVRRP(stdout, rep.VRRP, time.Now())
	return 0
}

// WriteVRRP prints a speaker's state as `golvs adm --vrrp` shows it.
func WriteVRRP(w io.Writer, st *vrrp.Status, now time.Time) {
	if st == nil {
		return
	}
	for _, in := range st.Instances {
		fmt.Fprintf(w, "VRRP instance %s (vrid %d, version %d, interface %s): %s", in.Name, in.VRID, in.Version, in.Interface, in.State)
		if !in.Since.IsZero() {
			fmt.Fprintf(w, " for %s", now.Sub(in.Since).Round(100*time.Millisecond))
		}
		fmt.Fprintln(w)
		pre := "preempt"
		if !in.Preempt {
			pre = "nopreempt"
		} else if in.PreemptDelayS > 0 {
			pre = fmt.Sprintf("preempt after %gs", in.PreemptDelayS)
		}
		fmt.Fprintf(w, "  priority %d (configured %d), advert_int %v, %s, source %s", in.Priority, in.Configured, time.Duration(in.IntervalMs)*time.Millisecond, pre, in.Source)
		if in.Auth != "" {
			fmt.Fprintf(w, ", auth %s", in.Auth)
		}
		if in.Group != "" {
			fmt.Fprintf(w, ", sync group %s", in.Group)
		}
		fmt.Fprintln(w)
		if in.Master != "" {
			who := ""
			if in.Master == in.Source {
				who = " (this director)"
			}
			fmt.Fprintf(w, "  master %s%s, priority %d\n", in.Master, who, in.MasterPrio)
		}
		fmt.Fprintf(w, "  virtual addresses: %s\n", strings.Join(in.Addrs, ", "))
		if len(in.Excluded) > 0 {
			fmt.Fprintf(w, "  excluded addresses (not advertised): %s\n", strings.Join(in.Excluded, ", "))
		}
		if len(in.Unicast) > 0 {
			fmt.Fprintf(w, "  unicast peers: %s\n", strings.Join(in.Unicast, ", "))
		}
		fmt.Fprintf(w, "  adverts sent %d, received %d; became master %d times; priority 0 sent %d, received %d\n",
			in.Sent, in.Received, in.BecameMaster, in.PrioZeroSent, in.PrioZeroRecv)
		if len(in.Drops) > 0 {
			fmt.Fprintf(w, "  dropped: %s\n", counts(in.Drops))
		}
	}
	if len(st.Drops) > 0 {
		fmt.Fprintf(w, "VRRP packets dropped before an instance matched: %s\n", counts(st.Drops))
	}
	role := "no (backup: forwards nothing, answers no ARP)"
	if st.Master {
		role = "yes (master)"
	}
	fmt.Fprintf(w, "gratuitous ARPs sent %d\ngolvs serves: %s\n", st.GARPSent, role)
}

func counts(m map[string]uint64) string {
	var k []string
	for n := range m {
		k = append(k, n)
	}
	sort.Strings(k)
	var parts []string
	for _, n := range k {
		parts = append(parts, fmt.Sprintf("%s %d", n, m[n]))
	}
	return strings.Join(parts, ", ")
}
