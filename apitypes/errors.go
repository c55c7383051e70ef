package apitypes

// ErrorBody is the JSON of every error answer of the operator API:
// {"error": "<human message>", "code": "<code>"}.
type ErrorBody struct {
	Message string `json:"error"`
	Code    string `json:"code"` // one of the Code constants
}

// Error codes of the operator API (ErrorBody.Code; docs/api.md, "Errors").
const (
	CodeInvalid      = "invalid"
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "forbidden"
	CodeNotFound     = "not_found"
	CodeConflict     = "conflict"
	CodeTooLarge     = "too_large"
	CodeRateLimited  = "rate_limited"
	CodeUnavailable  = "unavailable"
	CodeInternal     = "internal"
	// CodeNotImplemented and CodeMethodNotAllowed answer routes that
	// exist but cannot serve the request (a feature not enabled on the
	// node, a method the route does not have).
	CodeNotImplemented   = "not_implemented"
	CodeMethodNotAllowed = "method_not_allowed"
	// CodeRequestTimeout answers a request whose body did not arrive
	// within the node's body deadline (408; the connection is closed).
	CodeRequestTimeout = "request_timeout"
)

// Error codes of federation answers (docs/api.md, "Federation").
const (
	CodePeerUnreachable = "peer_unreachable" // the link to the owning peer is down
	CodePeerForbidden   = "peer_forbidden"   // the peer's grant to this node does not allow it
	CodeMountedReadOnly = "mounted_read_only"
)

// CodeAlertsReadOnly answers a write through the contexts API under
// /alerts, which only the node's rules write (docs/alerts.md).
const CodeAlertsReadOnly = "alerts_read_only"
