package api

import (
	"net/http"

	"github.com/strata-dm/strata/node/auth"
)

// whoamiJSON is the caller with the id of the token it used.
type whoamiJSON struct {
	auth.User
	TokenID string `json:"token_id"`
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	u, err := s.auth.GetUser(r.Context(), p, p.User)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, whoamiJSON{User: u, TokenID: p.TokenID})
	return nil
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	us, err := s.auth.ListUsers(r.Context(), p)
	if err != nil {
		return err
	}
	if us == nil {
		us = []auth.User{}
	}
	writeJSON(w, http.StatusOK, struct {
		Users []auth.User `json:"users"`
	}{us})
	return nil
}

// newUserBody is the body creating a user.
type newUserBody struct {
	Name     string       `json:"name"`
	Password string       `json:"password"`
	Tenant   string       `json:"tenant"`
	System   bool         `json:"system"`
	Grants   []auth.Grant `json:"grants"`
}

func (s *Server) createUser(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var b newUserBody
	if err := s.decodeJSON(w, r, &b); err != nil {
		return err
	}
	noteAudit(r, func(e *auditEntry) { e.rec.Target = clip(b.Name, 256) })
	u, err := s.auth.CreateUser(r.Context(), p, auth.UserSpec(b))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, u)
	return nil
}

func (s *Server) getUser(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	u, err := s.auth.GetUser(r.Context(), p, r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, u)
	return nil
}

// userUpdateBody is the body of a PATCH on a user: absent (or null) fields
// stay as they are.
type userUpdateBody struct {
	Password *string       `json:"password"`
	Grants   *[]auth.Grant `json:"grants"`
	Disabled *bool         `json:"disabled"`
}

func (s *Server) updateUser(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	var b userUpdateBody
	if err := s.decodeJSON(w, r, &b); err != nil {
		return err
	}
	if b.Password != nil && b.Grants == nil && b.Disabled == nil {
		noteAudit(r, func(e *auditEntry) { e.rec.Op = "user.password" })
	}
	u, err := s.auth.UpdateUser(r.Context(), p, r.PathValue("name"), auth.UserUpdate(b))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, u)
	return nil
}

func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	if err := s.auth.DeleteUser(r.Context(), p, r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
