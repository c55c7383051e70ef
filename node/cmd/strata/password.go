package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// maxPassword bounds what is read as a password.
const maxPassword = 4096

// password reads a password from stdin (fromStdin: the whole input up to a
// final newline) or by prompting on the terminal without echo; confirm asks
// twice. Passwords are never taken from the command line, where other
// users could read them.
func (a *app) password(fromStdin bool, prompt string, confirm bool) (string, error) {
	if fromStdin {
		b, err := io.ReadAll(io.LimitReader(a.stdin, maxPassword+1))
		if err != nil {
			return "", fmt.Errorf("read password: %w", err)
		}
		if len(b) > maxPassword {
			return "", errors.New("password longer than 4096 bytes")
		}
		pw := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
		if pw == "" {
			return "", errors.New("empty password on stdin")
		}
		return pw, nil
	}
	f, ok := a.stdin.(*os.File)
	if !ok || !isTerminal(f) {
		return "", errors.New("no terminal to prompt for a password: use --password-stdin")
	}
	pw, err := a.promptOnce(f, prompt)
	if err != nil {
		return "", err
	}
	if confirm {
		again, err := a.promptOnce(f, "Again: ")
		if err != nil {
			return "", err
		}
		if again != pw {
			return "", errors.New("passwords do not match")
		}
	}
	if pw == "" {
		return "", errors.New("empty password")
	}
	return pw, nil
}

func (a *app) promptOnce(f *os.File, prompt string) (string, error) {
	fmt.Fprint(a.stderr, prompt)
	restore, err := disableEcho(f)
	if err != nil {
		return "", fmt.Errorf("prompt: %w", err)
	}
	line, err := bufio.NewReader(io.LimitReader(f, maxPassword+1)).ReadString('\n')
	restore()
	fmt.Fprintln(a.stderr)
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", fmt.Errorf("read password: %w", err)
	}
	return strings.TrimRight(line, "\r\n"), nil
}
