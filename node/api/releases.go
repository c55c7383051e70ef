package api

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/strata-dm/strata/apitypes"
	"github.com/strata-dm/strata/node/auth"
	"github.com/strata-dm/strata/node/releases"
)

// Software releases (docs/software.md, docs/api.md "Releases"): signed
// manifests and their artifacts' bytes. Package releases decides who may
// do what (roles on "/", tenants); these handlers parse and answer.

// uploadMinRate is the slowest an artifact upload may arrive, in bytes
// per second, after api.body_timeout's grace.
const uploadMinRate = 16 << 10

var errNoReleases = apiError(http.StatusNotImplemented, codeNotImplemented, "software releases are not enabled on this node")

func (s *Server) releaseService() (*releases.Service, error) {
	if s.cfg.Releases == nil {
		return nil, errNoReleases
	}
	return s.cfg.Releases, nil
}

// releaseRef is the release a request names: {name}/{version} and, for
// system users, ?tenant= (default: a shared release). No other query
// parameter is taken.
func releaseRef(r *http.Request) (releases.Ref, error) {
	q := r.URL.Query()
	for k := range q {
		if k != "tenant" && k != "consistent" {
			return releases.Ref{}, invalidf("%s: release requests take only tenant", k)
		}
	}
	ref := releases.Ref{Tenant: q.Get("tenant"), Name: r.PathValue("name"), Version: r.PathValue("version")}
	if !apitypes.ValidReleaseName(ref.Name) || !apitypes.ValidReleaseName(ref.Version) {
		return ref, invalidf("release %q version %q: want 1 to %d letters, digits or . _ + - ~", ref.Name, ref.Version, apitypes.MaxReleaseName)
	}
	noteAudit(r, func(e *auditEntry) { e.rec.Target = clip(ref.Name+"/"+ref.Version, 256) })
	return ref, nil
}

func artifactSum(r *http.Request) (string, error) {
	sum := r.PathValue("sha256")
	if !apitypes.ValidSHA256(sum) {
		return "", invalidf("artifact %q: want a sha256 in lower-case hex", sum)
	}
	noteAudit(r, func(e *auditEntry) { e.rec.Target += "/" + sum })
	return sum, nil
}

func (s *Server) listReleases(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	rs, err := s.releaseService()
	if err != nil {
		return err
	}
	for k := range r.URL.Query() {
		if k != "consistent" {
			return invalidf("%s: the release listing takes no parameters", k)
		}
	}
	list, err := rs.List(r.Context(), p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, apitypes.ReleaseList{Releases: list})
	return nil
}

func (s *Server) getRelease(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	rs, ref, err := s.releaseRequest(r)
	if err != nil {
		return err
	}
	rel, err := rs.Get(r.Context(), p, ref)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rel)
	return nil
}

func (s *Server) putRelease(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	rs, ref, err := s.releaseRequest(r)
	if err != nil {
		return err
	}
	var sm apitypes.SignedManifest
	if err := s.decodeJSON(w, r, &sm); err != nil {
		return err
	}
	rel, created, err := rs.Put(r.Context(), p, ref, sm)
	if errors.Is(err, releases.ErrNoKeys) {
		return apiError(http.StatusNotImplemented, codeNotImplemented, "%v", err)
	}
	if err != nil {
		return err
	}
	status := http.StatusOK
	if created {
		status = http.StatusCreated
	}
	writeJSON(w, status, rel)
	return nil
}

func (s *Server) deleteRelease(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	rs, ref, err := s.releaseRequest(r)
	if err != nil {
		return err
	}
	if err := rs.Delete(r.Context(), p, ref); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// uploadHeaders sets the headers that tell an uploader where it stands.
func uploadHeaders(w http.ResponseWriter, st apitypes.UploadState) {
	w.Header().Set(apitypes.UploadOffsetHeader, strconv.FormatInt(st.Offset, 10))
	w.Header().Set("Upload-Length", strconv.FormatInt(st.Size, 10))
}

// headArtifact answers where an upload stands (Upload-Offset,
// Upload-Length) and, once the artifact is stored, what a GET would
// (Content-Length, Accept-Ranges, ETag).
func (s *Server) headArtifact(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	rs, ref, sum, err := s.artifactRequest(r)
	if err != nil {
		return err
	}
	st, err := rs.UploadState(r.Context(), p, ref, sum)
	if err != nil {
		return err
	}
	uploadHeaders(w, st)
	if st.Complete {
		w.Header().Set("Accept-Ranges", "bytes")
		w.Header().Set("ETag", `"`+sum+`"`)
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(st.Size, 10))
	}
	w.WriteHeader(http.StatusOK)
	return nil
}

// releaseRequest is what a request on a release names: the release
// service and the release.
func (s *Server) releaseRequest(r *http.Request) (*releases.Service, releases.Ref, error) {
	rs, err := s.releaseService()
	if err != nil {
		return nil, releases.Ref{}, err
	}
	ref, err := releaseRef(r)
	if err != nil {
		return nil, releases.Ref{}, err
	}
	return rs, ref, nil
}

// artifactRequest is what a request on an artifact names: the release
// service, the release and the artifact's SHA-256.
func (s *Server) artifactRequest(r *http.Request) (*releases.Service, releases.Ref, string, error) {
	rs, ref, err := s.releaseRequest(r)
	if err != nil {
		return nil, releases.Ref{}, "", err
	}
	sum, err := artifactSum(r)
	if err != nil {
		return nil, releases.Ref{}, "", err
	}
	return rs, ref, sum, nil
}

// getArtifact downloads an artifact, with Range requests
// (http.ServeContent over an object reader that seeks by reopening).
func (s *Server) getArtifact(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	rs, ref, sum, err := s.artifactRequest(r)
	if err != nil {
		return err
	}
	rd, _, err := rs.Open(r.Context(), p, ref, sum)
	if err != nil {
		return err
	}
	defer rd.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("ETag", `"`+sum+`"`)
	http.ServeContent(w, r, "", time.Time{}, rd)
	return nil
}

// uploadArtifact takes a piece of an artifact's bytes, streamed to the
// node's staging file; the piece starts at Upload-Offset (or the start
// of Content-Range), which must be where the node's copy ends.
func (s *Server) uploadArtifact(w http.ResponseWriter, r *http.Request, p *auth.Principal) error {
	rs, ref, sum, err := s.artifactRequest(r)
	if err != nil {
		return err
	}
	offset, err := parseUploadOffset(r.Header.Get(apitypes.UploadOffsetHeader), r.Header.Get("Content-Range"))
	if err != nil {
		return err
	}
	st, err := rs.Upload(r.Context(), p, ref, sum, offset, r.Body)
	var oe *releases.OffsetError
	if errors.As(err, &oe) || err == nil || st.Offset > 0 {
		uploadHeaders(w, st)
	}
	if err != nil {
		if errors.Is(err, errBodyTimeout) || errors.Is(err, io.ErrUnexpectedEOF) {
			w.Header().Set("Connection", "close")
		}
		return err
	}
	status := http.StatusOK
	if st.Complete {
		status = http.StatusCreated
	}
	writeJSON(w, status, st)
	return nil
}

// maxOffsetDigits bounds an offset's digits (int64 has 19).
const maxOffsetDigits = 19

// parseUploadOffset returns where an upload's body starts: the
// Upload-Offset header (a decimal byte offset) or the start of a
// Content-Range "bytes START-END/TOTAL" (TOTAL may be "*"); both, when
// given, must agree; neither means 0.
func parseUploadOffset(uploadOffset, contentRange string) (int64, error) {
	off := int64(-1)
	if uploadOffset != "" {
		n, err := parseOffset(uploadOffset)
		if err != nil {
			return 0, invalidf("%s %q: %v", apitypes.UploadOffsetHeader, uploadOffset, err)
		}
		off = n
	}
	if contentRange != "" {
		start, err := parseContentRange(contentRange)
		if err != nil {
			return 0, invalidf("Content-Range %q: %v", contentRange, err)
		}
		if off >= 0 && off != start {
			return 0, invalidf("Upload-Offset %d and Content-Range start %d differ", off, start)
		}
		off = start
	}
	return max(off, 0), nil
}

// parseOffset parses a non-negative decimal int64 without sign or
// spaces.
func parseOffset(s string) (int64, error) {
	if s == "" || len(s) > maxOffsetDigits {
		return 0, errors.New("want a decimal byte offset")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("want a decimal byte offset")
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, errors.New("offset out of range")
	}
	return n, nil
}

// parseContentRange parses "bytes START-END/TOTAL" and returns START.
func parseContentRange(s string) (int64, error) {
	rest, ok := strings.CutPrefix(s, "bytes ")
	if !ok {
		return 0, errors.New(`want "bytes START-END/TOTAL"`)
	}
	span, total, ok := strings.Cut(rest, "/")
	if !ok {
		return 0, errors.New(`want "bytes START-END/TOTAL"`)
	}
	a, b, ok := strings.Cut(span, "-")
	if !ok {
		return 0, errors.New(`want "bytes START-END/TOTAL"`)
	}
	start, err := parseOffset(a)
	if err != nil {
		return 0, fmt.Errorf("start: %v", err)
	}
	end, err := parseOffset(b)
	if err != nil {
		return 0, fmt.Errorf("end: %v", err)
	}
	if end < start {
		return 0, errors.New("end before start")
	}
	if total != "*" {
		n, err := parseOffset(total)
		if err != nil {
			return 0, fmt.Errorf("total: %v", err)
		}
		if end >= n {
			return 0, errors.New("end beyond total")
		}
	}
	return start, nil
}
