package agent

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// session is one MQTT connection. lost is closed when it ends, whatever
// the reason; the connection loop then discards the client and dials anew
// (paho's own reconnect is off: the loop owns backoff and shutdown).
type session struct {
	client mqtt.Client
	lost   chan struct{}
	once   sync.Once
}

func (s *session) close() { s.once.Do(func() { close(s.lost) }) }

func (s *session) alive() bool {
	select {
	case <-s.lost:
		return false
	default:
		return true
	}
}

// connectLoop keeps one session up until ctx ends, dialling again after a
// failure or a loss with full-jitter exponential backoff. The attempt count
// resets after a session that stayed up longer than ReconnectMax.
func (a *Agent) connectLoop(ctx context.Context) {
	attempt := 0
	for {
		s, err := a.dial(ctx)
		if err == nil {
			up := time.Now()
			a.log.Info("connected", "mqtt", a.address)
			a.setSession(s)
			a.readyO.Do(func() { close(a.ready) })
			select {
			case <-s.lost:
			case <-ctx.Done():
			}
			a.setSession(nil)
			s.close()
			s.client.Disconnect(250)
			if ctx.Err() != nil {
				return
			}
			a.log.Warn("connection lost", "up_for", time.Since(up).Round(time.Millisecond))
			if time.Since(up) > a.cfg.ReconnectMax {
				attempt = 0
			}
		} else if ctx.Err() != nil {
			return
		} else {
			a.log.Warn("cannot connect", "mqtt", a.address, "attempt", attempt+1, "err", err)
		}
		delay := backoff(attempt, a.cfg.ReconnectMin, a.cfg.ReconnectMax)
		attempt++
		timer := time.NewTimer(delay)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return
		}
	}
}

// backoff is the full-jitter delay before retry number attempt (from 0):
// uniform in [0, min(max, base·2^attempt)].
func backoff(attempt int, base, limit time.Duration) time.Duration {
	ceiling := limit
	if attempt < 32 && base<<attempt < limit && base<<attempt > 0 {
		ceiling = base << attempt
	}
	return rand.N(ceiling + 1)
}

// connectTimeout bounds one connection attempt (TCP, TLS and CONNACK).
const connectTimeout = 15 * time.Second

// dial makes one connection attempt: MQTT 3.1.1 over TLS, client id = device
// id, persistent session (CleanSession false), a will on the status topic.
// The agent dials the TLS connection itself so that ctx (shutdown) cuts an
// attempt short instead of waiting out the connect timeout.
func (a *Agent) dial(ctx context.Context) (*session, error) {
	s := &session{lost: make(chan struct{})}
	var mu sync.Mutex
	var conn net.Conn
	opts := mqtt.NewClientOptions().
		AddBroker("tls://"+a.address).
		SetClientID(a.creds.DeviceID).
		SetUsername(a.creds.MQTTUsername).
		SetPassword(a.creds.MQTTPassword).
		SetProtocolVersion(4).
		SetCleanSession(false).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetCustomOpenConnectionFn(func(uri *url.URL, _ mqtt.ClientOptions) (net.Conn, error) {
			d := tls.Dialer{NetDialer: &net.Dialer{Timeout: connectTimeout}, Config: a.tls.Clone()}
			c, err := d.DialContext(ctx, "tcp", uri.Host)
			mu.Lock()
			conn = c
			mu.Unlock()
			return c, err
		}).
		SetConnectTimeout(connectTimeout).
		SetKeepAlive(60*time.Second).
		SetPingTimeout(10*time.Second).
		SetWriteTimeout(30*time.Second).
		SetOrderMatters(true).
		SetBinaryWill(a.prefix+"status", []byte("offline"), 1, false).
		SetDefaultPublishHandler(a.onMessage).
		SetOnConnectHandler(func(c mqtt.Client) { a.onConnect(s, c) }).
		SetConnectionLostHandler(func(_ mqtt.Client, err error) {
			a.log.Debug("connection lost", "err", err)
			s.close()
		})
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	select {
	case <-tok.Done():
	case <-ctx.Done():
		mu.Lock()
		if conn != nil {
			conn.Close() // a CONNACK that never comes
		}
		mu.Unlock()
		<-tok.Done()
		c.Disconnect(0)
		return nil, ctx.Err()
	}
	if err := tok.Error(); err != nil {
		return nil, err
	}
	s.client = c
	return s, nil
}

// onConnect subscribes to the command topic at every connect (paho calls it
// on its own goroutine) and asks for an inventory. A refused subscription
// ends the session: without it the device would never see a command.
func (a *Agent) onConnect(s *session, c mqtt.Client) {
	topic := a.prefix + "cmd/+"
	tok := c.Subscribe(topic, 1, a.onMessage)
	var err error
	select {
	case <-tok.Done():
		err = tok.Error()
		if st, ok := tok.(*mqtt.SubscribeToken); ok && err == nil {
			if code, ok := st.Result()[topic]; !ok || code > 2 {
				err = fmt.Errorf("broker refused the subscription (code %#x)", code)
			}
		}
	case <-s.lost:
		return
	case <-time.After(30 * time.Second):
		err = errors.New("no SUBACK within 30s")
	}
	if err != nil {
		a.log.Error("cannot subscribe to commands; reconnecting", "topic", topic, "err", err)
		s.close()
		return
	}
	a.log.Debug("subscribed", "topic", topic)
	select {
	case a.invNow <- struct{}{}:
	default:
	}
}

// setSession publishes the current session (nil when disconnected) to
// waitSession callers.
func (a *Agent) setSession(s *session) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sess = s
	close(a.sessC)
	a.sessC = make(chan struct{})
}

// currentSession returns the live session, or nil.
func (a *Agent) currentSession() *session {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.sess != nil && a.sess.alive() {
		return a.sess
	}
	return nil
}

// waitSession blocks until a live session exists and returns it, or nil
// when ctx ends.
func (a *Agent) waitSession(ctx context.Context) *session {
	for {
		a.mu.Lock()
		s, changed := a.sess, a.sessC
		a.mu.Unlock()
		if s != nil && s.alive() {
			return s
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil
		}
	}
}

// connected reports whether a session is up.
func (a *Agent) connected() bool { return a.currentSession() != nil }
