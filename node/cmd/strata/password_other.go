//go:build !linux

package main

import (
	"errors"
	"os"
)

// Prompting without echo is implemented for Linux only; elsewhere use
// --password-stdin.
func isTerminal(f *os.File) bool { return false }

func disableEcho(f *os.File) (func(), error) {
	return nil, errors.New("cannot prompt on this system: use --password-stdin")
}
