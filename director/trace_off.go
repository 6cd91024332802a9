//go:build golvs_notrace

package director

const traceCompiled = false
