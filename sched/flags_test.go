package sched

import (
	"errors"
	"strings"
	"testing"

	"github.com/golvs/golvs/ipvs"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		sched   string
		list    string
		want    uint32
		wantErr string // prefix, then the allowed names must follow
		allowed []string
	}{
		{"sh both", "sh", "sh-fallback,sh-port", ipvs.SvcSched1 | ipvs.SvcSched2, "", nil},
		{"mh both", "mh", "mh-port,mh-fallback", ipvs.SvcSched1 | ipvs.SvcSched2, "", nil},
		{"generic with wlc", "wlc", "flag-1,flag-3", ipvs.SvcSched1 | ipvs.SvcSched3, "", nil},
		{"generic with sh", "sh", "flag-2", ipvs.SvcSched2, "", nil},
		{"no -s means wlc", "", "flag-2", ipvs.SvcSched2, "", nil},
		{"empty items skipped (strtok)", "sh", ",sh-port,,", ipvs.SvcSched2, "", nil},
		{"unknown", "sh", "sh-port,bogus", 0, "invalid scheduler flag `bogus'", FlagNames},
		{"sh flag with wlc", "wlc", "sh-port", 0, "incompatible scheduler flag `sh-port'", []string{"flag-1", "flag-2", "flag-3"}},
		{"sh flag without -s", "", "sh-fallback", 0, "incompatible scheduler flag `sh-fallback'", []string{"scheduler wlc"}},
		{"mh flag with sh", "sh", "mh-port", 0, "incompatible scheduler flag `mh-port'", []string{"sh-fallback", "sh-port"}},
		{"sh flag with mh", "mh", "flag-1,sh-fallback", 0, "incompatible scheduler flag `sh-fallback'", []string{"mh-fallback", "mh-port"}},
		{"empty list", "sh", "", 0, "invalid scheduler flag `'", FlagNames},
		{"case matters", "sh", "SH-PORT", 0, "invalid scheduler flag `SH-PORT'", FlagNames},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseFlags(tt.sched, tt.list)
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("got %#x, %v; want %#x, nil", got, err, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("got %#x, nil; want error %q", got, tt.wantErr)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, tt.wantErr) {
				t.Errorf("error %q, want prefix %q", msg, tt.wantErr)
			}
			for _, a := range tt.allowed {
				if !strings.Contains(msg, a) {
					t.Errorf("error %q does not name allowed %q", msg, a)
				}
			}
			if !errors.Is(err, ErrFlag) || !errors.Is(err, ipvs.ErrInvalid) {
				t.Errorf("error %v is not ErrFlag and ipvs.ErrInvalid", err)
			}
			var fe *FlagError
			if !errors.As(err, &fe) || !strings.Contains(tt.list, fe.Flag) {
				t.Errorf("FlagError.Flag = %q, not from %q", fe.Flag, tt.list)
			}
		})
	}
}

func TestFormatFlags(t *testing.T) {
	tests := []struct {
		sched string
		flags uint32
		want  string
	}{
		{"sh", ipvs.SvcSched1 | ipvs.SvcSched2, "sh-fallback,sh-port"},
		{"sh", ipvs.SvcSched2, "sh-port"},
		{"sh", ipvs.SvcSched3, ""}, // ipvsadm prints no name for flag-3 with sh
		{"mh", ipvs.SvcSched1 | ipvs.SvcSched3, "mh-fallback"},
		{"wlc", ipvs.SvcSched1 | ipvs.SvcSched2 | ipvs.SvcSched3, "flag-1,flag-2,flag-3"},
		{"rr", ipvs.SvcSched3 | ipvs.SvcPersistent, "flag-3"},
		{"rr", ipvs.SvcPersistent | ipvs.SvcOnePacket, ""},
	}
	for _, tt := range tests {
		if got := FormatFlags(tt.sched, tt.flags); got != tt.want {
			t.Errorf("FormatFlags(%q, %#x) = %q, want %q", tt.sched, tt.flags, got, tt.want)
		}
	}
	// round trip for every accepted combination
	for _, sched := range []string{"sh", "mh", "wlc"} {
		for _, name := range AllowedFlags(sched) {
			if strings.HasPrefix(name, "flag-") && sched != "wlc" {
				continue // flag-1 is sh-fallback's bit: sh lists it by that name
			}
			f, err := ParseFlags(sched, name)
			if err != nil {
				t.Fatal(err)
			}
			if got := FormatFlags(sched, f); got != name {
				t.Errorf("%s: %q -> %#x -> %q", sched, name, f, got)
			}
		}
	}
}

func TestUnknownScheduler(t *testing.T) {
	for _, name := range []string{"bogus", "", "WLC", "wlc "} {
		_, err := New(name)
		if err == nil {
			t.Errorf("New(%q) succeeded", name)
			continue
		}
		if !errors.Is(err, ErrUnknown) {
			t.Errorf("New(%q): %v is not ErrUnknown", name, err)
		}
		msg := err.Error()
		if !strings.Contains(msg, `"`+name+`"`) || !strings.Contains(msg, "wlc") || !strings.Contains(msg, "none") {
			t.Errorf("New(%q): %q does not name the value and the known schedulers", name, msg)
		}
		if err2 := Check(name); err2 == nil || err2.Error() != msg {
			t.Errorf("Check(%q) = %v, want %q", name, err2, msg)
		}
	}
	if err := Check("mh"); err != nil {
		t.Errorf("Check(mh): %v", err)
	}
}
