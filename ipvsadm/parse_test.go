package ipvsadm

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/golvs/golvs/ipvs"
	"github.com/google/go-cmp/cmp"
)

var (
	v4    = netip.MustParseAddr
	tcp80 = ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: v4("10.0.0.1"), Port: 80}
)

func TestParseValid(t *testing.T) {
	p := testParser(t)
	svc := func(k ipvs.ServiceKey, sched string, flags, timeout, mask uint32) *ipvs.ServiceConfig {
		return &ipvs.ServiceConfig{ServiceKey: k, Sched: sched, Flags: flags, Timeout: timeout, Netmask: mask}
	}
	dest := func(a string, port uint16, m ipvs.Method, w int32) *ipvs.DestConfig {
		return &ipvs.DestConfig{Addr: v4(a), Port: port, Method: m, Weight: w}
	}
	v6svc := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: v4("2001:db8::1"), Port: 80}
	fwm7v6 := ipvs.ServiceKey{Proto: ipvs.ProtoTCP, FWMark: 7, V6: true}
	tests := []struct {
		name   string
		line   string
		cmd    Cmd
		svc    *ipvs.ServiceConfig
		dest   *ipvs.DestConfig
		format Format
		mode   ListMode
	}{
		{name: "add default sched", line: "-A -t 10.0.0.1:80", cmd: CmdAdd, svc: svc(tcp80, "wlc", 0, 0, 0xffffffff)},
		{name: "long options", line: "--add-service --tcp-service 10.0.0.1:80 --scheduler rr", cmd: CmdAdd, svc: svc(tcp80, "rr", 0, 0, 0xffffffff)},
		{name: "long option with =", line: "--add-service --tcp-service=10.0.0.1:80 --scheduler=rr", cmd: CmdAdd, svc: svc(tcp80, "rr", 0, 0, 0xffffffff)},
		{name: "bundled -At", line: "-At 10.0.0.1:80", cmd: CmdAdd, svc: svc(tcp80, "wlc", 0, 0, 0xffffffff)},
		{name: "service name port", line: "-A -t 10.0.0.1:http -s rr", cmd: CmdAdd, svc: svc(tcp80, "rr", 0, 0, 0xffffffff)},
		{name: "service alias port", line: "-A -t 10.0.0.1:www", cmd: CmdAdd, svc: svc(tcp80, "wlc", 0, 0, 0xffffffff)},
		{name: "udp service name", line: "-A -u 10.0.0.1:domain", cmd: CmdAdd,
			svc: svc(ipvs.ServiceKey{Proto: ipvs.ProtoUDP, Addr: v4("10.0.0.1"), Port: 53}, "wlc", 0, 0, 0xffffffff)},
		{name: "host name", line: "-A -t www.example.com:80", cmd: CmdAdd, svc: svc(tcp80, "wlc", 0, 0, 0xffffffff)},
		{name: "inet_aton short form", line: "-A -t 10.1:80", cmd: CmdAdd, svc: svc(tcp80, "wlc", 0, 0, 0xffffffff)},
		{name: "inet_aton hex and octal", line: "-A -t 0xa.0.0.01:80", cmd: CmdAdd, svc: svc(tcp80, "wlc", 0, 0, 0xffffffff)},
		{name: "port with sign and space rules of strtol", line: "-A -t 10.0.0.1:+80", cmd: CmdAdd, svc: svc(tcp80, "wlc", 0, 0, 0xffffffff)},
		{name: "ipv6 bracketed", line: "-A -t [2001:db8::1]:80 -p", cmd: CmdAdd, svc: svc(v6svc, "wlc", ipvs.SvcPersistent, 360, 128)},
		{name: "ipv6 bare literal has no port", line: "-A -t 2001:db8::1 -p 600", cmd: CmdAdd,
			svc: svc(ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: v4("2001:db8::1")}, "wlc", ipvs.SvcPersistent, 600, 128)},
		{name: "bracketed ipv4 loses its port", line: "-A -t [10.0.0.1]:80 -p", cmd: CmdAdd,
			svc: svc(ipvs.ServiceKey{Proto: ipvs.ProtoTCP, Addr: v4("10.0.0.1")}, "wlc", ipvs.SvcPersistent, 360, 0xffffffff)},
		{name: "-p then option gives 360", line: "-A -t 10.0.0.1:80 -p -s rr", cmd: CmdAdd, svc: svc(tcp80, "rr", ipvs.SvcPersistent, 360, 0xffffffff)},
		{name: "-p last gives 360", line: "-A -t 10.0.0.1:80 -p", cmd: CmdAdd, svc: svc(tcp80, "wlc", ipvs.SvcPersistent, 360, 0xffffffff)},
		{name: "-p value", line: "-A -t 10.0.0.1:80 -p 600", cmd: CmdAdd, svc: svc(tcp80, "wlc", ipvs.SvcPersistent, 600, 0xffffffff)},
		{name: "-p bundled value", line: "-A -t 10.0.0.1:80 -p600", cmd: CmdAdd, svc: svc(tcp80, "wlc", ipvs.SvcPersistent, 600, 0xffffffff)},
		{name: "--persistent=", line: "-A -t 10.0.0.1:80 --persistent=2678400", cmd: CmdAdd, svc: svc(tcp80, "wlc", ipvs.SvcPersistent, 2678400, 0xffffffff)},
		{name: "-M 24 is 0.0.0.24", line: "-A -t 10.0.0.1:80 -p -M 24", cmd: CmdAdd, svc: svc(tcp80, "wlc", ipvs.SvcPersistent, 360, 24)},
		{name: "-M dotted", line: "-A -t 10.0.0.1:80 -p -M 255.255.255.0", cmd: CmdAdd, svc: svc(tcp80, "wlc", ipvs.SvcPersistent, 360, 0xffffff00)},
		{name: "-M host name", line: "-A -t 10.0.0.1:80 -p -M mask.example.com", cmd: CmdAdd, svc: svc(tcp80, "wlc", ipvs.SvcPersistent, 360, 0xffff0000)},
		{name: "-M ipv6 prefix", line: "-A -t [2001:db8::1]:80 -p -M 64", cmd: CmdAdd, svc: svc(v6svc, "wlc", ipvs.SvcPersistent, 360, 64)},
		{name: "-M before -t v6 is overwritten", line: "-A -M 64 -t [2001:db8::1]:80 -p", cmd: CmdAdd, svc: svc(v6svc, "wlc", ipvs.SvcPersistent, 360, 128)},
		{name: "fwmark v6 with sched flags", line: "-A -f 7 -6 -s sh -b sh-fallback,sh-port", cmd: CmdAdd,
			svc: svc(fwm7v6, "sh", ipvs.SvcSched1|ipvs.SvcSched2, 0, 128)},
		{name: "sched flags before -s", line: "-A -f 7 -b mh-port -s mh", cmd: CmdAdd,
			svc: svc(ipvs.ServiceKey{Proto: ipvs.ProtoTCP, FWMark: 7}, "mh", ipvs.SvcSched2, 0, 0xffffffff)},
		{name: "fwmark max", line: "-A -f 4294967295", cmd: CmdAdd,
			svc: svc(ipvs.ServiceKey{Proto: ipvs.ProtoTCP, FWMark: 4294967295}, "wlc", 0, 0, 0xffffffff)},
		{name: "ops on udp", line: "-A -u 10.0.0.1:53 -o --pe sip -p", cmd: CmdAdd,
			svc: &ipvs.ServiceConfig{ServiceKey: ipvs.ServiceKey{Proto: ipvs.ProtoUDP, Addr: v4("10.0.0.1"), Port: 53}, Sched: "wlc",
				Flags: ipvs.SvcOnePacket | ipvs.SvcPersistent, Timeout: 360, Netmask: 0xffffffff, PE: "sip"}},
		{name: "scheduler truncated to 15", line: "-A -t 10.0.0.1:80 -s abcdefghijklmnopq", cmd: CmdAdd, svc: svc(tcp80, "abcdefghijklmno", 0, 0, 0xffffffff)},
		{name: "edit", line: "-E -t 10.0.0.1:80 -s wrr", cmd: CmdEdit, svc: svc(tcp80, "wrr", 0, 0, 0xffffffff)},
		{name: "delete", line: "-D -t 10.0.0.1:80", cmd: CmdDel},
		{name: "dest defaults to service port and DR", line: "-a -t 10.0.0.1:80 -r 192.168.0.2", cmd: CmdAddDest, dest: dest("192.168.0.2", 80, ipvs.MethodRoute, 1)},
		{name: "DR port forced", line: "-a -t 10.0.0.1:80 -r 192.168.0.2:8080", cmd: CmdAddDest, dest: dest("192.168.0.2", 80, ipvs.MethodRoute, 1)},
		{name: "TUN port forced", line: "-a -t 10.0.0.1:80 -r 192.168.0.2:8080 -i", cmd: CmdAddDest, dest: dest("192.168.0.2", 80, ipvs.MethodTunnel, 1)},
		{name: "NAT keeps port", line: "-a -t 10.0.0.1:80 -r 192.168.0.2:8080 -m -w 0", cmd: CmdAddDest, dest: dest("192.168.0.2", 8080, ipvs.MethodMasq, 0)},
		{name: "fullnat keeps port", line: "-a -t 10.0.0.1:80 -r 192.168.0.2:8080 --fullnat", cmd: CmdAddDest, dest: dest("192.168.0.2", 8080, ipvs.MethodFullNAT, 1)},
		{name: "-r before -t gets port 0", line: "-a -r 192.168.0.2 -t 10.0.0.1:80 -m", cmd: CmdAddDest, dest: dest("192.168.0.2", 0, ipvs.MethodMasq, 1)},
		{name: "fwmark dest keeps port", line: "-a -f 1 -r 192.168.0.2:8080", cmd: CmdAddDest, dest: dest("192.168.0.2", 8080, ipvs.MethodRoute, 1)},
		{name: "dest service name port", line: "-a -t 10.0.0.1:80 -r real1.example.com:http-alt -m", cmd: CmdAddDest, dest: dest("192.168.0.2", 8080, ipvs.MethodMasq, 1)},
		{name: "bundled -mw=5", line: "-a -t 10.0.0.1:80 -r 192.168.0.2 -mw=5", cmd: CmdAddDest, dest: dest("192.168.0.2", 80, ipvs.MethodMasq, 5)},
		{name: "bundled -w7", line: "-e -t 10.0.0.1:80 -r 192.168.0.2 -w7", cmd: CmdEditDest, dest: dest("192.168.0.2", 80, ipvs.MethodRoute, 7)},
		{name: "thresholds", line: "-a -t 10.0.0.1:80 -r 192.168.0.2 -w 65535 -x 2147483647 -y 50", cmd: CmdAddDest,
			dest: &ipvs.DestConfig{Addr: v4("192.168.0.2"), Port: 80, Method: ipvs.MethodRoute, Weight: 65535, UThreshold: 2147483647, LThreshold: 50}},
		{name: "gue tunnel", line: "-a -t 10.0.0.1:80 -r 192.168.0.2 -i --tun-type gue --tun-port 6080 --tun-remcsum", cmd: CmdAddDest,
			dest: &ipvs.DestConfig{Addr: v4("192.168.0.2"), Port: 80, Method: ipvs.MethodTunnel, Weight: 1, TunType: ipvs.TunGUE, TunPort: 6080, TunFlags: ipvs.TunFlagRemCsum}},
		{name: "gre tunnel csum", line: "-a -t 10.0.0.1:80 -r 192.168.0.2 -i --tun-type gre --tun-csum", cmd: CmdAddDest,
			dest: &ipvs.DestConfig{Addr: v4("192.168.0.2"), Port: 80, Method: ipvs.MethodTunnel, Weight: 1, TunType: ipvs.TunGRE, TunFlags: ipvs.TunFlagCsum}},
		{name: "tunnel dest of other family", line: "-a -t 10.0.0.1:80 -r [2001:db8::2]:80 -i", cmd: CmdAddDest, dest: dest("2001:db8::2", 80, ipvs.MethodTunnel, 1)},
		{name: "v6 fwmark dest", line: "-a -f 7 -6 -r [2001:db8::2]:8080 -m", cmd: CmdAddDest, dest: dest("2001:db8::2", 8080, ipvs.MethodMasq, 1)},
		{name: "delete dest port defaulting", line: "-d -t 10.0.0.1:80 -r 192.168.0.2", cmd: CmdDelDest, dest: dest("192.168.0.2", 80, ipvs.MethodRoute, 1)},
		{name: "no arguments lists", line: "", cmd: CmdList},
		{name: "-Ln", line: "-Ln", cmd: CmdList, format: FmtNumeric},
		{name: "-l", line: "-l", cmd: CmdList},
		{name: "-Lnc", line: "-Lnc", cmd: CmdList, format: FmtNumeric, mode: ListModeConns},
		{name: "list service", line: "-L -n -t 10.0.0.1:80 --stats --exact", cmd: CmdList, format: FmtNumeric | FmtStats | FmtExact, mode: ListModeService},
		{name: "list timeout", line: "-L --timeout", cmd: CmdList, mode: ListModeTimeout},
		{name: "list daemon", line: "-L --daemon", cmd: CmdList, mode: ListModeDaemon},
		{name: "list sort is a no-op", line: "-L --sort --nosort --rate --thresholds --persistent-conn --tun-info --syncid 3", cmd: CmdList,
			format: FmtNoSort | FmtRate | FmtThresholds | FmtPersistentConn | FmtTunInfo},
		{name: "list conns persistent", line: "-L -c --persistent-conn", cmd: CmdList, format: FmtPersistentConn, mode: ListModeConns},
		{name: "save", line: "-S", cmd: CmdSave, format: FmtRule},
		{name: "save numeric", line: "-S -n", cmd: CmdSave, format: FmtRule | FmtNumeric},
		{name: "clear", line: "-C", cmd: CmdFlush},
		{name: "zero all", line: "-Z", cmd: CmdZero},
		{name: "zero one", line: "-Z -t 10.0.0.1:80", cmd: CmdZero},
		{name: "restore", line: "-R", cmd: CmdRestore},
		{name: "help", line: "-h", cmd: CmdHelp},
		{name: "help ignores the rest", line: "--help --bogus", cmd: CmdHelp},
		{name: "version", line: "-v", cmd: CmdVersion},
		{name: "leftover before the command", line: "900 --set 120 300", cmd: CmdSetTimeout},
		{name: "double dash", line: "--set -- 1 2 3", cmd: CmdSetTimeout},
		{name: "start daemon", line: "--start-daemon master --mcast-group 224.0.0.81 --mcast-port 8848 --mcast-ttl 1 --sync-maxlen 1472 --syncid 5", cmd: CmdStartDaemon},
		{name: "stop daemon", line: "--stop-daemon backup", cmd: CmdStopDaemon},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := p.Parse(strings.Fields(tt.line))
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.line, err)
			}
			if c.Cmd != tt.cmd {
				t.Errorf("Cmd: got %v, want %v", c.Cmd, tt.cmd)
			}
			if tt.svc != nil {
				if d := cmp.Diff(*tt.svc, c.Service, addrCmp); d != "" {
					t.Errorf("Service (-want +got):\n%s", d)
				}
			}
			if tt.dest != nil {
				if d := cmp.Diff(*tt.dest, c.Dest, addrCmp); d != "" {
					t.Errorf("Dest (-want +got):\n%s", d)
				}
			}
			if c.Format != tt.format {
				t.Errorf("Format: got %#x, want %#x", c.Format, tt.format)
			}
			if c.Cmd == CmdList && c.ListMode() != tt.mode {
				t.Errorf("ListMode: got %v, want %v", c.ListMode(), tt.mode)
			}
		})
	}
}

func TestParseSetAndDaemon(t *testing.T) {
	p := testParser(t)
	c := mustParse(t, p, "--set 900 0 300")
	if want := (Timeouts{900, 0, 300}); c.Timeouts != want {
		t.Errorf("got %+v, want %+v", c.Timeouts, want)
	}
	c = mustParse(t, p, "--start-daemon backup --mcast-group ff02::1 --syncid 5")
	want := Daemon{State: DaemonBackup, McastIfn: "eth0", SyncID: 5, McastGroup: v4("ff02::1")}
	if d := cmp.Diff(want, c.Daemon, addrCmp); d != "" {
		t.Errorf("Daemon (-want +got):\n%s", d)
	}
}

const tryHelp = "Try `ipvsadm -h' or 'ipvsadm --help' for more information."

func TestParseErrors(t *testing.T) {
	p := testParser(t)
	tests := []struct {
		line   string
		msg    string
		status int
		prefix bool // the message is ipvsadm's words followed by detail from another package
	}{
		{"-n -L", tryHelp, 255, false},
		{"--bogus", tryHelp, 255, false},
		{"-t 10.0.0.1:80", tryHelp, 255, false},
		{"-A=x", "-A=x: missing argument", 255, false},
		{"foo", tryHelp, 255, false},
		{"-L --bogus", "--bogus: unknown option", 255, false},
		{"-L -q", "-q: unknown option", 255, false},
		{"-Lq", "-Lq: unknown option", 255, false},
		{"-L=", "-L=: unknown option", 255, false},
		{"-A -t", "-t: missing argument", 255, false},
		{"-A --tcp-service", "--tcp-service: missing argument", 255, false},
		{"-L -L", "invalid option `-L'", 2, false},
		{"-A -t 10.0.0.1:80 -A", "invalid option `-A'", 2, false},
		{"-A -t 10.0.0.1:80 -t 10.0.0.2:80", "multiple 'service-address' options specified", 2, false},
		{"-A -t 10.0.0.1:80 -f 1", "multiple 'service-address' options specified", 2, false},
		{"-a -t 10.0.0.1:80 -r 192.168.0.2 -m -g", "multiple 'forwarding-method' options specified", 2, false},
		{"-a -t 10.0.0.1:80 -r 192.168.0.2 -m --fullnat", "multiple 'forwarding-method' options specified", 2, false},
		{"-L -n -n", "multiple 'numeric' options specified", 2, false},
		{"-A -t 12345", "illegal virtual server address[:port] specified", 2, false},
		{"-A -t [::1]", "illegal virtual server address[:port] specified", 2, false},
		{"-A -t [::1]:", "illegal virtual server address[:port] specified", 2, false},
		{"-A -t [::1", "illegal virtual server address[:port] specified", 2, false},
		{"-A -t 10.0.0.1:65536", "illegal virtual server address[:port] specified", 2, false},
		{"-A -t 10.0.0.1:nosuch", "illegal virtual server address[:port] specified", 2, false},
		{"-A -t 10.0.0.256:80", "illegal virtual server address[:port] specified", 2, false},
		{"-A -t unknown.example.com:80", "illegal virtual server address[:port] specified", 2, false},
		{"-A -u 10.0.0.1:https", "illegal virtual server address[:port] specified", 2, false},
		{"-a -r 192.168.0.2:http -t 10.0.0.1:80", "illegal real server address[:port] specified", 2, false},
		{"-a -t 10.0.0.1:80 -r bad..host", "illegal real server address[:port] specified", 2, false},
		{"-A -f 0", "invalid fwmark value `0' specified", 2, false},
		{"-A -f 4294967296", "invalid fwmark value `4294967296' specified", 2, false},
		{"-A -f x", "invalid fwmark value `x' specified", 2, false},
		{"-A -t 10.0.0.1:80 -6", "-6 used before -f\n", 2, false},
		{"-A -t 10.0.0.1:80 -p 0", "invalid timeout value `0' specified", 2, false},
		{"-A -t 10.0.0.1:80 -p 2678401", "invalid timeout value `2678401' specified", 2, false},
		{"-A -t 10.0.0.1:80 -p=", "invalid timeout value `' specified", 2, false},
		{"-A -t 10.0.0.1:80 -M bad", "illegal virtual server persistent mask specified", 2, false},
		{"-A -t 10.0.0.1:80 -M 4294967296", "illegal virtual server persistent mask specified", 2, false},
		{"-A -t [2001:db8::1]:80 -M 129", "illegal ipv6 netmask specified", 2, false},
		{"-A -f 1 -6 -M x", "illegal ipv6 netmask specified", 2, false},
		{"-a -t 10.0.0.1:80 -r 192.168.0.2 -w 65536", "illegal weight specified: 65536 (allowed: 0..65535)", 2, false},
		{"-a -t 10.0.0.1:80 -r 192.168.0.2 -w -1", "illegal weight specified: -1 (allowed: 0..65535)", 2, false},
		{"-a -t 10.0.0.1:80 -r 192.168.0.2 -w abc", "illegal weight specified: abc (allowed: 0..65535)", 2, false},
		{"-a -t 10.0.0.1:80 -r 192.168.0.2 -x -1", "illegal u_threshold specified: -1 (allowed: 0..2147483647)", 2, false},
		{"-a -t 10.0.0.1:80 -r 192.168.0.2 -y 2147483648", "illegal l_threshold specified: 2147483648 (allowed: 0..2147483647)", 2, false},
		{"-a -t 10.0.0.1:80 -r 192.168.0.2 -y x", "illegal l_threshold specified: x (allowed: 0..2147483647)", 2, false},
		{"--start-daemon foo", "illegal start-daemon parameter specified", 2, false},
		{"--stop-daemon foo", "illegal start_daemon specified", 2, false},
		{"--start-daemon master --syncid 256", "illegal syncid specified", 2, false},
		{"--start-daemon master --mcast-group 10.0.0.1", "invalid IPv4 mcast-group `10.0.0.1'", 2, false},
		{"--start-daemon master --mcast-group 2001:db8::1", "invalid IPv6 mcast-group `2001:db8::1'", 2, false},
		{"--start-daemon master --mcast-port 0", "illegal mcast-port specified", 2, false},
		{"--start-daemon master --mcast-ttl 256", "illegal mcast-ttl specified", 2, false},
		{"--start-daemon master --sync-maxlen 65508", "illegal sync-maxlen specified", 2, false},
		{"--start-daemon master -n", "Illegal 'numeric' option with the 'start-daemon' command", 2, false},
		{"--stop-daemon master --mcast-interface eth1", "Illegal 'mcast-interface' option with the 'stop-daemon' command", 2, false},
		{"-a -t 10.0.0.1:80 -r 192.168.0.2 -i --tun-type foo", "illegal tunnel type specified", 2, false},
		{"-a -t 10.0.0.1:80 -r 192.168.0.2 -i --tun-port 0", "illegal tunnel port specified", 2, false},
		{"--set 1 2", "--set option requires 3 timeout values", 2, false},
		{"--set 1 2 x", "invalid timeout value `x' specified", 2, false},
		{"--set 1 2 2678401", "invalid timeout value `2678401' specified", 2, false},
		{"--set 1 2 3 4", "unexpected argument 4", 2, false},
		{"-L foo", "unexpected argument foo", 2, false},
		{"-L -- -n", "unexpected argument -n", 2, false},
		{"-A -t 10.0.0.1:80 -b sh-port", "incompatible scheduler flag `sh-port'", 2, true},
		{"-A -t 10.0.0.1:80 -s mh -b sh-port", "incompatible scheduler flag `sh-port'", 2, true},
		{"-A -t 10.0.0.1:80 -b foo", "invalid scheduler flag `foo'", 2, true},
		{"-A -t 10.0.0.1:80 -b ,", "invalid scheduler flag `,'", 2, true},
		{"-A", "You need to supply the 'service-address' option for the 'add-service' command", 2, false},
		{"-E -s rr", "You need to supply the 'service-address' option for the 'edit-service' command", 2, false},
		{"-D", "You need to supply the 'service-address' option for the 'delete-service' command", 2, false},
		{"-A -t 10.0.0.1:80 -r 192.168.0.2", "Illegal 'real-server' option with the 'add-service' command", 2, false},
		{"-A -t 10.0.0.1:80 -n", "Illegal 'numeric' option with the 'add-service' command", 2, false},
		{"-A -t 10.0.0.1:80 -w 1", "Illegal 'weight' option with the 'add-service' command", 2, false},
		{"-D -t 10.0.0.1:80 -s rr", "Illegal 'scheduler' option with the 'delete-service' command", 2, false},
		{"-C -n", "Illegal 'numeric' option with the 'flush' command", 2, false},
		{"-S -c", "Illegal 'connection' option with the 'save' command", 2, false},
		{"-S --nosort", "Illegal 'nosort' option with the 'save' command", 2, false},
		{"-Z -n", "Illegal 'numeric' option with the 'zero' command", 2, false},
		{"-R -n", "Illegal 'numeric' option with the 'restore' command", 2, false},
		{"--set 1 2 3 -n", "Illegal 'numeric' option with the 'set' command", 2, false},
		{"-L -s rr", "Illegal 'scheduler' option with the 'list' command", 2, false},
		{"-L --tun-type gre", "Illegal 'tun-type' option with the 'list' command", 2, false},
		{"-L -c --timeout", "The option 'timeout' conflicts with the 'connection' option in the 'list' command", 2, false},
		{"-L -c -t 10.0.0.1:80", "The option 'service-address' conflicts with the 'connection' option in the 'list' command", 2, false},
		{"-L --daemon -t 10.0.0.1:80", "The option 'daemon' conflicts with the 'service-address' option in the 'list' command", 2, false},
		{"-L --stats --timeout", "options conflicts in the list command", 2, false},
		{"-L -c --rate", "options conflicts in the list command", 2, false},
		{"-L --daemon --thresholds", "options conflicts in the list command", 2, false},
		{"-L --daemon --persistent-conn", "options conflicts in the list command", 2, false},
		{"-a -t 10.0.0.1:80", "You need to supply the 'real-server' option for the 'add-server' command", 2, false},
		{"-e -r 192.168.0.2", "You need to supply the 'service-address' option for the 'edit-server' command", 2, false},
		{"-d -t 10.0.0.1:80 -r 192.168.0.2 -w 1", "Illegal 'weight' option with the 'delete-server' command", 2, false},
		{"-a -t 10.0.0.1:80 -r 192.168.0.2 -s rr", "Illegal 'scheduler' option with the 'add-server' command", 2, false},
		{"-A -t 10.0.0.1:0", "Zero port specified for non-persistent service", 2, false},
		{"-E -t 10.0.0.1 -s rr", "Zero port specified for non-persistent service", 2, false},
		{"-A -t 10.0.0.1:80 -o", "One-Packet Scheduling is only for UDP virtual services", 2, false},
		{"-a -t 10.0.0.1:80 -r [2001:db8::2]:80 -m", "Different address family is allowed only for tunneling servers", 2, false},
		{"-a -f 1 -r [2001:db8::2]:80", "Different address family is allowed only for tunneling servers", 2, false},
		{"-a -t 10.0.0.1:80 -r 192.168.0.2 --tun-type gue", "Tunnel options conflict with forward method", 2, false},
		{"-a -t 10.0.0.1:80 -r 192.168.0.2 --fullnat --tun-csum", "Tunnel options conflict with forward method", 2, false},
		{"-a -t 10.0.0.1:80 -r 192.168.0.2 -i --tun-type gue", "You need to supply the 'tun-port' option for the 'gue' tunnel type", 2, false},
		{"-a -t 10.0.0.1:80 -r 192.168.0.2 -i --tun-type gre --tun-port 5", "Illegal 'tun-port' option with the 'gre' tunnel type", 2, false},
		{"-a -t 10.0.0.1:80 -r 192.168.0.2 -i --tun-type gre --tun-remcsum", "Illegal 'tun-remcsum' option with the 'gre' tunnel type", 2, false},
		{"-a -t 10.0.0.1:80 -r 192.168.0.2 -i --tun-type gre --tun-csum --tun-nocsum", "The option 'tun-csum' conflicts with the 'tun-nocsum' option in the 'gre' tunnel type", 2, false},
		{"-a -t 10.0.0.1:80 -r 192.168.0.2 -i --tun-type gue --tun-port 5 --tun-csum --tun-remcsum", "The option 'tun-remcsum' conflicts with the 'tun-csum' option in the 'gue' tunnel type", 2, false},
		{"-a -t 10.0.0.1:80 -r 192.168.0.2 -i --tun-csum", "Illegal 'tun-csum' option with the 'ipip' tunnel type", 2, false},
		{"-A --sctp-service 10.0.0.1:80", "SCTP services are not supported by golvs", 2, false},
		{"-L --sctp-service 10.0.0.1:80", "SCTP services are not supported by golvs", 2, false},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			c, err := p.Parse(strings.Fields(tt.line))
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want error %q", tt.line, c, tt.msg)
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("error %T %v is not an *Error", err, err)
			}
			if tt.prefix {
				if !strings.HasPrefix(e.Error(), tt.msg) {
					t.Errorf("got %q, want it to begin with %q", e.Error(), tt.msg)
				}
			} else if e.Error() != tt.msg {
				t.Errorf("got %q, want %q", e.Error(), tt.msg)
			}
			if e.Status != tt.status || ExitStatus(err) != tt.status {
				t.Errorf("status: got %d, want %d", e.Status, tt.status)
			}
		})
	}
}

func TestParseErrorsWrap(t *testing.T) {
	p := testParser(t)
	_, err := p.Parse(strings.Fields("-a -t 10.0.0.1:80 -r 192.168.0.2 -w 70000"))
	if !errors.Is(err, ipvs.ErrInvalid) {
		t.Errorf("weight error %v does not wrap ipvs.ErrInvalid", err)
	}
	_, err = p.Parse(strings.Fields("-A --sctp-service 10.0.0.1:80"))
	if !errors.Is(err, ErrSCTP) {
		t.Errorf("%v does not wrap ErrSCTP", err)
	}
}

func TestInetAton(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" for invalid
	}{
		{"10.0.0.1", "10.0.0.1"}, {"24", "0.0.0.24"}, {"10.1", "10.0.0.1"}, {"10.1.2", "10.1.0.2"},
		{"0x0a.0.0.010", "10.0.0.8"}, {"4294967295", "255.255.255.255"}, {"4294967296", ""},
		{"1.2.3.256", ""}, {"256.1.2.3", ""}, {"1.2.65535", "1.2.255.255"}, {"1.2.65536", ""},
		{"1.2.3.4 trailing", "1.2.3.4"}, {"1.2.3.4x", ""}, {"", ""}, {".1", ""}, {"1.", ""},
		{"1.2.3.4.5", ""}, {"0x", ""}, {"08", ""}, {"-1", ""}, {"1.-2", ""},
	}
	for _, tt := range tests {
		a, ok := inetAton(tt.in)
		got := ""
		if ok {
			got = a.String()
		}
		if got != tt.want {
			t.Errorf("inetAton(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestInetNtop(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1": "10.0.0.1", "2001:db8::1": "2001:db8::1", "::1": "::1", "::": "::",
		"::ffff:1.2.3.4": "::ffff:1.2.3.4", "::1.2.3.4": "::1.2.3.4", "::2:3": "::0.2.0.3",
		"1:0:0:2:0:0:0:3": "1:0:0:2::3", "1:0:0:2:3:0:0:4": "1::2:3:0:0:4", "fe80::": "fe80::",
		"1:2:3:4:5:6:7:8": "1:2:3:4:5:6:7:8", "1::": "1::", "0:1:0:1:0:1:0:1": "0:1:0:1:0:1:0:1",
	} {
		if got := inetNtop(v4(in)); got != want {
			t.Errorf("inetNtop(%s) = %q, want %q", in, got, want)
		}
	}
}
