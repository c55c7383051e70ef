// Command strata is the Strata node binary: `strata init` prepares a node's
// folder, `strata serve` runs the node, `strata ctl` talks to a running
// node's operator API, `strata token` manages its enrollment tokens,
// `strata version` says what was built.
package main

import (
	"os"
	"runtime"
)

// version is set at build time: go build -ldflags "-X main.version=v1.2.3".
var version = "dev"

// commit is the source commit, set at build time (-X main.commit=...)
// where the Go toolchain does not stamp it (-buildvcs=false, a build
// outside the repository).
var commit = ""

func main() {
	a := &app{
		stdin:     os.Stdin,
		stdout:    os.Stdout,
		stderr:    os.Stderr,
		lookupEnv: os.LookupEnv,
		setProcs:  runtime.GOMAXPROCS,
	}
	os.Exit(a.run(os.Args[1:]))
}
