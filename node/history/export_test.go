package history

import "context"

// onLoop runs fn on the service's loop, where heads may be touched, and
// waits for it.
func (s *Service) onLoop(fn func(context.Context)) {
	done := make(chan struct{})
	s.do <- func(ctx context.Context) {
		defer close(done)
		fn(ctx)
	}
	<-done
}
