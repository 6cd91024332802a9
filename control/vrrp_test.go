package control

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golvs/golvs/vrrp"
)

// fakeVRRP stands in for the speaker: the control plane only reads its
// status and forwards priority changes.
type fakeVRRP struct {
	st      vrrp.Status
	setName string
	setPrio int
}

func (f *fakeVRRP) Status() vrrp.Status { return f.st }
func (f *fakeVRRP) Handover(context.Context) ([]string, error) {
	return []string{f.st.Instances[0].Name}, nil
}
func (f *fakeVRRP) SetPriority(_ context.Context, name string, p int) error {
	if p > 254 {
		return errors.New("vrrp: priority out of range")
	}
	f.setName, f.setPrio = name, p
	f.st.Instances[0].Priority = p
	return nil
}

func TestVRRPOp(t *testing.T) {
	s := &Server{}
	if rep := s.Handle(&Request{Op: "vrrp"}); rep.OK || !strings.Contains(rep.Error, "runs no VRRP") {
		t.Fatalf("without VRRP: %+v", rep)
	}
	since := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	f := &fakeVRRP{st: vrrp.Status{Master: true, GARPSent: 10, Instances: []vrrp.InstanceStatus{{
		Name: "VI_1", Interface: "ext0", VRID: 51, Version: 2, State: "MASTER", Since: since, Priority: 150, Configured: 150,
		IntervalMs: 1000, Preempt: true, Source: "198.18.0.2", Master: "198.18.0.2", MasterPrio: 150,
		Addrs: []string{"198.18.0.100", "198.19.0.1 dev int0"}, Auth: "PASS", Sent: 12, Received: 3, BecameMaster: 1,
		Drops: map[string]uint64{"ttl": 2, "auth": 1},
	}}}}
	s.SetVRRP(f)
	rep := s.Handle(&Request{Op: "vrrp"})
	if !rep.OK || rep.VRRP == nil || rep.VRRP.Instances[0].State != "MASTER" {
		t.Fatalf("vrrp op: %+v", rep)
	}
	var b strings.Builder
	WriteVRRP(&b, rep.VRRP, since.Add(90*time.Second))
	want := `VRRP instance VI_1 (vrid 51, version 2, interface ext0): MASTER for 1m30s
  priority 150 (configured 150), advert_int 1s, preempt, source 198.18.0.2, auth PASS
  master 198.18.0.2 (this director), priority 150
  virtual addresses: 198.18.0.100, 198.19.0.1 dev int0
  adverts sent 12, received 3; became master 1 times; priority 0 sent 0, received 0
  dropped: auth 1, ttl 2
gratuitous ARPs sent 10
golvs serves: yes (master)
`
	if b.String() != want {
		t.Fatalf("golvs adm --vrrp:\n%s\nwant\n%s", b.String(), want)
	}
	for _, c := range []struct {
		args []string
		ok   bool
		want string
	}{
		{[]string{"priority", "90"}, true, ""},
		{[]string{"priority", "80", "VI_1"}, true, "VI_1"},
		{[]string{"priority", "x"}, false, "not a number"},
		{[]string{"priority", "300"}, false, "out of range"},
		{[]string{"frobnicate"}, false, "unknown arguments"},
	} {
		rep := s.Handle(&Request{Op: "vrrp", Args: c.args})
		if rep.OK != c.ok || (!c.ok && !strings.Contains(rep.Error, c.want)) || (c.ok && f.setName != c.want) {
			t.Errorf("%v: %+v (set %q %d)", c.args, rep, f.setName, f.setPrio)
		}
	}
	if f.setPrio != 80 {
		t.Fatalf("priority %d, want the last accepted (80)", f.setPrio)
	}
}

func TestIsVRRPCommand(t *testing.T) {
	for _, c := range []struct {
		args []string
		want bool
	}{{[]string{"--vrrp"}, true}, {[]string{"--vrrp-priority", "5"}, true}, {[]string{"--vrrp-priority=5"}, true}, {[]string{"-L", "--vrrp"}, false}, {[]string{"-L"}, false}} {
		if got := IsVRRPCommand(c.args); got != c.want {
			t.Errorf("%v: %v", c.args, got)
		}
	}
}
