package releases

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/strata-dm/strata/node/objects"
)

// FuzzRange: http.ServeContent over a Reader answers any Range header
// with exactly the bytes of the range it announces.
func FuzzRange(f *testing.F) {
	st, err := objects.NewFS(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	data := make([]byte, 10_000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	sum := sha256.Sum256(data)
	key := hex.EncodeToString(sum[:])
	if err := st.Put(context.Background(), key, bytes.NewReader(data), int64(len(data))); err != nil {
		f.Fatal(err)
	}
	for _, r := range []string{"bytes=0-0", "bytes=100-", "bytes=-5", "bytes=9999-20000", "bytes=5-1", "bytes=0-1,5-9", "bytes=x"} {
		f.Add(r)
	}
	f.Fuzz(func(t *testing.T, rng string) {
		rd := &Reader{ctx: context.Background(), store: st, key: key, size: int64(len(data))}
		defer rd.Close()
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("Range", rng)
		w := httptest.NewRecorder()
		http.ServeContent(w, req, "", time.Time{}, rd)
		res := w.Result()
		body, _ := io.ReadAll(res.Body)
		switch res.StatusCode {
		case http.StatusOK:
			if !bytes.Equal(body, data) {
				t.Fatalf("200 with %d bytes", len(body))
			}
		case http.StatusPartialContent:
			cr := res.Header.Get("Content-Range")
			if cr == "" {
				return // multipart: parts checked by net/http's own tests
			}
			var a, b int
			span, _, _ := strings.Cut(strings.TrimPrefix(cr, "bytes "), "/")
			as, bs, _ := strings.Cut(span, "-")
			a, _ = strconv.Atoi(as)
			b, _ = strconv.Atoi(bs)
			if !bytes.Equal(body, data[a:b+1]) {
				t.Fatalf("Range %q: Content-Range %q but %d other bytes", rng, cr, len(body))
			}
		}
	})
}
