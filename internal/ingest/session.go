package ingest

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/api"
	"github.com/decap-ci/decap/internal/build"
)

// sessionCookie holds a UI session's ID: 256 random bits, HttpOnly, so that
// scripts of the page never see it. The API token never leaves the server:
// the session store keeps only the SHA-256 of the ID (build.SessionKey),
// with its expiry and an HMAC of the API token it was made with, so a
// reader of the store cannot use a session and rotating the token ends
// every session. requireToken accepts the cookie in place of an
// Authorization header, together with the X-Decap-CSRF header.
const sessionCookie = "decap_session"

// sessionIDBytes is the length of a session ID before encoding.
const sessionIDBytes = 32

// DefaultSessionTTL is how long a session lasts when Config.SessionTTL is 0.
const DefaultSessionTTL = 12 * time.Hour

// createSession handles POST /api/v1/session: {"token": "..."} with the
// API token → 204 and the session cookie of a new session, which lasts
// SessionTTL; a wrong token → 401, counted against the client like any
// wrong credential (429 while it is blocked); a browser's request from a
// page of another site → 403, not counted. A session cookie the request
// already carries is revoked. With auth off there is nothing to remember:
// 204 without a cookie. Neither the token nor the session ID is ever
// logged or echoed.
func (s *Server) createSession(c echo.Context) error {
	// A page of another site can make its visitor's browser send a
	// sign-in without a preflight (a no-cors fetch, a text/plain form):
	// counted, its wrong tokens would block the visitor's address. Such a
	// request is refused before its body is read.
	if err := s.crossSite.Check(c.Request()); err != nil {
		return echo.NewHTTPError(http.StatusForbidden, "a sign-in sent by another site's page is refused")
	}
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	var in api.Session
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		// The decoder's message may quote the body: leave it out.
		return fmt.Errorf("%w: body must be JSON like {\"token\": \"...\"}", build.ErrInvalid)
	}
	if s.cfg.AuthDisabled {
		return c.NoContent(http.StatusNoContent)
	}
	client := clientKey(c)
	if wait := s.throttle.blocked(client); wait > 0 {
		return throttled(c, wait)
	}
	if !s.validToken(in.Token) {
		s.throttle.failed(client, "api token (sign-in)")
		return fmt.Errorf("%w: wrong API token", errUnauthorized)
	}
	if s.deps.Sessions == nil {
		return echo.NewHTTPError(http.StatusNotImplemented, "no session store configured; use Authorization: Bearer")
	}
	ctx := c.Request().Context()
	if old, err := c.Request().Cookie(sessionCookie); err == nil && old.Value != "" {
		if err := s.deps.Sessions.Delete(ctx, build.SessionKey(old.Value)); err != nil {
			return fmt.Errorf("revoke the earlier session: %w", err)
		}
	}
	id, err := newSessionID()
	if err != nil {
		return err
	}
	now := s.now()
	key := build.SessionKey(id)
	sess := build.Session{Key: key, Binding: s.binding(key), CreatedAt: now, ExpiresAt: now.Add(s.cfg.SessionTTL)}
	if err := s.deps.Sessions.Create(ctx, sess); err != nil {
		return fmt.Errorf("create session: %w", err)
	}
	http.SetCookie(c.Response(), newSessionCookie(c, id, int(s.cfg.SessionTTL/time.Second)))
	return c.NoContent(http.StatusNoContent)
}

// deleteSession handles DELETE /api/v1/session: it revokes the session on
// the server, so that its ID is worthless even if it was copied, and
// clears the cookie. Without a session it only clears the cookie. It needs
// no credential, so it deletes only a session that exists: a made-up
// cookie costs the store a read, not a write, and counts against the
// client as a wrong session does (429 while it is blocked, cookie kept).
// When the store cannot be read or written the session stays valid: 503,
// cookie kept.
func (s *Server) deleteSession(c echo.Context) error {
	if ck, err := c.Request().Cookie(sessionCookie); err == nil && ck.Value != "" && s.deps.Sessions != nil {
		client := clientKey(c)
		if wait := s.throttle.blocked(client); wait > 0 {
			return throttled(c, wait)
		}
		ctx := c.Request().Context()
		key := build.SessionKey(ck.Value)
		if _, err := s.deps.Sessions.Get(ctx, key); errors.Is(err, build.ErrNotFound) {
			s.throttle.failed(client, "session (sign-out)")
		} else if err != nil {
			return fmt.Errorf("read session: %w", err)
		} else if err := s.deps.Sessions.Delete(ctx, key); err != nil {
			return fmt.Errorf("revoke session: %w", err)
		}
	}
	http.SetCookie(c.Response(), newSessionCookie(c, "", -1))
	return c.NoContent(http.StatusNoContent)
}

// validSession reports whether id names an unexpired session made with
// the API token configured now. An error means the store could not tell.
func (s *Server) validSession(ctx context.Context, id string) (bool, error) {
	if s.deps.Sessions == nil || s.cfg.APIToken == "" {
		return false, nil
	}
	key := build.SessionKey(id)
	sess, err := s.deps.Sessions.Get(ctx, key)
	if errors.Is(err, build.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read session: %w", err)
	}
	return hmac.Equal([]byte(sess.Binding), []byte(s.binding(key))), nil
}

// binding ties the session stored under key to the API token: an HMAC of
// the key under the token. It reveals nothing about the token, and no
// session made with another token matches it.
func (s *Server) binding(key string) string {
	m := hmac.New(sha256.New, []byte(s.cfg.APIToken))
	m.Write([]byte("decap session\x00" + key))
	return hex.EncodeToString(m.Sum(nil))
}

// newSessionID returns a new random session ID: 256 bits from crypto/rand
// in unpadded base64url, which a cookie holds as it is.
func newSessionID() (string, error) {
	b := make([]byte, sessionIDBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("session id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// newSessionCookie returns the session cookie holding value: HttpOnly,
// SameSite=Strict, for the whole site, Secure when the request came over
// TLS: directly, or through a TLS-terminating proxy that says so in
// X-Forwarded-Proto (believed only from loopback and private-network
// peers and from Limits.TrustedProxies; see schemeExtractor). maxAge > 0 is its lifetime in seconds (the
// session's); maxAge < 0 deletes it.
func newSessionCookie(c echo.Context, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: sessionCookie, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: c.Scheme() == "https",
	}
}
