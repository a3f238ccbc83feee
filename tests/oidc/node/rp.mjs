// A relying party on panva's openid-client (an OpenID-certified RP library), driven by
// tests/oidc/test_openid_client.py over stdin/stdout, one JSON document a line:
//
//   node rp.mjs '{"issuer": ..., "client_id": ..., "client_secret": ... | null,
//                 "redirect_uri": ..., "post_logout_redirect_uri": ..., "scope": ...}'
//   -> {"authorize_url": ...}          the browser (the test) signs in there and consents
//   <- the URL the browser was sent back to (the redirect URI with code, state and iss)
//   -> {"claims": ..., "userinfo": ..., "refreshed": ..., "end_session_url": ...}
//
// openid-client does the checking: discovery (the issuer matches), PKCE S256, the state, the
// RFC 9207 iss of the response, the ID token (signature with the JWKS, iss, aud, exp, iat,
// nonce, at_hash when present), userinfo's sub, the refresh response. Any failure exits 1
// with {"error": ...}.
import * as client from 'openid-client'
import { createInterface } from 'node:readline'

const options = JSON.parse(process.argv[2])
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]()
const say = (doc) => process.stdout.write(JSON.stringify(doc) + '\n')

async function main () {
  const auth = options.client_secret
    ? client.ClientSecretBasic(options.client_secret)
    : client.None()
  // The issuer is the Access Point's http://127.0.0.1 URL in the tests.
  const config = await client.discovery(
    new URL(options.issuer), options.client_id, options.client_secret ?? undefined, auth,
    { execute: [client.allowInsecureRequests], timeout: 10 }
  )
  const server = config.serverMetadata()
  const verifier = client.randomPKCECodeVerifier()
  const challenge = await client.calculatePKCECodeChallenge(verifier)
  const state = client.randomState()
  const nonce = client.randomNonce()
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: options.redirect_uri,
    scope: options.scope,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state,
    nonce
  })
  say({ authorize_url: url.href, metadata: server })

  const { value: back, done } = await lines.next()
  if (done) throw new Error('no callback URL on stdin')
  const tokens = await client.authorizationCodeGrant(config, new URL(back.trim()), {
    pkceCodeVerifier: verifier,
    expectedState: state,
    expectedNonce: nonce,
    idTokenExpected: true
  })
  const claims = tokens.claims()
  const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub)
  const introspected = options.client_secret
    ? await client.tokenIntrospection(config, tokens.access_token)
    : null
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token)
  // Rotation: the first refresh token is spent.
  let reuse = null
  try {
    await client.refreshTokenGrant(config, tokens.refresh_token)
    reuse = 'accepted'
  } catch (err) {
    reuse = err.error ?? String(err)
  }
  const endSession = client.buildEndSessionUrl(config, {
    id_token_hint: tokens.id_token,
    post_logout_redirect_uri: options.post_logout_redirect_uri,
    state: 'rp-logout'
  })
  say({
    claims,
    id_token_header: JSON.parse(Buffer.from(tokens.id_token.split('.')[0], 'base64url')),
    userinfo,
    introspected,
    refreshed: {
      new_refresh_token: refreshed.refresh_token !== tokens.refresh_token,
      new_access_token: refreshed.access_token !== tokens.access_token,
      token_type: refreshed.token_type,
      refresh_token: refreshed.refresh_token
    },
    reuse,
    end_session_url: endSession.href
  })
}

main().catch((err) => {
  say({ error: String(err), code: err.code ?? null, cause: String(err.cause ?? '') })
  process.exit(1)
})
