package metrics

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/net/netutil"
)

// Limits of the HTTP server. A scrape is one short request; anything
// slower or bigger than these is a broken or hostile client.
const (
	MaxConns            = 32 // open connections; more wait in the listen backlog
	MaxRequestsInFlight = 4  // concurrent scrapes; more are answered 503 (and counted)
	ReadHeaderTimeout   = 5 * time.Second
	ReadTimeout         = 10 * time.Second
	WriteTimeout        = 30 * time.Second
	IdleTimeout         = 60 * time.Second
	ScrapeTimeout       = 20 * time.Second
	MaxHeaderBytes      = 16 << 10
)

// Path is where the metrics are served.
const Path = "/metrics"

// Registry returns a registry holding c and the Go runtime's and the
// process's collectors (go_*, process_*), as exporters usually have.
func Registry(c prometheus.Collector) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	for _, x := range []prometheus.Collector{c, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		if err := reg.Register(x); err != nil {
			return nil, fmt.Errorf("metrics: %w", err)
		}
	}
	return reg, nil
}

// Handler serves reg at Path (with promhttp_metric_handler_* counting the
// scrapes, those refused included) and a short pointer page at /.
func Handler(reg *prometheus.Registry, logf func(string, ...any)) http.Handler {
	opts := promhttp.HandlerOpts{
		MaxRequestsInFlight: MaxRequestsInFlight,
		Timeout:             ScrapeTimeout,
		ErrorHandling:       promhttp.ContinueOnError,
		Registry:            reg,
	}
	if logf != nil {
		opts.ErrorLog = logfLogger(logf)
	}
	mux := http.NewServeMux()
	mux.Handle(Path, promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, opts)))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "golvs: metrics at %s\n", Path)
	})
	return mux
}

type logfLogger func(string, ...any)

func (l logfLogger) Println(v ...any) { l("metrics: %s", fmt.Sprint(v...)) }

// Server is a running /metrics endpoint.
type Server struct {
	ln  net.Listener
	srv *http.Server
}

// Listen opens addr (host:port; ":9120" listens everywhere) for h. The
// listener takes at most MaxConns connections at a time.
func Listen(addr string, h http.Handler, logf func(string, ...any)) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: --metrics-listen %s: %w", addr, err)
	}
	return ServeOn(ln, h, logf), nil
}

// ServeOn wraps an open listener (tests open it inside a namespace).
func ServeOn(ln net.Listener, h http.Handler, logf func(string, ...any)) *Server {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
	if logf != nil {
		srv.ErrorLog = log.New(logWriter(logf), "", 0)
	}
	return &Server{ln: netutil.LimitListener(ln, MaxConns), srv: srv}
}

type logWriter func(string, ...any)

func (l logWriter) Write(p []byte) (int, error) { l("metrics: %s", p); return len(p), nil }

// Addr returns the address it listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve answers until ctx ends, then shuts down (open scrapes get a
// second to finish).
func (s *Server) Serve(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("metrics: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.srv.Shutdown(sctx); err != nil {
		s.srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}
