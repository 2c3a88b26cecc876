package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/mcpmesh/mcpmesh/coordinator"
	"github.com/mcpmesh/mcpmesh/coordinator/adminclient"
	"github.com/mcpmesh/mcpmesh/identity"
)

// defaultStateDir follows DESIGN's convention: $MCPMESH_STATE, else
// /var/lib/mcpmesh as root, else the user's state directory.
func defaultStateDir(e *env) string {
	if d := e.getenv("MCPMESH_STATE"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return "/var/lib/mcpmesh"
	}
	if d := e.getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "mcpmesh")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "mcpmesh")
	}
	return "mcpmesh-state"
}

// adminContext remembers, per user, which coordinator and admin credential
// the admin commands use when no flag says otherwise, so that after
// `coordinator init` and `coordinator run` a plain `mcpmesh token create`
// works (like a kubeconfig, but with two fields).
type adminContext struct {
	Coordinator string `json:"coordinator,omitempty"`
	Admin       string `json:"admin,omitempty"`
}

func adminContextPath(e *env) string {
	if p := e.getenv("MCPMESH_CONFIG"); p != "" {
		return p
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "mcpmesh", "admin.json")
}

func loadAdminContext(e *env) adminContext {
	var c adminContext
	p := adminContextPath(e)
	if p == "" {
		return c
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return c
	}
	// Another user who could write the file's directory could point the
	// admin commands at a coordinator and credential of their own, and
	// take the admin's policy for applied when it went elsewhere.
	if err := identity.CheckPrivateDir(filepath.Dir(p)); err != nil {
		fmt.Fprintf(e.stderr, "mcpmesh: warning: not using the remembered admin defaults in %s: %v\n", p, err)
		return c
	}
	_ = json.Unmarshal(b, &c) // a damaged file only loses defaults; flags still work
	return c
}

// saveAdminContext updates the remembered defaults; failing to remember is
// not worth failing the command for, so it only warns.
func saveAdminContext(e *env, update func(*adminContext)) {
	p := adminContextPath(e)
	if p == "" {
		return
	}
	c := loadAdminContext(e)
	update(&c)
	b, _ := json.MarshalIndent(c, "", "  ")
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err == nil {
		err = identity.WriteFileAtomic(p, append(b, '\n'), 0o600)
		if err == nil {
			return
		}
	}
	fmt.Fprintf(e.stderr, "mcpmesh: note: could not remember admin defaults in %s\n", p)
}

// adminFlags are the flags every admin command takes.
type adminFlags struct {
	coordinator, data, admin string
}

func (a *adminFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&a.coordinator, "coordinator", "", "coordinator URL (default: $MCPMESH_COORDINATOR, else the one `coordinator run` last announced)")
	fs.StringVar(&a.data, "data", "", "coordinator data directory holding the admin credential")
	fs.StringVar(&a.admin, "admin", "", "admin credential file (default: $MCPMESH_ADMIN, else DATA/admin.pem)")
}

// client resolves flags, environment and remembered defaults, in that order.
func (a *adminFlags) client(e *env) (*adminclient.Client, error) {
	ctxDefaults := loadAdminContext(e)
	url := firstNonEmpty(a.coordinator, e.getenv("MCPMESH_COORDINATOR"), ctxDefaults.Coordinator)
	if url == "" {
		return nil, errors.New("which coordinator? pass --coordinator https://HOST:PORT or set MCPMESH_COORDINATOR")
	}
	path := a.admin
	if path == "" && a.data != "" {
		path = filepath.Join(a.data, coordinator.FileAdmin)
	}
	path = firstNonEmpty(path, e.getenv("MCPMESH_ADMIN"), ctxDefaults.Admin)
	if path == "" {
		return nil, errors.New("admin commands need the admin credential: pass --data DIR (of `coordinator init`) or --admin FILE")
	}
	cred, err := adminclient.LoadCredential(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("no admin credential at %s; pass --data DIR (of `coordinator init`) or --admin FILE", path)
	}
	if err != nil {
		return nil, err
	}
	return adminclient.New(url, cred)
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}
