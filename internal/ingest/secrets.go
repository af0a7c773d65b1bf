package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/api"
	"github.com/decap-ci/decap/internal/build"
)

// SecretStore writes and lists the projects' secrets; ingest never reads a
// value (build.Secrets without Reveal; on AWS its IAM policy has no
// GetSecretValue). Put and Delete fail with build.ErrInvalid for a bad
// name or value, Delete with build.ErrNotFound for a secret that is not
// there.
type SecretStore interface {
	Put(ctx context.Context, team, project, name string, value []byte) error
	Delete(ctx context.Context, team, project, name string) error
	List(ctx context.Context, team, project string) ([]build.SecretInfo, error)
}

// secretsRoute is the route of one secret, whose body limit is a value's.
const secretsRoute = "/api/v1/projects/:team/:project/secrets/:name"

// registerSecretRoutes adds the secrets API: the list needs read access,
// a write or delete the token (or a session). No route returns a value.
func (s *Server) registerSecretRoutes(api *echo.Group) {
	api.GET("/projects/:team/:project/secrets", s.listSecrets, s.requireRead)
	api.PUT("/projects/:team/:project/secrets/:name", s.putSecret, s.requireToken)
	api.DELETE("/projects/:team/:project/secrets/:name", s.deleteSecret, s.requireToken)
}

func (s *Server) secretStore() (SecretStore, error) {
	if s.deps.Secrets == nil {
		return nil, &publicError{status: http.StatusNotImplemented, msg: "this ingest has no secret store"}
	}
	return s.deps.Secrets, nil
}

// secretPath reads team, project and name from the path. The project must
// be in the catalog (buildable or not: a secret may be set before its
// project.json is fixed).
func (s *Server) secretPath(c echo.Context, withName bool) (team, project, name string, err error) {
	if team, project, err = pathProject(c); err != nil {
		return "", "", "", err
	}
	if withName {
		if name, err = pathValue(c, "name"); err != nil {
			return "", "", "", err
		}
		if err := build.ValidateSecretName(name); err != nil {
			return "", "", "", err
		}
	}
	if _, _, err := s.deps.Catalog.Lookup(team, project); errors.Is(err, build.ErrNotFound) {
		return "", "", "", &publicError{status: http.StatusNotFound, msg: notInCatalog(team, project), cause: err}
	} else if err != nil && !errors.Is(err, build.ErrInvalid) {
		return "", "", "", fmt.Errorf("project %s: %w", build.ProjectKey(team, project), err)
	}
	return team, project, name, nil
}

func (s *Server) listSecrets(c echo.Context) error {
	store, err := s.secretStore()
	if err != nil {
		return err
	}
	team, project, _, err := s.secretPath(c, false)
	if err != nil {
		return err
	}
	list, err := store.List(c.Request().Context(), team, project)
	if err != nil {
		return fmt.Errorf("list secrets of %s: %w", build.ProjectKey(team, project), err)
	}
	if list == nil {
		list = []build.SecretInfo{}
	}
	for i := range list {
		list[i].UpdatedAt = list[i].UpdatedAt.UTC().Truncate(time.Second)
	}
	return c.JSON(http.StatusOK, api.Secrets{Team: team, Project: project, Secrets: list})
}

// putSecret stores the request body, as it is (any bytes, 1 to
// build.MaxSecretSize), as the secret's value. The answer and the logs
// never repeat it.
func (s *Server) putSecret(c echo.Context) error {
	store, err := s.secretStore()
	if err != nil {
		return err
	}
	team, project, name, err := s.secretPath(c, true)
	if err != nil {
		return err
	}
	value, err := s.readBody(c)
	if err != nil {
		return err
	}
	if err := build.ValidateSecretValue(value); err != nil {
		return fmt.Errorf("%w (send the value as the request body)", err)
	}
	ctx := c.Request().Context()
	existing, err := store.List(ctx, team, project)
	if err != nil {
		return fmt.Errorf("list secrets of %s: %w", build.ProjectKey(team, project), err)
	}
	if len(existing) >= build.MaxProjectSecrets && !hasSecret(existing, name) {
		return fmt.Errorf("%w: project %s has %d secrets, the most it may have", build.ErrInvalid, build.ProjectKey(team, project), build.MaxProjectSecrets)
	}
	if err := store.Put(ctx, team, project, name, value); err != nil {
		return fmt.Errorf("put secret %s of %s: %w", name, build.ProjectKey(team, project), err)
	}
	clear(value)
	s.log.Info("secret written", "project", build.ProjectKey(team, project), "secret", name, "by", actor(c))
	return c.JSON(http.StatusOK, api.SecretChange{Name: name, Size: len(value)})
}

func hasSecret(list []build.SecretInfo, name string) bool {
	for _, i := range list {
		if i.Name == name {
			return true
		}
	}
	return false
}

func (s *Server) deleteSecret(c echo.Context) error {
	store, err := s.secretStore()
	if err != nil {
		return err
	}
	team, project, name, err := s.secretPath(c, true)
	if err != nil {
		return err
	}
	if err := store.Delete(c.Request().Context(), team, project, name); err != nil {
		return fmt.Errorf("delete secret %s of %s: %w", name, build.ProjectKey(team, project), err)
	}
	s.log.Info("secret deleted", "project", build.ProjectKey(team, project), "secret", name, "by", actor(c))
	return c.JSON(http.StatusOK, api.SecretChange{Name: name, Deleted: true})
}
