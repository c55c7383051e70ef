package benchproc

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/strata-dm/strata/node/client"
	"github.com/strata-dm/strata/probes/sim"
)

// Enroll enrolls n devices through POST /api/v1/enroll with one
// enrollment token of group, a few at a time (each enrollment is a
// durable write); device i's hardware id is sim-<prefix>-<i>.
func Enroll(ctx context.Context, admin *client.Client, n int, group, prefix string) ([]sim.Credentials, error) {
	tok, err := admin.CreateEnrollToken(ctx, client.NewEnrollToken{Group: group, TTL: time.Hour})
	if err != nil {
		return nil, fmt.Errorf("enrollment token: %w", err)
	}
	creds := make([]sim.Credentials, n)
	const workers = 8
	next := make(chan int)
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range next {
				if errs[w] != nil {
					continue
				}
				hw := fmt.Sprintf("sim-%s-%d", prefix, i)
				e, err := admin.Enroll(ctx, client.EnrollRequest{Token: tok.Secret, HardwareID: hw})
				if err != nil {
					errs[w] = fmt.Errorf("enroll %s: %w", hw, err)
					continue
				}
				creds[i] = sim.Credentials{Enrollment: *e, HardwareID: hw}
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return creds, errors.Join(errs...)
}
