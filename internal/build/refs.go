package build

// RefInfo is one branch or tag of a project's repository as the repository
// manager reports it: the name (without refs/heads/ or refs/tags/) and the
// commit it points at.
type RefInfo struct {
	Name string `json:"name"`
	SHA  string `json:"sha"`
}
