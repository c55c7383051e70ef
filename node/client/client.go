// Package client is a typed Go client for a Strata node's operator API
// (docs/api.md). `strata ctl` and the end-to-end tests use it.
//
// A Client is safe for concurrent use and immutable: WithToken returns a
// copy carrying another bearer token. Every method takes a context, which
// is the only deadline a request has (change streams run for as long as
// their context lives). Errors the API answers with are *APIError.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/node/certs"
)

// maxErrorBody bounds how much of an error response is read.
const maxErrorBody = 64 << 10

// Client talks to one node's API.
type Client struct {
	base       *url.URL
	token      string
	http       *http.Client
	consistent bool // every GET asks for a consistent read (Consistent)
}

// New returns a client of the API at baseURL ("https://host:port", maybe
// with a path prefix) sending token as bearer token (none when empty). The
// connection uses TLS 1.2 or later and trusts only the CA certificates in
// caPEM, or the system roots when caPEM is nil.
func New(baseURL, token string, caPEM []byte) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil {
		return nil, fmt.Errorf("client: base URL: %w", err)
	}
	if u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("client: base URL %q: want https://host:port", baseURL)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("client: base URL %q: no query or fragment allowed", baseURL)
	}
	u.Path = strings.TrimSuffix(u.Path, "/")
	u.RawPath = ""
	tlsCfg, err := certs.ClientConfig(caPEM)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tlsCfg
	tr.Proxy = nil // operators talk to their node directly
	return &Client{base: u, token: token, http: &http.Client{Transport: tr}}, nil
}

// WithToken returns a client sharing c's connections with another token.
func (c *Client) WithToken(token string) *Client {
	n := *c
	n.token = token
	return &n
}

// Token returns the bearer token the client sends.
func (c *Client) Token() string { return c.token }

// BaseURL returns the API's base URL.
func (c *Client) BaseURL() string { return c.base.String() }

// CloseIdleConnections closes connections kept for reuse.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// APIError is an error the API answered with.
type APIError struct {
	Status  int    // HTTP status
	Code    string // one of the Code constants; empty when the body was not an API error
	Message string
	// RetryAfter is the server's Retry-After (429, 503), zero if none.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	if e.Code == "" {
		return e.Message
	}
	return e.Message + " (" + e.Code + ")"
}

// IsCode reports whether err is an *APIError with the given code.
func IsCode(err error, code string) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == code
}

// Login exchanges a user name and password for a session token. ttl zero
// asks for the server's default lifetime. The client's own token is not
// sent and not changed: use WithToken(s.Token).
func (c *Client) Login(ctx context.Context, username, password string, ttl time.Duration) (*Session, error) {
	body := struct {
		Username string `json:"username"`
		Password string `json:"password"`
		TTL      string `json:"ttl,omitempty"`
	}{username, password, durationString(ttl)}
	var s Session
	if err := c.WithToken("").do(ctx, http.MethodPost, "/api/v1/login", nil, body, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Whoami returns the caller, with the id of the token used.
func (c *Client) Whoami(ctx context.Context) (*User, error) {
	var u User
	if err := c.do(ctx, http.MethodGet, "/api/v1/whoami", nil, nil, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// Tree lists the context at path and its descendants.
func (c *Client) Tree(ctx context.Context, path string, opts TreeOptions) (*TreeNode, error) {
	q := url.Values{"path": {contextPath(path)}}
	if opts.Depth > 0 {
		q.Set("depth", strconv.Itoa(opts.Depth))
	}
	if opts.Limit > 0 {
		q.Set("limit", strconv.Itoa(opts.Limit))
	}
	if opts.After != "" {
		q.Set("after", opts.After)
	}
	var t TreeNode
	if err := c.do(ctx, http.MethodGet, "/api/v1/tree", q, nil, &t); err != nil {
		return nil, err
	}
	return &t, nil
}

// GetContext returns the context at path.
func (c *Client) GetContext(ctx context.Context, path string) (*Context, error) {
	var x Context
	if err := c.do(ctx, http.MethodGet, "/api/v1/contexts"+contextPath(path), nil, nil, &x); err != nil {
		return nil, err
	}
	return &x, nil
}

// GetContextConsistent returns the context at path with a linearizable
// read (?consistent=true): on a cluster, the replica asked first makes
// sure it holds every write acknowledged before the call.
func (c *Client) GetContextConsistent(ctx context.Context, path string) (*Context, error) {
	var x Context
	if err := c.do(ctx, http.MethodGet, "/api/v1/contexts"+contextPath(path), url.Values{"consistent": {"true"}}, nil, &x); err != nil {
		return nil, err
	}
	return &x, nil
}

// PutContext creates or updates the context at path and returns it once
// durable; created reports whether it is new.
func (c *Client) PutContext(ctx context.Context, path string, u ContextUpdate) (x *Context, created bool, err error) {
	x = new(Context)
	status, err := c.doStatus(ctx, http.MethodPut, "/api/v1/contexts"+contextPath(path), nil, u, x)
	if err != nil {
		return nil, false, err
	}
	return x, status == http.StatusCreated, nil
}

// DeleteContext deletes the context at path, which must have no children.
func (c *Client) DeleteContext(ctx context.Context, path string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/contexts"+contextPath(path), nil, nil, nil)
}

// Events returns a page of the events of the context at path, newest first.
func (c *Client) Events(ctx context.Context, path string, q EventQuery) (*EventPage, error) {
	v := url.Values{}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Before > 0 {
		v.Set("before", strconv.FormatUint(q.Before, 10))
	}
	if !q.Since.IsZero() {
		v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	}
	if q.Level != "" {
		v.Set("level", q.Level)
	}
	var p EventPage
	if err := c.do(ctx, http.MethodGet, "/api/v1/events"+contextPath(path), v, nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Feed returns one page of the event feed of a subtree: the warnings and
// alerts of the context at q.Path and those below it, newest first.
func (c *Client) Feed(ctx context.Context, q FeedQuery) (*EventPage, error) {
	v := url.Values{}
	if q.Path != "" {
		v.Set("path", q.Path)
	}
	if q.Level != "" {
		v.Set("level", q.Level)
	}
	if q.Limit > 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Before > 0 {
		v.Set("before", strconv.FormatUint(q.Before, 10))
	}
	var p EventPage
	if err := c.do(ctx, http.MethodGet, "/api/v1/events", v, nil, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// PostEvent records an event on the context at path and returns it once
// durable.
func (c *Client) PostEvent(ctx context.Context, path string, e NewEvent) (*Event, error) {
	var out Event
	if err := c.do(ctx, http.MethodPost, "/api/v1/events"+contextPath(path), nil, e, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Users lists the users the caller may see.
func (c *Client) Users(ctx context.Context) ([]User, error) {
	var out struct {
		Users []User `json:"users"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/users", nil, nil, &out); err != nil {
		return nil, err
	}
	return out.Users, nil
}

// CreateUser creates a user.
func (c *Client) CreateUser(ctx context.Context, u NewUser) (*User, error) {
	var out User
	if err := c.do(ctx, http.MethodPost, "/api/v1/users", nil, u, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// GetUser returns the user called name.
func (c *Client) GetUser(ctx context.Context, name string) (*User, error) {
	var out User
	if err := c.do(ctx, http.MethodGet, "/api/v1/users/"+url.PathEscape(name), nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// UpdateUser changes the set fields of u on the user called name.
func (c *Client) UpdateUser(ctx context.Context, name string, u UserUpdate) (*User, error) {
	var out User
	if err := c.do(ctx, http.MethodPatch, "/api/v1/users/"+url.PathEscape(name), nil, u, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteUser deletes the user called name and revokes its tokens.
func (c *Client) DeleteUser(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/users/"+url.PathEscape(name), nil, nil, nil)
}

// Tokens lists the tokens of user (the caller's when empty).
func (c *Client) Tokens(ctx context.Context, user string) ([]Token, error) {
	var q url.Values
	if user != "" {
		q = url.Values{"user": {user}}
	}
	var out struct {
		Tokens []Token `json:"tokens"`
	}
	if err := c.do(ctx, http.MethodGet, "/api/v1/tokens", q, nil, &out); err != nil {
		return nil, err
	}
	return out.Tokens, nil
}

// CreateToken creates a token; its secret is in the answer only.
func (c *Client) CreateToken(ctx context.Context, t NewToken) (*CreatedToken, error) {
	body := struct {
		NewToken
		TTL string `json:"ttl,omitempty"`
	}{t, durationString(t.TTL)}
	var out CreatedToken
	if err := c.do(ctx, http.MethodPost, "/api/v1/tokens", nil, body, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// RevokeToken revokes the token with the given id, at once.
func (c *Client) RevokeToken(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/api/v1/tokens/"+url.PathEscape(id), nil, nil, nil)
}

// Health returns nil while the node's process serves (GET /healthz).
func (c *Client) Health(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/healthz", nil, nil, nil)
}

// Ready returns nil once the node is ready (GET /readyz); an *APIError
// with status 503 otherwise.
func (c *Client) Ready(ctx context.Context) error {
	return c.do(ctx, http.MethodGet, "/readyz", nil, nil, nil)
}

func (c *Client) do(ctx context.Context, method, path string, q url.Values, in, out any) error {
	_, err := c.doStatus(ctx, method, path, q, in, out)
	return err
}

// doStatus sends one request and decodes a 2xx JSON answer into out (when
// out is non-nil and there is a body).
func (c *Client) doStatus(ctx context.Context, method, path string, q url.Values, in, out any) (int, error) {
	resp, err := c.send(ctx, method, path, q, in, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if out == nil || resp.StatusCode == http.StatusNoContent {
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
		return resp.StatusCode, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return resp.StatusCode, fmt.Errorf("client: %s %s: decode answer: %w", method, path, err)
	}
	return resp.StatusCode, nil
}

// send sends a request and returns the response if its status is 2xx; any
// other status becomes an *APIError and the body is closed.
func (c *Client) send(ctx context.Context, method, path string, q url.Values, in any, hdr http.Header) (*http.Response, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, fmt.Errorf("client: encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	if c.consistent && (method == http.MethodGet || method == http.MethodHead) && !q.Has("consistent") {
		q = withConsistent(q)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url(path, q), body)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if req.Header.Get("Accept") == "" {
		req.Header.Set("Accept", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return resp, nil
}

// url joins the base URL, an API path whose segments are escaped one by one
// (so a context path reaches the server as written, ".." included), and a
// query.
func (c *Client) url(path string, q url.Values) string {
	u := *c.base
	segs := strings.Split(path, "/")
	esc := make([]string, len(segs))
	for i, s := range segs {
		esc[i] = url.PathEscape(s)
	}
	u.Path = c.base.Path + path
	u.RawPath = c.base.EscapedPath() + strings.Join(esc, "/")
	if q != nil {
		u.RawQuery = q.Encode()
	}
	return u.String()
}

// decodeError turns a non-2xx response into an *APIError.
func decodeError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &APIError{Status: resp.StatusCode}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if secs, err := strconv.Atoi(ra); err == nil && secs >= 0 {
			e.RetryAfter = time.Duration(secs) * time.Second
		} else if t, err := http.ParseTime(ra); err == nil {
			e.RetryAfter = max(time.Until(t), 0)
		}
	}
	var body apitypes.ErrorBody
	if json.Unmarshal(data, &body) == nil && (body.Message != "" || body.Code != "") {
		e.Code, e.Message = body.Code, body.Message
		if e.Message == "" {
			e.Message = http.StatusText(resp.StatusCode)
		}
		return e
	}
	e.Message = resp.Status
	if text := strings.TrimSpace(string(data)); text != "" && len(text) < 200 && !strings.ContainsAny(text, "<\x00") {
		e.Message += ": " + text
	}
	return e
}

// contextPath makes p a rooted context path ("devices/x" → "/devices/x").
func contextPath(p string) string {
	if !strings.HasPrefix(p, "/") {
		return "/" + p
	}
	return p
}

func durationString(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return d.String()
}
