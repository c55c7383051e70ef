// Command strata-build makes the release artifacts of Strata from binaries
// built beforehand (make packages, make images):
//
//	strata-build packages --root DIR --bin-dir DIR --out DIR --version V [--arch amd64] [--format deb,rpm]
//	strata-build images   --root DIR --bin-dir DIR --out DIR --version V [--arch amd64] [--revision SHA]
//
// packages writes the .deb and .rpm of strata and strata-agent; images
// writes one OCI image layout per binary (OUT/strata, OUT/strata-agent),
// without a container daemon. SOURCE_DATE_EPOCH, when set, stamps the
// files and images so that the same inputs make the same bytes.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/strata-dm/strata/deploy/build/images"
	"github.com/strata-dm/strata/deploy/build/packages"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "strata-build:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 || (args[0] != "packages" && args[0] != "images") {
		return errors.New("usage: strata-build packages|images --root DIR --bin-dir DIR --out DIR --version V")
	}
	fs := flag.NewFlagSet("strata-build "+args[0], flag.ContinueOnError)
	root := fs.String("root", ".", "the repository's folder")
	binDir := fs.String("bin-dir", "", "folder holding strata and strata-agent built for linux/ARCH")
	out := fs.String("out", "", "output folder")
	version := fs.String("version", "", "version of the artifacts")
	arch := fs.String("arch", runtime.GOARCH, "Go architecture of the binaries")
	formats := fs.String("format", "deb,rpm", "packages: formats to build")
	revision := fs.String("revision", "", "images: source commit, for the org.opencontainers.image.revision label")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	mtime, err := sourceDate()
	if err != nil {
		return err
	}
	if args[0] == "packages" {
		paths, err := packages.Build(packages.Options{
			Root: *root, BinDir: *binDir, OutDir: *out, Version: *version, Arch: *arch,
			MTime: mtime, Formats: strings.Split(*formats, ","),
		})
		for _, p := range paths {
			fmt.Println(p)
		}
		return err
	}
	paths, err := images.Build(images.Options{
		BinDir: *binDir, OutDir: *out, Version: *version, Revision: *revision, Arch: *arch, Created: mtime,
	})
	for _, p := range paths {
		fmt.Println(p)
	}
	return err
}

// sourceDate is SOURCE_DATE_EPOCH, or zero when it is not set.
func sourceDate() (time.Time, error) {
	s := os.Getenv("SOURCE_DATE_EPOCH")
	if s == "" {
		return time.Time{}, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH %q: %w", s, err)
	}
	return time.Unix(n, 0).UTC(), nil
}
