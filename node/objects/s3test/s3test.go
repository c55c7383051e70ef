// Package s3test starts a real S3-compatible server for tests:
// versitygw (Versity S3 Gateway) with its posix backend in a temporary
// folder, on a loopback port. Install it with scripts/install-test-deps.sh
// (go install github.com/versity/versitygw/cmd/versitygw@v1.8.0).
package s3test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// Gateway is a running versitygw.
type Gateway struct {
	Endpoint  string // http://127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Dir       string // the posix backend's root: one folder per bucket
}

// Binary returns the versitygw executable ($STRATA_VERSITYGW, else on
// PATH, else in $(go env GOPATH)/bin), or "".
func Binary() string {
	if p := os.Getenv("STRATA_VERSITYGW"); p != "" {
		return p
	}
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	gopath := os.Getenv("GOPATH")
	if gopath == "" {
		home, _ := os.UserHomeDir()
		gopath = filepath.Join(home, "go")
	}
	p := filepath.Join(gopath, "bin", "versitygw")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	return ""
}

// Missing skips tb, or fails it under CI=true, because versitygw is not
// installed.
func Missing(tb testing.TB) {
	tb.Helper()
	const msg = "versitygw not found (on PATH, in $GOPATH/bin or $STRATA_VERSITYGW); install it with " +
		"`go install github.com/versity/versitygw/cmd/versitygw@v1.8.0` or scripts/install-test-deps.sh"
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg + " (CI=true: not skipping)")
	}
	tb.Skip(msg)
}

// Start runs a gateway until tb ends; it skips or fails tb (Missing)
// when versitygw is not installed.
func Start(tb testing.TB) *Gateway {
	tb.Helper()
	bin := Binary()
	if bin == "" {
		Missing(tb)
	}
	var rnd [12]byte
	rand.Read(rnd[:])
	g := &Gateway{AccessKey: "strata-test", SecretKey: hex.EncodeToString(rnd[:]), Dir: tb.TempDir()}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		addr, err := freePort()
		if err != nil {
			tb.Fatal(err)
		}
		cmd := exec.Command(bin, "--access", g.AccessKey, "--secret", g.SecretKey, "--port", addr, "posix", g.Dir)
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			tb.Fatalf("start versitygw: %v", err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		g.Endpoint = "http://" + addr
		if lastErr = waitReady(g.Endpoint, exited); lastErr == nil {
			tb.Cleanup(func() {
				cmd.Process.Kill()
				<-exited
			})
			return g
		}
		cmd.Process.Kill()
		<-exited
		lastErr = fmt.Errorf("%v; output: %s", lastErr, out.String())
	}
	tb.Fatalf("versitygw did not start: %v", lastErr)
	return nil
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// waitReady polls the endpoint until it answers HTTP, the process exits
// or 20 seconds pass.
func waitReady(endpoint string, exited <-chan error) error {
	deadline := time.Now().Add(20 * time.Second)
	c := &http.Client{Timeout: time.Second}
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("versitygw exited: %v", err)
		default:
		}
		resp, err := c.Get(endpoint)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
	return fmt.Errorf("versitygw at %s did not answer within 20s", endpoint)
}

// Client returns an S3 client of the gateway.
func (g *Gateway) Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(g.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(g.AccessKey, g.SecretKey, ""),
	})
}

// CreateBucket creates a bucket, failing tb if it cannot.
func (g *Gateway) CreateBucket(tb testing.TB, name string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := g.Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		tb.Fatalf("create bucket %s: %v", name, err)
	}
}
