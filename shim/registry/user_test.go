package registry

import (
	"context"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/open-lambda/ol-shim/sandboxset"
	"github.com/open-lambda/ol-shim/shim/api"
	"github.com/open-lambda/ol-shim/shim/spec"
)

// TestPoolsRunAsTheSandboxUser: a pool that names no user runs as the
// sandbox user; by image, a run that names another user lands, for the
// administrator, in an ad hoc pool that runs as root, and for any other
// caller in its own pool of the sandbox user (whose init cannot become
// another user), never in a root one.
func TestPoolsRunAsTheSandboxUser(t *testing.T) {
	const su = "1879048192:1879048192"
	r, err := New(Config{Provider: testProvider{b: sandboxset.NewMockBackend(), scratch: sandboxset.DirScratch{Root: t.TempDir()}}, Root: t.TempDir(), SandboxUser: su})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(context.Background(), true)
	admin := context.Background()
	bob := WithOwner(context.Background(), Owner{Key: "uid:1000"})
	if _, err := r.PutPool(admin, "fn", spec.PoolConfig{Image: "img", Memory: 32 << 20, Shared: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := r.PutPool(admin, "rootfn", spec.PoolConfig{Image: "rimg", Memory: 32 << 20, User: "root", Shared: true}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		who        string
		ctx        context.Context
		image, as  string
		pool, runs string // "" pool: an ad hoc one
	}{
		{"admin", admin, "img", "", "fn", su},
		{"admin", admin, "img", su, "fn", su},
		{"admin", admin, "img", "0:0", "", "0:0"},
		{"admin", admin, "img", "1000:1000", "", "0:0"},
		{"admin", admin, "rimg", "1000:1000", "rootfn", "root"},
		{"bob", bob, "img", "", "fn", su},
		{"bob", bob, "img", "0:0", "", su},
		{"bob", bob, "rimg", "0:0", "rootfn", "root"},
		{"admin", admin, "other", "", "", su},
	} {
		p, err := r.PoolForImage(c.ctx, c.image, c.as)
		if err != nil {
			t.Errorf("%s, image %s as %q: %v", c.who, c.image, c.as, err)
			continue
		}
		if (c.pool == "" && !p.AdHoc) || (c.pool != "" && p.Name != c.pool) || p.RunsAs != c.runs {
			t.Errorf("%s, image %s as %q: pool %s (ad hoc %v) running as %q; want %q running as %q", c.who, c.image, c.as, p.Name, p.AdHoc, p.RunsAs, c.pool, c.runs)
		}
	}
}

// TestAPIStatsCopiesEveryField: the API's PoolStats has every field of
// sandboxset.Stats, by name and type, and apiStats copies each (a field
// added to one and not the other fails here).
func TestAPIStatsCopiesEveryField(t *testing.T) {
	st := reflect.TypeFor[sandboxset.Stats]()
	at := reflect.TypeFor[api.PoolStats]()
	if st.NumField() != at.NumField() {
		t.Errorf("sandboxset.Stats has %d fields, api.PoolStats %d", st.NumField(), at.NumField())
	}
	var in sandboxset.Stats
	v := reflect.ValueOf(&in).Elem()
	for i := range st.NumField() {
		f := st.Field(i)
		af, ok := at.FieldByName(f.Name)
		if !ok || af.Tag != f.Tag || af.Type.Kind() != f.Type.Kind() {
			t.Errorf("field %s %s %s: api.PoolStats has %v", f.Name, f.Type, f.Tag, af)
			continue
		}
		switch fv := v.Field(i); fv.Kind() {
		case reflect.Int, reflect.Int64:
			fv.SetInt(int64(i + 1))
		case reflect.Uint64:
			fv.SetUint(uint64(i + 1))
		case reflect.Bool:
			fv.SetBool(true)
		case reflect.String:
			fv.SetString("s")
		case reflect.Map:
			m := reflect.MakeMap(f.Type)
			val := reflect.New(f.Type.Elem()).Elem()
			if val.Kind() == reflect.Struct {
				val.Field(0).SetUint(uint64(i + 1))
			} else {
				val.SetUint(uint64(i + 1))
			}
			m.SetMapIndex(reflect.ValueOf("k"), val)
			fv.Set(m)
		default:
			t.Fatalf("field %s: kind %s not covered here", f.Name, fv.Kind())
		}
	}
	a, _ := json.Marshal(in)
	b, _ := json.Marshal(apiStats(in))
	if string(a) != string(b) {
		t.Errorf("apiStats lost something:\n%s\n%s", a, b)
	}
}
