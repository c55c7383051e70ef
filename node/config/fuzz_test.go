package config

import "testing"

func FuzzParse(f *testing.F) {
	f.Add([]byte("name: hq\nrole: hq\napi:\n  addr: 127.0.0.1:8443\n"))
	f.Add([]byte("retention:\n  event_max_age: 12h\n"))
	f.Add([]byte("store:\n  kind: postgres\n  dsn: host=db\n  read_dsns: [host=r1, \"\"]\n"))
	f.Add([]byte("federation:\n  upstreams:\n    - address: a:1\n      replicas: [b:1, \"a:1\", nohost]\n"))
	f.Add([]byte("unknown: 1\n"))
	f.Add([]byte("name: [\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data)
		if err != nil {
			return
		}
		_ = cfg.Validate() // must not panic
	})
}
