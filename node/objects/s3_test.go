package objects

import (
	"context"
	"testing"

	"github.com/strata-dm/strata/node/objects/s3test"
)

func TestS3(t *testing.T) {
	gw := s3test.Start(t)
	ctx := context.Background()
	s, err := NewS3(ctx, s3Config(t, gw, "objects"))
	if err != nil {
		t.Fatal(err)
	}
	testStore(t, s)
}

func TestS3Prefix(t *testing.T) {
	gw := s3test.Start(t)
	cfg := s3Config(t, gw, "shared")
	cfg.Prefix = "strata/"
	s, err := NewS3(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	testStore(t, s)
}

func TestS3MissingBucket(t *testing.T) {
	gw := s3test.Start(t)
	cfg := s3Config(t, gw, "bucket")
	cfg.Bucket = "nonesuch"
	if _, err := NewS3(context.Background(), cfg); err == nil {
		t.Fatal("NewS3 with a missing bucket succeeded")
	}
}

func s3Config(t *testing.T, gw *s3test.Gateway, bucket string) S3Config {
	gw.CreateBucket(t, bucket)
	return S3Config{Endpoint: gw.Endpoint, Bucket: bucket, AccessKey: gw.AccessKey, SecretKey: gw.SecretKey, PathStyle: true}
}
