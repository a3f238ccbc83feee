"""The OAuth 2.0 / OpenID Connect provider's protocol core (issue 17).

Authlib's grants and endpoints (:rfc:`6749`, :rfc:`7636`, :rfc:`7662`, :rfc:`7009`, OpenID
Connect Core) run on data loaded before the call and answer data; :mod:`.provider` holds the
async entry points the Authentication service calls. Clients come from the configuration
(:mod:`.clients`), codes, tokens and consents live in the OAuth2 DB (:mod:`.store`), signing
keys and JWTs in :mod:`.keys` and :mod:`.jwt`.
"""
