//go:build !unix

package main

// openFileLimit is unknown outside Unix: 0.
func openFileLimit() uint64 { return 0 }
