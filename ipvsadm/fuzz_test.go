package ipvsadm

import (
	"bytes"
	"io"
	"strings"
	"testing"
)

var fuzzSeeds = []string{
	"-A -t 10.0.0.1:80 -s rr",
	"-a -t 10.0.0.1:80 -r 192.168.0.2:8080 -m -w 3",
	"-A -f 7 -6 -s sh -b sh-fallback,sh-port -p -M 64",
	"-a -t [2001:db8::1]:80 -r [2001:db8::2]:80 -i --tun-type gue --tun-port 6080 --tun-csum",
	"-Ln --stats --exact",
	"-L -c --persistent-conn",
	"--set 900 120 300",
	"--start-daemon master --mcast-group ff02::1",
	"-A -u 10.1:domain -o -p600 --pe sip",
	"-a -t 10.0.0.1:80 -r 192.168.0.2 -mw=5 --fullnat",
	"-e -t 10.0.0.1:80 -r 192.168.0.2 -x 10 -y 20",
	"-A -t [1.2.3.4]:80 -p -M 0x18",
	"-L -- -n",
	"-At=x",
	"-L -n -Z",
	"-a -t [2001:db8::1]:80 -r [fe80::1]:80 -m",
	"-a -f 1 -r [::ffff:1.2.3.4]:80 -m",
}

// FuzzParse: any command line parses or fails with an *Error; what
// parses can be applied to a table and listed without panicking.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	p := testParser(f)
	f.Fuzz(func(t *testing.T, line string) {
		args := strings.Split(line, " ")
		c, err := p.Parse(args)
		if err != nil {
			if ExitStatus(err) != StatusFail && ExitStatus(err) != StatusKernel {
				t.Fatalf("Parse(%q): status %d", line, ExitStatus(err))
			}
			return
		}
		tb := newTestTable()
		if err := tb.Apply(c); err != nil {
			_ = err.Error()
		}
		for _, f := range []Format{FmtNumeric, 0, FmtRule, FmtStats | FmtExact, FmtTunInfo} {
			testLister(t, f).WriteAll(io.Discard, tb.ListServices())
		}
	})
}

// FuzzParseRules: any rules input parses or fails with a line-numbered
// error, and what parses restores without panicking.
func FuzzParseRules(f *testing.F) {
	f.Add([]byte(strings.Join(fuzzSeeds, "\n")))
	f.Add([]byte("# comment\nipvsadm -A -t 10.0.0.1:80\r\n\n-a -t 10.0.0.1:80 -r 192.168.0.2 ipvsadm -m\n-R\n"))
	p := testParser(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		lines, err := p.ParseRules(bytes.NewReader(data))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "line ") {
				t.Fatalf("error without a line number: %v", err)
			}
		}
		tb := newTestTable()
		if err := tb.Restore(lines); err != nil {
			_ = err.Error()
		}
		var b bytes.Buffer
		testLister(t, FmtRule|FmtNumeric).WriteAll(&b, tb.ListServices())
	})
}
