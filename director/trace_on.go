//go:build !golvs_notrace

package director

// traceCompiled is false only in builds with the golvs_notrace tag, which
// exist to measure what the tracing hooks cost when no trace is attached.
const traceCompiled = true
