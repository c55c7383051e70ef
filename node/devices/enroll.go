package devices

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/model"
	"github.com/strata-dm/strata/node/auth"
)

// EnrollToken describes an enrollment token; its secret is shown once, at
// creation. Uses 0 means unlimited until it expires.
type EnrollToken struct {
	ID        string    `json:"id"`
	Group     string    `json:"group"`
	Tenant    string    `json:"tenant"`
	Created   time.Time `json:"created"`
	CreatedBy string    `json:"created_by"`
	Expires   time.Time `json:"expires"`
	Uses      int       `json:"uses"` // allowed enrollments; 0: unlimited
	Used      int       `json:"used"`
	Revoked   bool      `json:"revoked"`
}

type tokenRecord struct {
	EnrollToken
	Hash string `json:"hash"`
}

// TokenSpec is what CreateToken needs.
type TokenSpec struct {
	Group  string        `json:"group"`
	Tenant string        `json:"tenant,omitempty"` // system users only; others get their own
	TTL    time.Duration `json:"-"`                // 0: DefaultTokenTTL
	Uses   int           `json:"uses,omitempty"`
}

// CreateToken issues an enrollment token (operator on /devices) and returns
// its secret, shown only now. A non-system principal's tokens always bind
// its own tenant.
func (s *Service) CreateToken(ctx context.Context, p *auth.Principal, spec TokenSpec) (string, EnrollToken, error) {
	if !p.Can(auth.RoleOperator, Root) {
		return "", EnrollToken{}, fmt.Errorf("%w: enrollment tokens need the operator role on %s", auth.ErrForbidden, Root)
	}
	if err := validName("group", spec.Group); err != nil {
		return "", EnrollToken{}, err
	}
	tenant := spec.Tenant
	switch {
	case p.System:
	case tenant == "" || tenant == p.Tenant:
		tenant = p.Tenant
	default:
		return "", EnrollToken{}, fmt.Errorf("%w: enrollment tokens of another tenant", auth.ErrForbidden)
	}
	if tenant != "" {
		if err := validName("tenant", tenant); err != nil {
			return "", EnrollToken{}, err
		}
	}
	switch {
	case spec.TTL == 0:
		spec.TTL = DefaultTokenTTL
	case spec.TTL < 0 || spec.TTL > MaxTokenTTL:
		return "", EnrollToken{}, fmt.Errorf("%w: ttl must be in (0, %v]", model.ErrInvalid, MaxTokenTTL)
	}
	if spec.Uses < 0 {
		return "", EnrollToken{}, fmt.Errorf("%w: uses must not be negative", model.ErrInvalid)
	}
	secret, id := auth.NewSecret(enrollPrefix)
	now := s.clock()
	t := &tokenRecord{
		EnrollToken: EnrollToken{
			ID: id, Group: spec.Group, Tenant: tenant, Created: now, CreatedBy: p.User,
			Expires: now.Add(spec.TTL), Uses: spec.Uses,
		},
		Hash: auth.SecretHash(secret),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.tree.Apply(ctx, putToken(t)); err != nil {
		return "", EnrollToken{}, fmt.Errorf("devices: create token: %w", err)
	}
	s.log.Info("enrollment token created", "token_id", id, "group", t.Group, "tenant", tenant, "by", p.User)
	return secret, t.EnrollToken, nil
}

// validName checks a group or tenant: a valid path segment, no MQTT
// wildcards.
func validName(what, v string) error {
	if err := model.ValidateName(v); err != nil {
		return fmt.Errorf("%w: %s: %v", model.ErrInvalid, what, err)
	}
	if len(v) > MaxGroupLen || strings.ContainsAny(v, "+#$") {
		return fmt.Errorf("%w: %s must be at most %d bytes without + # $", model.ErrInvalid, what, MaxGroupLen)
	}
	return nil
}

func putToken(t *tokenRecord) model.Mutation {
	b, _ := json.Marshal(t)
	return model.Mutation{Op: model.OpPutRecord, Record: &model.Record{Kind: KindEnrollToken, Key: t.ID, Value: b}}
}

func (s *Service) loadToken(id string) (*tokenRecord, error) {
	b, err := s.tree.Record(KindEnrollToken, id)
	if errors.Is(err, model.ErrNotFound) {
		return nil, fmt.Errorf("%w: enrollment token %q", model.ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("devices: read token: %w", err)
	}
	t := new(tokenRecord)
	if err := json.Unmarshal(b, t); err != nil {
		return nil, fmt.Errorf("devices: token %s: %w", id, err)
	}
	return t, nil
}

// seesToken reports whether p may see and manage t.
func seesToken(p *auth.Principal, t *EnrollToken) bool {
	return p.SeesTenant(t.Tenant) && p.Can(auth.RoleOperator, Root) && (p.System || t.Tenant == p.Tenant)
}

// ListTokens returns the enrollment tokens p may see.
func (s *Service) ListTokens(p *auth.Principal) ([]EnrollToken, error) {
	var out []EnrollToken
	err := s.tree.Records(KindEnrollToken, func(_ string, b []byte) error {
		var t tokenRecord
		if json.Unmarshal(b, &t) == nil && seesToken(p, &t.EnrollToken) {
			out = append(out, t.EnrollToken)
		}
		return nil
	})
	return out, err
}

// RevokeToken revokes an enrollment token; devices already enrolled with
// it keep working.
func (s *Service) RevokeToken(ctx context.Context, p *auth.Principal, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.loadToken(id)
	if err != nil {
		return err
	}
	if !seesToken(p, &t.EnrollToken) {
		return fmt.Errorf("%w: enrollment token %q", model.ErrNotFound, id)
	}
	if t.Revoked {
		return nil
	}
	t.Revoked = true
	if _, err := s.tree.Apply(ctx, putToken(t)); err != nil {
		return fmt.Errorf("devices: revoke token: %w", err)
	}
	return nil
}

// EnrollRequest is what a device sends to enroll.
type EnrollRequest = apitypes.EnrollRequest

// Enrollment is what an enrolled device receives (docs/mqtt.md); the
// caller adds the MQTT address.
type Enrollment = apitypes.EnrollmentOf[model.Path]

// errBadToken is the one answer for a token that cannot enroll.
var errBadToken = fmt.Errorf("%w: enrollment token is not valid", auth.ErrUnauthorized)

// ErrRevoked refuses to enroll a revoked device again until an operator
// allowed it (AllowEnroll).
var ErrRevoked = fmt.Errorf("%w: this device is revoked; an operator must allow it to enroll again (strata ctl devices allow-enroll ID)", auth.ErrForbidden)

// Enroll exchanges an enrollment token for a device's credentials. The
// device record, the token's use count and the device context are written
// in one atomic Apply. The token's id and remoteAddr key the rate limit
// of failures.
func (s *Service) Enroll(ctx context.Context, req EnrollRequest, remoteAddr string) (Enrollment, error) {
	tokenID, _ := auth.ParseSecret(enrollPrefix, req.Token) // "" for garbage: one identity per address
	if err := s.check(s.enrollLimit, "enroll", tokenID, remoteAddr); err != nil {
		return Enrollment{}, err
	}
	e, again, err := s.enroll(ctx, req)
	if errors.Is(err, auth.ErrUnauthorized) {
		s.enrollLimit.Fail(tokenID, remoteAddr)
	}
	if again {
		s.mu.Lock()
		fn := s.onRevoke
		s.mu.Unlock()
		if fn != nil {
			fn(e.DeviceID) // the old credentials are gone: drop a session that used them
		}
	}
	return e, err
}

// enroll does the work of Enroll under s.mu; again reports a device that
// enrolled before (its old credentials just stopped working).
func (s *Service) enroll(ctx context.Context, req EnrollRequest) (_ Enrollment, again bool, _ error) {
	if err := validText("hardware_id", req.HardwareID, MaxHardwareIDLen); err != nil {
		return Enrollment{}, false, err
	}
	tid, err := auth.ParseSecret(enrollPrefix, req.Token)
	if err != nil {
		return Enrollment{}, false, errBadToken
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t, err := s.loadToken(tid)
	if errors.Is(err, model.ErrNotFound) {
		return Enrollment{}, false, errBadToken
	}
	if err != nil {
		return Enrollment{}, false, err
	}
	now := s.clock()
	if subtle.ConstantTimeCompare([]byte(auth.SecretHash(req.Token)), []byte(t.Hash)) != 1 ||
		t.Revoked || !now.Before(t.Expires) || (t.Uses > 0 && t.Used >= t.Uses) {
		return Enrollment{}, false, errBadToken
	}
	id := deviceID(t.Tenant, req.HardwareID)
	d, err := s.load(id)
	again = err == nil
	if err != nil && !errors.Is(err, model.ErrNotFound) {
		return Enrollment{}, false, err
	}
	if !again {
		d = &deviceRecord{Device: Device{ID: id, Path: PathOf(id), Tenant: t.Tenant, HardwareID: req.HardwareID}}
	}
	if d.Revoked && !d.EnrollAllowed {
		return Enrollment{}, false, ErrRevoked
	}
	// The context is the device's own only if enrollment made it: a
	// context found at the path of a device not enrolled yet, or not of
	// its type and tenant, was made by someone else, and is taken back.
	cur, err := s.tree.Get(d.Path)
	if err != nil && !errors.Is(err, model.ErrNotFound) {
		return Enrollment{}, false, fmt.Errorf("devices: read context: %w", err)
	}
	own := cur == nil || (again && isOwn(cur, &d.Device))
	secret, _ := auth.NewSecret(devicePrefix)
	d.Group, d.Enrolled, d.Token = t.Group, now, t.ID
	d.Revoked, d.RevokedAt, d.SecretHash, d.CertSerial = false, time.Time{}, auth.SecretHash(secret), ""
	d.EnrollAllowed = false
	out := Enrollment{
		DeviceID: id, MQTTUsername: id, MQTTPassword: secret, CAPEM: string(s.caPEM),
		Path: d.Path, Tenant: d.Tenant, Group: d.Group, TopicPrefix: "strata/" + id + "/",
	}
	if req.CSRPEM != "" {
		if s.ca == nil {
			return Enrollment{}, false, fmt.Errorf("%w: this node does not sign device certificates", model.ErrInvalid)
		}
		certPEM, cert, err := s.ca.SignClientCSR([]byte(req.CSRPEM), id)
		if err != nil {
			return Enrollment{}, false, fmt.Errorf("%w: csr_pem: %v", model.ErrInvalid, err)
		}
		d.CertSerial, out.CertPEM = cert.SerialNumber.String(), string(certPEM)
	}
	t.Used++
	hw, _ := json.Marshal(req.HardwareID)
	payload, _ := json.Marshal(map[string]any{"token": t.ID, "group": t.Group, "again": again})
	put := model.Mutation{
		Op: model.OpPut, Path: d.Path, Type: DeviceType, Tenant: d.Tenant, Actor: d.Tenant,
		Labels:    map[string]string{"group": d.Group},
		Variables: map[string]model.Variable{"hardware_id": {Value: hw, Type: model.TypeString, Time: now}},
	}
	if !own {
		put = reclaim(d)
		s.reclaimed.Inc()
		s.log.Warn("a context not made by enrollment was at the device's path: taken back", "device", id,
			"found_type", cur.Type, "found_tenant", cur.Tenant)
	}
	_, err = s.tree.Apply(ctx, putDevice(d), putToken(t), put,
		model.Mutation{
			Op: model.OpEvent, Path: d.Path, Actor: d.Tenant,
			Event: &model.Event{Name: "enrolled", Level: model.LevelInfo, Payload: payload, Time: now},
		})
	if err != nil {
		return Enrollment{}, false, fmt.Errorf("devices: enroll: %w", err)
	}
	s.log.Info("device enrolled", "device", id, "tenant", d.Tenant, "group", d.Group, "token_id", t.ID, "again", again)
	return out, again, nil
}
