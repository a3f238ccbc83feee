// The benchmark's reference OpenID Provider: panva's oidc-provider (OpenID-certified), one
// Node process, set up like Gatehouse's provider in bench/oidc.py: the same confidential
// client (client_secret_basic, PKCE S256, authorization_code + refresh_token), ID tokens
// signed with the same algorithm (an ES256 and an RS256 key, like Gatehouse's key set),
// introspection and revocation on, an in-memory store (a Map: oidc-provider's own development
// adapter is an LRU of 1,000 entries, which drops codes minted ahead before they are used).
//
//   node op.mjs '{"port": P, "mint_port": M, "client_id": ..., "client_secret": ...,
//                 "redirect_uri": ..., "alg": "ES256"}'
//
// Prints {"ready": true, "issuer": ...} once listening. Authorization codes for the
// measurement are minted ahead on a second listener (GET http://127.0.0.1:M/mint?n=N&
// challenge=S256-CHALLENGE -> ["code", ...]) so the measurement exchanges codes only; that
// listener is not used while the benchmark measures.
import http from 'node:http'
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import Provider from 'oidc-provider'

const options = JSON.parse(process.argv[2])
const issuer = `http://127.0.0.1:${options.port}`
const SCOPE = 'openid profile email offline_access'

function signingKey (alg) {
  const { privateKey } = alg === 'ES256'
    ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
    : generateKeyPairSync('rsa', { modulusLength: 2048 })
  return { ...privateKey.export({ format: 'jwk' }), alg, use: 'sig', kid: `${alg}-${randomBytes(6).toString('hex')}` }
}

const store = new Map()

class MapAdapter {
  constructor (name) { this.name = name }
  key (id) { return `${this.name}:${id}` }
  async upsert (id, payload) {
    store.set(this.key(id), payload)
    if (payload.grantId) {
      const grant = `grant:${payload.grantId}`
      const keys = store.get(grant) ?? []
      keys.push(this.key(id))
      store.set(grant, keys)
    }
    if (payload.userCode) store.set(`userCode:${payload.userCode}`, id)
    if (payload.uid) store.set(`uid:${payload.uid}`, id)
  }

  async find (id) { return store.get(this.key(id)) }
  async findByUserCode (userCode) { return this.find(store.get(`userCode:${userCode}`)) }
  async findByUid (uid) { return this.find(store.get(`uid:${uid}`)) }
  async consume (id) {
    const payload = store.get(this.key(id))
    if (payload) payload.consumed = Math.floor(Date.now() / 1000)
  }

  async destroy (id) { store.delete(this.key(id)) }
  async revokeByGrantId (grantId) {
    for (const key of store.get(`grant:${grantId}`) ?? []) store.delete(key)
    store.delete(`grant:${grantId}`)
  }
}

const provider = new Provider(issuer, {
  adapter: MapAdapter,
  clients: [{
    client_id: options.client_id,
    client_secret: options.client_secret,
    redirect_uris: [options.redirect_uri],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: options.alg
  }],
  jwks: { keys: [signingKey('ES256'), signingKey('RS256')] },
  features: {
    introspection: { enabled: true },
    revocation: { enabled: true },
    devInteractions: { enabled: false }
  },
  cookies: { keys: [randomBytes(32).toString('hex')] },
  scopes: ['openid', 'offline_access', 'profile', 'email'],
  claims: { openid: ['sub'], profile: ['name', 'preferred_username'], email: ['email'] },
  ttl: { AccessToken: 600, AuthorizationCode: 600, IdToken: 600, RefreshToken: 30 * 86400, Grant: 30 * 86400 },
  async findAccount (ctx, id) {
    return {
      accountId: id,
      async claims () { return { sub: id, name: id, preferred_username: id, email: `${id}@example.org` } }
    }
  }
})
// The benchmark's load is expected: no per-request logging.
provider.on('server_error', (ctx, err) => { process.stderr.write(`server_error: ${err}\n`) })

async function mint (n, challenge) {
  const client = await provider.Client.find(options.client_id)
  const grant = new provider.Grant({ accountId: 'bench', clientId: options.client_id })
  grant.addOIDCScope(SCOPE)
  const grantId = await grant.save()
  const codes = []
  const authTime = Math.floor(Date.now() / 1000)
  for (let i = 0; i < n; i++) {
    const code = new provider.AuthorizationCode({
      accountId: 'bench',
      grantId,
      client,
      redirectUri: options.redirect_uri,
      scope: SCOPE,
      codeChallenge: challenge,
      codeChallengeMethod: 'S256',
      nonce: randomBytes(8).toString('hex'),
      authTime,
      amr: ['pwd'],
      expiresWithSession: false
    })
    codes.push(await code.save())
  }
  return codes
}

const minter = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://127.0.0.1')
  mint(Number(url.searchParams.get('n') || '1'), url.searchParams.get('challenge')).then(
    (codes) => { res.setHeader('content-type', 'application/json'); res.end(JSON.stringify(codes)) },
    (err) => { res.statusCode = 500; res.end(String(err)) }
  )
})

const server = provider.listen(options.port, '127.0.0.1')
server.keepAliveTimeout = 65000
minter.listen(options.mint_port, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ ready: true, issuer }) + '\n')
})
