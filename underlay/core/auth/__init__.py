"""Authentication: turns a request's credentials into a :class:`~underlay.core.identity.Principal`.

:class:`~underlay.core.auth.authenticator.Authenticator` runs the providers of ``server.auth`` in order
(API keys, JWTs against a JWKS, RFC 7662 introspection, a webhook, gateway headers, Kubernetes
TokenReview); the server's middleware (:mod:`underlay.server.auth`) calls it once per request and sets
``principal_var`` for everything after it. Nothing heavy is imported here: the run config imports
:mod:`underlay.core.auth.config` whether or not auth is on.
"""
