package apitypes

import (
	"encoding/json"
	"reflect"
	"testing"
)

// golden is one shape pinned: v must encode to exactly want, and want must
// decode back to v. A failure here means a JSON contract changed: change
// the golden text only if the change is deliberate (and documented in
// docs/api.md or docs/mqtt.md).
type golden struct {
	name string
	v    any // a pointer to a value of the shape
	want string
}

func checkGolden(t *testing.T, cases []golden) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := json.Marshal(c.v)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != c.want {
				t.Fatalf("encodes as\n%s\nwant\n%s", got, c.want)
			}
			back := reflect.New(reflect.TypeOf(c.v).Elem())
			if err := json.Unmarshal([]byte(c.want), back.Interface()); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back.Interface(), c.v) {
				t.Fatalf("decodes as %+v, want %+v", back.Elem().Interface(), reflect.ValueOf(c.v).Elem().Interface())
			}
		})
	}
}

func TestGoldenErrors(t *testing.T) {
	checkGolden(t, []golden{
		{"error", &ErrorBody{Message: "context /x: not found", Code: CodeNotFound},
			`{"error":"context /x: not found","code":"not_found"}`},
		{"empty", &ErrorBody{}, `{"error":"","code":""}`},
	})
}
