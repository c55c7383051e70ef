package objects

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// S3Config is an S3-compatible bucket.
type S3Config struct {
	// Endpoint is the service's URL (https://s3.example:9000); empty:
	// AWS's endpoint of Region.
	Endpoint string
	Bucket   string
	Region   string // default "us-east-1"
	// AccessKey and SecretKey are static credentials.
	AccessKey string
	SecretKey string
	// PathStyle addresses the bucket as endpoint/bucket/key rather than
	// bucket.endpoint/key (most self-hosted services want it).
	PathStyle bool
	// Prefix is put before every key ("strata/objects/"), so that a
	// bucket can be shared.
	Prefix string
	// HTTPClient is the client used; nil: a default one.
	HTTPClient *http.Client
}

// S3 is a Store in a bucket of an S3-compatible service.
//
// A Put streams its body (never buffered whole, never retried) with an
// unsigned payload; the verifier withholds the last bytes of a body
// whose size or SHA-256 is wrong, so the service never receives the
// whole object and stores nothing.
type S3 struct {
	cfg S3Config
	c   *s3.Client
}

var _ Store = (*S3)(nil)

// NewS3 returns the store of cfg after checking that its bucket exists
// and answers.
func NewS3(ctx context.Context, cfg S3Config) (*S3, error) {
	if cfg.Bucket == "" {
		return nil, errors.New("objects: s3: no bucket")
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	opts := s3.Options{
		Region:                     cfg.Region,
		UsePathStyle:               cfg.PathStyle,
		Credentials:                credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, ""),
		RequestChecksumCalculation: aws.RequestChecksumCalculationWhenRequired,
		ResponseChecksumValidation: aws.ResponseChecksumValidationWhenRequired,
	}
	if cfg.Endpoint != "" {
		opts.BaseEndpoint = aws.String(cfg.Endpoint)
	}
	if cfg.HTTPClient != nil {
		opts.HTTPClient = cfg.HTTPClient
	}
	s := &S3{cfg: cfg, c: s3.New(opts)}
	if _, err := s.c.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(cfg.Bucket)}); err != nil {
		return nil, fmt.Errorf("objects: s3: bucket %s at %s: %w", cfg.Bucket, cfg.Endpoint, err)
	}
	return s, nil
}

func (s *S3) key(k string) *string { return aws.String(s.cfg.Prefix + k) }

// notFound maps the service's 404s to ErrNotFound.
func notFound(err error, key string) error {
	var re *awshttp.ResponseError
	if errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound {
		return fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return err
}

// Put implements Store.
func (s *S3) Put(ctx context.Context, key string, r io.Reader, size int64) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	if size < 0 {
		return fmt.Errorf("%w: size %d", ErrDigest, size)
	}
	sum, _ := hex.DecodeString(key)
	v := newVerifier(r, key, size)
	_, err := s.c.PutObject(ctx, &s3.PutObjectInput{
		Bucket:        aws.String(s.cfg.Bucket),
		Key:           s.key(key),
		Body:          io.NopCloser(v), // not seekable: streamed, not retried
		ContentLength: aws.Int64(size),
		ContentType:   aws.String("application/octet-stream"),
		// The service checks the digest too, and refuses the object if
		// the body it received differs.
		ChecksumSHA256: aws.String(base64.StdEncoding.EncodeToString(sum)),
	}, s3.WithAPIOptions(v4.SwapComputePayloadSHA256ForUnsignedPayloadMiddleware))
	if v.err != nil && !errors.Is(v.err, io.EOF) {
		return v.err
	}
	if err != nil {
		return fmt.Errorf("objects: s3: put %s: %w", key, err)
	}
	return nil
}

// Get implements Store.
func (s *S3) Get(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("objects: offset %d", offset)
	}
	if length == 0 {
		if _, err := s.Stat(ctx, key); err != nil {
			return nil, err
		}
		return io.NopCloser(strings.NewReader("")), nil
	}
	in := &s3.GetObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: s.key(key)}
	switch {
	case length > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", offset, offset+length-1))
	case offset > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	}
	out, err := s.c.GetObject(ctx, in)
	if err != nil {
		var re *awshttp.ResponseError
		if errors.As(err, &re) && re.HTTPStatusCode() == http.StatusRequestedRangeNotSatisfiable {
			// At or past the end: nothing to read.
			if _, serr := s.Stat(ctx, key); serr != nil {
				return nil, serr
			}
			return io.NopCloser(strings.NewReader("")), nil
		}
		return nil, notFound(err, key)
	}
	return out.Body, nil
}

// Stat implements Store.
func (s *S3) Stat(ctx context.Context, key string) (Info, error) {
	if err := CheckKey(key); err != nil {
		return Info{}, err
	}
	out, err := s.c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: s.key(key)})
	if err != nil {
		return Info{}, notFound(err, key)
	}
	return Info{Key: key, Size: aws.ToInt64(out.ContentLength), Modified: aws.ToTime(out.LastModified)}, nil
}

// Delete implements Store.
func (s *S3) Delete(ctx context.Context, key string) error {
	if err := CheckKey(key); err != nil {
		return err
	}
	_, err := s.c.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.cfg.Bucket), Key: s.key(key)})
	if err = notFound(err, key); errors.Is(err, ErrNotFound) {
		return nil
	}
	return err
}

// List implements Store.
func (s *S3) List(ctx context.Context, fn func(Info) error) error {
	p := s3.NewListObjectsV2Paginator(s.c, &s3.ListObjectsV2Input{
		Bucket: aws.String(s.cfg.Bucket), Prefix: aws.String(s.cfg.Prefix),
	})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return fmt.Errorf("objects: s3: list: %w", err)
		}
		for _, o := range page.Contents {
			k := strings.TrimPrefix(aws.ToString(o.Key), s.cfg.Prefix)
			if CheckKey(k) != nil {
				continue
			}
			if err := fn(Info{Key: k, Size: aws.ToInt64(o.Size), Modified: aws.ToTime(o.LastModified)}); err != nil {
				return err
			}
		}
	}
	return nil
}

// Close implements Store.
func (s *S3) Close() error { return nil }
