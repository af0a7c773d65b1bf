package ingest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/decap-ci/decap/internal/build"
)

// sessionCookie holds the API token for the UI, so that scripts of the page
// never see it (HttpOnly). requireToken accepts it in place of an
// Authorization header, together with the X-Decap-CSRF header.
const sessionCookie = "decap_session"

// sessionBody is the body of POST /api/v1/session.
type sessionBody struct {
	Token string `json:"token"`
}

// createSession handles POST /api/v1/session: {"token": "..."} with the
// API token → 204 and the session cookie; a wrong token → 401. With auth
// off there is nothing to remember: 204 without a cookie. Neither the token
// nor the cookie is ever logged or echoed.
func (s *Server) createSession(c echo.Context) error {
	body, err := s.readBody(c)
	if err != nil {
		return err
	}
	var in sessionBody
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		// The decoder's message may quote the body: leave it out.
		return fmt.Errorf("%w: body must be JSON like {\"token\": \"...\"}", build.ErrInvalid)
	}
	if s.cfg.AuthDisabled {
		return c.NoContent(http.StatusNoContent)
	}
	if !s.validToken(in.Token) {
		return fmt.Errorf("%w: wrong API token", errUnauthorized)
	}
	if !cookieSafe(in.Token) {
		return echo.NewHTTPError(http.StatusInternalServerError,
			"the API token has characters a cookie cannot hold (space, quote, comma, semicolon, backslash or non-ASCII); use Authorization: Bearer, or configure a token without them")
	}
	http.SetCookie(c.Response(), newSessionCookie(c, in.Token, 0))
	return c.NoContent(http.StatusNoContent)
}

// deleteSession handles DELETE /api/v1/session: it clears the cookie.
func (s *Server) deleteSession(c echo.Context) error {
	http.SetCookie(c.Response(), newSessionCookie(c, "", -1))
	return c.NoContent(http.StatusNoContent)
}

// newSessionCookie returns the session cookie holding value: HttpOnly,
// SameSite=Strict, for the whole site, Secure when the request came over
// TLS: directly, or through a TLS-terminating proxy that says so in
// X-Forwarded-Proto (echo believes that header only from loopback and
// private-network peers). It lasts as long as the browser session; maxAge
// < 0 deletes it.
func newSessionCookie(c echo.Context, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: sessionCookie, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: c.Scheme() == "https",
	}
}

// cookieSafe reports whether s can be a cookie value as it is (RFC 6265
// cookie-octets), so that net/http neither quotes nor alters it.
func cookieSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b <= 0x20 || b >= 0x7f || b == '"' || b == ',' || b == ';' || b == '\\' {
			return false
		}
	}
	return true
}
