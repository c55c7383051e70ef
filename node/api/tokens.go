package api

import (
	"net/http"
	"time"

	"github.com/strata-dm/strata/node/auth"
)

// loginBody is the body of a login.
type loginBody struct {
	Username string `json:"username"`
	Password string `json:"password"`
	TTL      string `json:"ttl"`
}

// sessionJSON answers a login.
type sessionJSON struct {
	Token   string    `json:"token"`
	ID      string    `json:"id"`
	Expires time.Time `json:"expires"`
	User    auth.User `json:"user"`
}

// parseTTL reads an optional duration ("12h"); empty is zero (the
// server's default).
func parseTTL(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, invalidf("ttl %q: want a positive duration such as \"12h\"", s)
	}
	return d, nil
}

// login exchanges a password for a session token. Failed logins are
// limited per user name and per client address; the address is the TCP
// peer's (X-Forwarded-For is not trusted: anyone can send it).
func (s *Server) login(w http.ResponseWriter, r *http.Request) error {
	var b loginBody
	if err := s.decodeJSON(w, r, &b); err != nil {
		return err
	}
	ttl, err := parseTTL(b.TTL)
	if err != nil {
		return err
	}
	secret, tok, u, err := s.auth.Login(r.Context(), b.Username, b.Password, r.RemoteAddr, ttl)
	if err != nil {
		return err
	}
	s.auditLogin(r, u, tok.ID)
	writeJSON(w, http.StatusOK, sessionJSON{Token: secret, ID: tok.ID, Expires: tok.Expires, User: u})
	return nil
}

func (s *Server) listTokens(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	ts, err := s.auth.ListTokens(r.Context(), p, r.URL.Query().Get("user"))
	if err != nil {
		return err
	}
	if ts == nil {
		ts = []auth.Token{}
	}
	writeJSON(w, http.StatusOK, struct {
		Tokens []auth.Token `json:"tokens"`
	}{ts})
	return nil
}

// newTokenBody is the body creating a token.
type newTokenBody struct {
	User string `json:"user"`
	Name string `json:"name"`
	TTL  string `json:"ttl"`
}

// createdTokenJSON is a new token with its secret, shown only now.
type createdTokenJSON struct {
	Secret string `json:"token"`
	auth.Token
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var b newTokenBody
	if err := s.decodeJSON(w, r, &b); err != nil {
		return err
	}
	ttl, err := parseTTL(b.TTL)
	if err != nil {
		return err
	}
	noteAudit(r, func(e *auditEntry) { e.rec.Target = clip(b.User, 256) })
	secret, tok, err := s.auth.CreateToken(r.Context(), p, b.User, b.Name, ttl)
	if err != nil {
		return err
	}
	noteAudit(r, func(e *auditEntry) { e.rec.Target = tok.User + "/" + tok.ID })
	writeJSON(w, http.StatusCreated, createdTokenJSON{Secret: secret, Token: tok})
	return nil
}

func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if err := s.auth.RevokeToken(r.Context(), p, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
