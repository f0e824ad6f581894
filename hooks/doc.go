// Package hooks calls the site's own code over HTTP: it signs a payload as
// the Standard Webhooks specification says (https://www.standardwebhooks.com)
// and posts it with the one outbound Client every hook shares, which caps
// what an answer may cost and never follows a redirect. It knows nothing of
// Caddy or of what a hook carries: the screen and the webhooks build on it.
package hooks
