// A local OAuth2/OIDC identity provider for kqlgate's AAD end-to-end tests
// (tests/e2e/test_aad.py), built on oauth2-mock-server.
//
//   node server.mjs [PORT]        (or ./run [PORT], which runs `npm ci` first when needed)
//
// Listens on 127.0.0.1:PORT (0 or absent: any free port), signs with a fresh key (RS256, or
// env IDP_KEY_ALG) and prints one JSON line on stdout,
// {"url": "http://127.0.0.1:PORT", "issuer": ..., "openid_configuration": ..., "pid": ...},
// then logs to stderr only.
//
// What it adds to oauth2-mock-server (whose token endpoint is POST /token, whose discovery
// document is GET /.well-known/openid-configuration and whose keys are GET /jwks):
//
// - AAD's token endpoint path: POST /<tenant>/oauth2/v2.0/token is the same endpoint, and the
//   tenant of the path becomes the token's `tid`.
// - The issuer is the address it is bound to (http://127.0.0.1:PORT). oauth2-mock-server names
//   itself http://localhost:PORT when bound to a 127.x address; the discovery document's
//   `issuer` and `jwks_uri` and every token's `iss` follow `issuer.url`, so they all agree.
// - AAD-like claims on client-credentials tokens:
//     aud    the form's `aud`, else the first scope without its "/.default" (as AAD does)
//     tid    the form's `tid`, else the tenant of the path
//     appid  the form's `appid`, else the client_id      (`azp` only when the form gives one)
//     oid    the form's `oid`, else a fixed id derived from the client_id; `sub` = oid
//     claims the form's `claims`, a JSON object merged last (a null value removes the claim)
// - Token lifetime, both the JWT `exp` and the answer's `expires_in`: the form's `expires_in`
//   (may be negative: an already expired token), else the client's lifetime set by
//   POST /__admin, else the default lifetime (env IDP_TOKEN_LIFETIME, default 3600 s).
// - Registered clients (POST /__admin {"clients": {"id": "secret"}}, or env IDP_CLIENTS as the
//   same JSON): a registered client's request without its secret (and without a
//   client_assertion) is refused with 401 invalid_client. Unregistered clients get tokens freely.
// - GET /__stats: {"token_requests": {client_id: n}, "failed_token_requests": {client_id: n},
//   "last_token_request": {client_id: {tenant, grant_type, scope, form_keys}}}.
// - POST /__admin, a JSON object, every key optional; answers the resulting settings:
//     {"token_lifetime": s, "client_lifetimes": {client_id: s or null}, "clients": {...},
//      "token_endpoint": "up" | "down", "reset_stats": true}
//   While "down", the token endpoint answers 503 temporarily_unavailable (and counts the
//   request as failed).

import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import { OAuth2Server } from 'oauth2-mock-server';

const HOST = '127.0.0.1';
const port = Number.parseInt(process.argv[2] ?? process.env.IDP_PORT ?? '0', 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`idp: bad port ${process.argv[2]}`);
  process.exit(2);
}

const settings = {
  tokenLifetime: Number.parseInt(process.env.IDP_TOKEN_LIFETIME ?? '3600', 10),
  clientLifetimes: {},
  clients: process.env.IDP_CLIENTS ? JSON.parse(process.env.IDP_CLIENTS) : {},
  tokenEndpoint: 'up',
};
let stats = emptyStats();

function emptyStats() {
  return { token_requests: {}, failed_token_requests: {}, last_token_request: {} };
}

function settingsView() {
  return {
    token_lifetime: settings.tokenLifetime,
    client_lifetimes: settings.clientLifetimes,
    clients: Object.keys(settings.clients),
    token_endpoint: settings.tokenEndpoint,
  };
}

/** A stable GUID-shaped id for a client's service principal. */
function objectIdOf(clientId) {
  const h = createHash('sha256').update(`oid:${clientId}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

function lifetimeOf(body) {
  if (body.expires_in !== undefined) {
    const requested = Number.parseInt(body.expires_in, 10);
    if (Number.isInteger(requested)) return requested;
  }
  const own = settings.clientLifetimes[body.client_id];
  return Number.isInteger(own) ? own : settings.tokenLifetime;
}

const server = new OAuth2Server();
const service = server.service;
// The signing key's algorithm: env IDP_KEY_ALG (RS256, PS256, ES256, ...), default RS256.
await server.issuer.keys.generate(process.env.IDP_KEY_ALG ?? 'RS256');

service.on('beforeTokenSigning', (token, req) => {
  const body = req.body ?? {};
  if (body.grant_type !== 'client_credentials') return;
  const payload = token.payload;
  const lifetime = lifetimeOf(body);
  req.idpLifetime = lifetime;
  const now = Math.floor(Date.now() / 1000);
  payload.exp = now + lifetime;
  if (lifetime <= 0) {
    payload.nbf = payload.exp - 3600;
    payload.iat = payload.nbf;
  }
  if (payload.aud === undefined) {
    const first = (body.scope ?? '').split(' ').find((s) => s.length > 0);
    if (first) payload.aud = first.replace(/\/\.default$/, '');
  }
  const tid = body.tid ?? req.idpTenant;
  if (tid) payload.tid = tid;
  const clientId = body.client_id;
  const appid = body.appid ?? clientId;
  if (appid) payload.appid = appid;
  if (body.azp) payload.azp = body.azp;
  const oid = body.oid ?? (clientId ? objectIdOf(clientId) : undefined);
  if (oid) {
    payload.oid = oid;
    payload.sub = oid;
  }
  if (body.claims) {
    for (const [name, value] of Object.entries(JSON.parse(body.claims))) {
      if (value === null) delete payload[name];
      else payload[name] = value;
    }
  }
});

service.on('beforeResponse', (response, req) => {
  const body = req.body ?? {};
  const clientId = body.client_id ?? '(none)';
  stats.token_requests[clientId] = (stats.token_requests[clientId] ?? 0) + 1;
  stats.last_token_request[clientId] = {
    tenant: req.idpTenant ?? null,
    grant_type: body.grant_type,
    scope: body.scope ?? null,
    form_keys: Object.keys(body).sort(),
  };
  const fail = (statusCode, error, description) => {
    stats.failed_token_requests[clientId] = (stats.failed_token_requests[clientId] ?? 0) + 1;
    response.statusCode = statusCode;
    response.body = { error, error_description: description };
  };
  if (settings.tokenEndpoint === 'down') {
    fail(503, 'temporarily_unavailable', 'the test IdP token endpoint is switched off');
    return;
  }
  const secret = settings.clients[clientId];
  if (secret !== undefined && body.client_secret !== secret && body.client_assertion === undefined) {
    fail(401, 'invalid_client', 'AADSTS7000215: Invalid client secret provided.');
    return;
  }
  if (req.idpLifetime !== undefined && response.statusCode === 200) {
    response.body.expires_in = req.idpLifetime;
  }
});

function sendJson(res, status, value) {
  const text = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

async function readJson(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const text = Buffer.concat(chunks).toString('utf8');
  return text.trim() ? JSON.parse(text) : {};
}

async function admin(req, res) {
  let change;
  try {
    change = await readJson(req);
  } catch (error) {
    sendJson(res, 400, { error: `not JSON: ${error.message}` });
    return;
  }
  if (change.token_lifetime !== undefined) settings.tokenLifetime = change.token_lifetime;
  for (const [clientId, lifetime] of Object.entries(change.client_lifetimes ?? {})) {
    if (lifetime === null) delete settings.clientLifetimes[clientId];
    else settings.clientLifetimes[clientId] = lifetime;
  }
  Object.assign(settings.clients, change.clients ?? {});
  if (change.token_endpoint !== undefined) {
    if (!['up', 'down'].includes(change.token_endpoint)) {
      sendJson(res, 400, { error: 'token_endpoint must be "up" or "down"' });
      return;
    }
    settings.tokenEndpoint = change.token_endpoint;
  }
  if (change.reset_stats) stats = emptyStats();
  sendJson(res, 200, settingsView());
}

const AAD_TOKEN_PATH = /^\/([^/?]+)\/oauth2\/v2\.0\/token(\?.*)?$/;
const oauth2 = service.requestHandler;

const http = createServer((req, res) => {
  const path = (req.url ?? '/').split('?')[0];
  if (path === '/__stats' && req.method === 'GET') {
    sendJson(res, 200, stats);
    return;
  }
  if (path === '/__admin' && req.method === 'POST') {
    admin(req, res).catch((error) => sendJson(res, 500, { error: String(error) }));
    return;
  }
  const aad = AAD_TOKEN_PATH.exec(req.url ?? '');
  if (aad) {
    req.idpTenant = decodeURIComponent(aad[1]);
    req.url = `/token${aad[2] ?? ''}`;
  }
  oauth2(req, res);
});

http.on('error', (error) => {
  console.error(`idp: ${error.message}`);
  process.exit(1);
});
http.listen(port, HOST, () => {
  const bound = http.address().port;
  server.issuer.url = `http://${HOST}:${bound}`;
  process.stdout.write(
    JSON.stringify({
      url: server.issuer.url,
      issuer: server.issuer.url,
      openid_configuration: `${server.issuer.url}/.well-known/openid-configuration`,
      pid: process.pid,
    }) + '\n',
  );
  console.error(`idp: listening on ${server.issuer.url}`);
});

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    http.close();
    http.closeAllConnections();
    process.exit(0);
  });
}
