package sim

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/strata-dm/strata/probes/download"
)

// Device downloads (docs/software.md, "Device downloads"): a simulated
// device fetches an artifact from its node with its own credentials, as
// package download does for every device.

// ErrDigestMismatch is a download whose bytes do not hash to the SHA-256
// asked for.
var ErrDigestMismatch = download.ErrDigestMismatch

// DownloadError is a download the node refused: its status and error
// body.
type DownloadError = download.Error

// DownloadResult is what one download took.
type DownloadResult = download.Result

// Downloader downloads artifacts as devices do (package download).
type Downloader = download.Downloader

// DownloadAuth returns the user name and secret of c's downloads: its
// MQTT user name (else its id) and enrollment secret.
func (c Credentials) DownloadAuth() (string, string) {
	user := c.MQTTUsername
	if user == "" {
		user = c.DeviceID
	}
	return user, c.MQTTPassword
}

// Download fetches artifact sum from Config.API as the fleet's device n
// (an index, once its credentials are known) into w, with the fleet's
// network (source addresses, Config.CAPEM) and d's attempts and
// interruption; d.API and d.Client are the fleet's when empty.
func (f *Fleet) Download(ctx context.Context, n int, sum string, w io.Writer, d Downloader) (DownloadResult, error) {
	f.mu.Lock()
	var dev *device
	if n >= 0 && n < len(f.devices) {
		dev = f.devices[n]
	}
	f.mu.Unlock()
	if dev == nil {
		return DownloadResult{}, fmt.Errorf("download: no device %d", n)
	}
	if err := f.fillDownloader(&d, n); err != nil {
		return DownloadResult{}, err
	}
	return d.Download(ctx, download.Basic{User: dev.username, Secret: dev.password}, sum, w)
}

// fillDownloader sets d's API and client to the fleet's for device n
// where they are empty.
func (f *Fleet) fillDownloader(d *Downloader, n int) error {
	if d.API == "" {
		d.API = f.cfg.API
	}
	if d.Client == nil {
		c, err := f.downloadClient(n)
		if err != nil {
			return err
		}
		d.Client = c
	}
	return nil
}

// downloadClient returns the HTTP client of device i's downloads: one per
// source address, shared.
func (f *Fleet) downloadClient(i int) (*http.Client, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dlClients == nil {
		tlsConf, err := f.net.apiTLS()
		if err != nil {
			return nil, err
		}
		for _, dl := range f.net.dialers {
			f.dlClients = append(f.dlClients, &http.Client{Transport: &http.Transport{
				DialContext:         dl.DialContext,
				TLSClientConfig:     tlsConf,
				MaxIdleConnsPerHost: 64,
				IdleConnTimeout:     30 * time.Second,
			}})
		}
	}
	return f.dlClients[i%len(f.dlClients)], nil
}

// DownloadReport is what DownloadAll measured.
type DownloadReport struct {
	Devices  int            // devices that downloaded
	OK       int            // downloads complete and verified
	Failed   int            // downloads that ended in an error
	Errors   map[string]int `json:",omitempty"` // failures by kind (HTTP status, digest, network)
	Bytes    int64          // body bytes received over every request
	Requests int
	Resumes  int
	Elapsed  time.Duration // from the first request to the last byte
	// Throughput is Bytes per second over Elapsed, aggregated over the
	// fleet.
	Throughput float64
}

// DownloadAll has every device of the fleet (once its credentials are
// known) download artifact sum once, at most concurrency at a time
// (default 64), discarding the bytes after verifying them; d is as for
// Download.
func (f *Fleet) DownloadAll(ctx context.Context, sum string, concurrency int, d Downloader) DownloadReport {
	f.mu.Lock()
	n := len(f.devices)
	f.mu.Unlock()
	if concurrency <= 0 {
		concurrency = 64
	}
	rep := DownloadReport{Devices: n, Errors: map[string]int{}}
	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		next = make(chan int)
	)
	start := time.Now()
	for range min(concurrency, n) {
		wg.Go(func() {
			for i := range next {
				res, err := f.Download(ctx, i, sum, io.Discard, d)
				mu.Lock()
				rep.Bytes += res.Received
				rep.Requests += res.Requests
				rep.Resumes += res.Resumes
				if err != nil {
					rep.Failed++
					rep.Errors[download.Reason(err)]++
				} else {
					rep.OK++
				}
				mu.Unlock()
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			rep.Failed += n - i
			rep.Errors["canceled"] += n - i
			break feed
		}
	}
	close(next)
	wg.Wait()
	rep.Elapsed = time.Since(start)
	if s := rep.Elapsed.Seconds(); s > 0 {
		rep.Throughput = float64(rep.Bytes) / s
	}
	return rep
}
