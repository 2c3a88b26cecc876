//go:build !unix

package identity

// CheckPrivateDir has nothing to check where there are no unix
// permissions.
func CheckPrivateDir(string) error { return nil }
