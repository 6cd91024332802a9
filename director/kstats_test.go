package director

import (
	"testing"
)

// snmpSample is /proc/net/snmp's start as Linux 6.18 writes it.
const snmpSample = `Ip: Forwarding DefaultTTL InReceives InHdrErrors InAddrErrors ForwDatagrams InUnknownProtos InDiscards InDelivers OutRequests OutDiscards OutNoRoutes ReasmTimeout ReasmReqds ReasmOKs ReasmFails FragOKs FragFails FragCreates OutTransmits
Ip: 2 64 7905 0 0 0 0 0 7905 5723 0 0 3 1207 401 5 0 0 0 5723
Icmp: InMsgs InErrors InCsumErrors InDestUnreachs
Icmp: 1 0 0 1
IcmpMsg: InType3
IcmpMsg: 1
`

func TestParseSnmp(t *testing.T) {
	m := parseSnmp([]byte(snmpSample))
	ip := m["Ip"]
	for k, want := range map[string]uint64{"ReasmTimeout": 3, "ReasmReqds": 1207, "ReasmOKs": 401, "ReasmFails": 5, "Forwarding": 2, "OutTransmits": 5723} {
		if ip[k] != want {
			t.Errorf("Ip %s = %d, want %d", k, ip[k], want)
		}
	}
	if m["Icmp"]["InDestUnreachs"] != 1 || m["IcmpMsg"]["InType3"] != 1 {
		t.Errorf("Icmp %v IcmpMsg %v", m["Icmp"], m["IcmpMsg"])
	}
	// A values line that does not match its header is skipped.
	if got := parseSnmp([]byte("Ip: A B\nIp: 1\nTcp: C\nTcp: 7\n")); len(got["Ip"]) != 0 || got["Tcp"]["C"] != 7 {
		t.Errorf("mismatched line: %v", got)
	}
}

func FuzzParseSnmp(f *testing.F) {
	f.Add([]byte(snmpSample))
	f.Fuzz(func(t *testing.T, b []byte) {
		for p, m := range parseSnmp(b) {
			if p == "" && len(m) > 0 {
				t.Fatalf("fields under an empty protocol: %v", m)
			}
		}
	})
}
