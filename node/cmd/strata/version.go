package main

import (
	"fmt"
	"io"
	"runtime/debug"

	"github.com/spf13/cobra"
)

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version, Go version and source commit",
		Args:  cobra.NoArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			info, _ := debug.ReadBuildInfo()
			printVersion(a.stdout, version, commit, info)
			return nil
		},
	}
}

// printVersion writes the version lines: the toolchain's stamp of the
// commit, else stamped (from -X main.commit); info may be nil.
func printVersion(w io.Writer, v, stamped string, info *debug.BuildInfo) {
	fmt.Fprintf(w, "strata %s\n", v)
	if info == nil {
		if stamped != "" {
			fmt.Fprintf(w, "commit: %s\n", stamped)
		}
		return
	}
	fmt.Fprintf(w, "go: %s\n", info.GoVersion)
	var rev, when, modified string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = " (modified)"
			}
		}
	}
	if rev == "" {
		rev = stamped
	}
	if rev == "" {
		rev = "unknown"
	}
	fmt.Fprintf(w, "commit: %s%s\n", rev, modified)
	if when != "" {
		fmt.Fprintf(w, "commit time: %s\n", when)
	}
}
