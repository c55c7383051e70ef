package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestMarshalMinimal(t *testing.T) {
	c := Default()
	c.Name = "hq-1"
	out, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	want := "name: hq-1\nrole: hq\napi:\n  addr: 127.0.0.1:8443\n"
	if string(out) != want {
		t.Errorf("Marshal =\n%s\nwant\n%s", out, want)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	c := Default()
	c.Name = "plant-7"
	c.Role = RoleProbe
	c.MQTT.Addr = "0.0.0.0:8883"
	c.Federation.Addr = "[::]:7443"
	c.Retention.EventMaxAge = Duration(48 * time.Hour)
	c.Auth.LoginFailures = 9
	c.Log.Format = "json"
	c.Dir = "/somewhere"
	c.Store.EncryptionKey = "secret"
	out, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	for _, absent := range []string{"secret", "/somewhere", "data_dir", "tls_cert", "cache_mb", "events_per_context", "level"} {
		if strings.Contains(s, absent) {
			t.Errorf("output holds %q:\n%s", absent, s)
		}
	}
	for _, present := range []string{"event_max_age: 48h0m0s", "login_failures: 9", "format: json", "addr: '[::]:7443'"} {
		if !strings.Contains(s, present) {
			t.Errorf("output lacks %q:\n%s", present, s)
		}
	}
	back, err := Parse(append(Comment("header\n\nsecond line"), out...))
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, s)
	}
	c.Dir, c.Store.EncryptionKey = "", ""
	if !reflect.DeepEqual(back, c) {
		t.Errorf("round trip:\n got %+v\nwant %+v", back, c)
	}
	if err := back.Validate(); err != nil {
		t.Error(err)
	}
}

func TestComment(t *testing.T) {
	got := string(Comment("a\n\nb\n"))
	if got != "# a\n#\n# b\n" {
		t.Errorf("Comment = %q", got)
	}
}
