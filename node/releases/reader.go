package releases

import (
	"context"
	"errors"
	"io"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/strata-dm/strata/node/objects"
)

// Reader reads an object as an io.ReadSeeker: a Seek only moves the
// position, and the next Read opens the object there (a ranged read on
// S3), so http.ServeContent answers Range requests from any backend
// without reading what it skips.
type Reader struct {
	ctx    context.Context
	store  objects.Store
	key    string
	size   int64
	pos    int64
	rc     io.ReadCloser
	served []prometheus.Counter
}

var _ io.ReadSeekCloser = (*Reader)(nil)

// Size is the object's size.
func (r *Reader) Size() int64 { return r.size }

// Seek implements io.Seeker.
func (r *Reader) Seek(offset int64, whence int) (int64, error) {
	var pos int64
	switch whence {
	case io.SeekStart:
		pos = offset
	case io.SeekCurrent:
		pos = r.pos + offset
	case io.SeekEnd:
		pos = r.size + offset
	default:
		return r.pos, errors.New("releases: bad whence")
	}
	if pos < 0 {
		return r.pos, errors.New("releases: negative position")
	}
	if pos != r.pos && r.rc != nil {
		r.rc.Close()
		r.rc = nil
	}
	r.pos = pos
	return pos, nil
}

// Read implements io.Reader.
func (r *Reader) Read(p []byte) (int, error) {
	if r.pos >= r.size {
		return 0, io.EOF
	}
	if r.rc == nil {
		rc, err := r.store.Get(r.ctx, r.key, r.pos, -1)
		if err != nil {
			return 0, err
		}
		r.rc = rc
	}
	if rest := r.size - r.pos; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := r.rc.Read(p)
	r.pos += int64(n)
	for _, c := range r.served {
		c.Add(float64(n))
	}
	if errors.Is(err, io.EOF) && r.pos < r.size {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// Close implements io.Closer.
func (r *Reader) Close() error {
	if r.rc != nil {
		err := r.rc.Close()
		r.rc = nil
		return err
	}
	return nil
}
