#!/usr/bin/env node
/*
 * awsfakes.js -- loopback stand-ins for the AWS services outboxd's
 * credential chain asks, for the integration tests (it-s3-creds.sh).
 *
 * One HTTP server answers as each service does:
 *   IMDSv2      PUT /latest/api/token (X-aws-ec2-metadata-token-ttl-seconds
 *               required) gives a session token; GET
 *               /latest/meta-data/iam/security-credentials/ (the token in
 *               X-aws-ec2-metadata-token, else 401) names the role; GET
 *               .../ROLE gives {Code, AccessKeyId, SecretAccessKey, Token,
 *               Expiration}.  A GET without the token is refused (401), as
 *               an instance that requires IMDSv2 does.
 *   container   GET /container/creds with Authorization equal to
 *               --container-token (403 otherwise): {AccessKeyId,
 *               SecretAccessKey, Token, Expiration, RoleArn}.
 *   STS         POST / (Query API, form body): AssumeRole signed with
 *               SigV4 for service sts by --base-access-key/--base-secret-key
 *               (verified by s3proxy.js's own verifier, with AWS's signer),
 *               RoleArn equal to --role-arn; AssumeRoleWithWebIdentity
 *               unsigned, WebIdentityToken equal to --web-token.  XML
 *               replies as STS gives, ErrorResponse on refusal.
 *
 * Every set of credentials it issues lives --lifetime seconds and is
 * registered with the verifying S3 proxy (POST --proxy/__proxy/creds), which
 * then takes it until it expires and answers ExpiredToken after.  Each
 * issue is appended to --log as a JSON line (time, provider, access key,
 * expiry; never the secret or token), so a test can count refreshes.
 *
 *   node awsfakes.js --listen 127.0.0.1:0 --port-file F --proxy URL
 *        --lifetime S --log F --base-access-key AK --base-secret-key SK
 *        --role-arn ARN --web-token T --container-token T [--region R]
 *        [--claim-extra S]   (Expiration says S seconds more than the truth)
 *   GET /__fakes/stats   {"issued": {provider: n}, "refused": {provider: n}}
 */
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const path = require('path');

const { verifyAuth } = require(path.join(__dirname, 's3proxy.js'));

function parseArgs(argv) {
  const o = {};
  for (let i = 0; i < argv.length; i++) {
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) {
      process.stderr.write(`awsfakes: bad argument ${argv[i]}\n`);
      process.exit(64);
    }
    o[argv[i].slice(2)] = argv[++i];
  }
  for (const k of ['listen', 'proxy', 'lifetime', 'log', 'base-access-key', 'base-secret-key',
    'role-arn', 'web-token', 'container-token']) {
    if (o[k] === undefined) {
      process.stderr.write(`awsfakes: --${k} is required\n`);
      process.exit(64);
    }
  }
  return o;
}

const o = parseArgs(process.argv.slice(2));
const lifetimeMs = Number(o.lifetime) * 1000;
/* --claim-extra S: say the keys live S seconds longer than the proxy takes
 * them (an endpoint whose clock or promise is wrong), to provoke ExpiredToken */
const claimExtraMs = Number(o['claim-extra'] || 0) * 1000;
const imdsTokens = new Map(); /* token -> expiry ms */
const stats = { issued: {}, refused: {} };
const ROLE = 'outboxd-test-role';

function rand(n, alphabet) {
  const b = crypto.randomBytes(n);
  let s = '';
  for (let i = 0; i < n; i++) s += alphabet[b[i] % alphabet.length];
  return s;
}

function postJson(url, obj) {
  return new Promise((resolve, reject) => {
    const data = Buffer.from(JSON.stringify(obj));
    const req = http.request(url, { method: 'POST', headers: { 'Content-Type': 'application/json',
      'Content-Length': data.length } }, res => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`proxy said ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end(data);
  });
}

/* New short-lived credentials, known to the S3 proxy before they are given. */
async function issue(provider) {
  const c = {
    AccessKeyId: 'ASIA' + rand(16, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'),
    SecretAccessKey: rand(40, 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'),
    Token: 'IQoJb3JpZ2luX2Vj' + crypto.randomBytes(300).toString('base64'),
    expiresMs: Date.now() + lifetimeMs,
  };
  c.Expiration = new Date(c.expiresMs + claimExtraMs).toISOString().replace(/\.\d{3}Z$/, 'Z');
  await postJson(`${o.proxy}/__proxy/creds`, { access_key: c.AccessKeyId, secret_key: c.SecretAccessKey,
    token: c.Token, expires_ms: c.expiresMs });
  stats.issued[provider] = (stats.issued[provider] || 0) + 1;
  fs.appendFileSync(o.log, JSON.stringify({ time: new Date().toISOString(), provider,
    access_key: c.AccessKeyId, expires: c.Expiration }) + '\n');
  return c;
}

function refuse(res, provider, status, body, type) {
  stats.refused[provider] = (stats.refused[provider] || 0) + 1;
  res.writeHead(status, { 'Content-Type': type || 'text/plain' });
  res.end(body);
}

function stsError(res, status, code, message) {
  refuse(res, 'sts', status, '<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">' +
    `<Error><Type>Sender</Type><Code>${code}</Code><Message>${message}</Message></Error>` +
    `<RequestId>${crypto.randomUUID()}</RequestId></ErrorResponse>`, 'text/xml');
}

function stsReply(res, action, c) {
  res.writeHead(200, { 'Content-Type': 'text/xml' });
  res.end(`<${action}Response xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><${action}Result>` +
    `<Credentials><AccessKeyId>${c.AccessKeyId}</AccessKeyId>` +
    `<SecretAccessKey>${c.SecretAccessKey}</SecretAccessKey>` +
    `<SessionToken>${c.Token}</SessionToken><Expiration>${c.Expiration}</Expiration></Credentials>` +
    `<AssumedRoleUser><Arn>${o['role-arn']}/outboxd</Arn><AssumedRoleId>AROA:outboxd</AssumedRoleId>` +
    `</AssumedRoleUser></${action}Result><ResponseMetadata><RequestId>${crypto.randomUUID()}</RequestId>` +
    `</ResponseMetadata></${action}Response>`);
}

function headerLists(raw) {
  const h = {};
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i].toLowerCase();
    (h[k] = h[k] || []).push(raw[i + 1]);
  }
  return h;
}

async function sts(req, res, body) {
  const form = new URLSearchParams(body.toString('utf8'));
  const action = form.get('Action');
  if (form.get('Version') !== '2011-06-15') return stsError(res, 400, 'InvalidParameterValue', 'Version');
  if (form.get('RoleArn') !== o['role-arn']) {
    return stsError(res, 403, 'AccessDenied', 'Not authorized to perform sts:AssumeRole on this role');
  }
  if (!form.get('RoleSessionName')) return stsError(res, 400, 'ValidationError', 'RoleSessionName is required');
  if (action === 'AssumeRole') {
    const auth = await verifyAuth({ method: req.method, rawUrl: req.url, headers: headerLists(req.rawHeaders),
      now: new Date(), accessKeyId: o['base-access-key'], secretAccessKey: o['base-secret-key'],
      region: o.region, service: 'sts' });
    if (!auth.ok) return stsError(res, 403, auth.code, auth.message);
    const sha = crypto.createHash('sha256').update(body).digest('hex');
    if (auth.payloadHash !== sha) return stsError(res, 400, 'IncompleteSignature', 'payload hash');
    return stsReply(res, 'AssumeRole', await issue('sts-assume-role'));
  }
  if (action === 'AssumeRoleWithWebIdentity') {
    if (req.headers.authorization !== undefined) {
      return stsError(res, 400, 'InvalidParameterValue', 'AssumeRoleWithWebIdentity is not signed');
    }
    if (form.get('WebIdentityToken') !== o['web-token']) {
      return stsError(res, 400, 'InvalidIdentityToken', 'The web identity token is not valid');
    }
    return stsReply(res, 'AssumeRoleWithWebIdentity', await issue('sts-web-identity'));
  }
  return stsError(res, 400, 'InvalidAction', `Could not find operation ${action}`);
}

function imdsTokenOk(req) {
  const t = req.headers['x-aws-ec2-metadata-token'];
  return t !== undefined && imdsTokens.has(t) && imdsTokens.get(t) > Date.now();
}

async function handle(req, res, body) {
  const url = req.url.split('?')[0];
  if (req.method === 'GET' && url === '/__fakes/stats') {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    return res.end(JSON.stringify(stats));
  }
  if (req.method === 'PUT' && url === '/latest/api/token') {
    const ttl = Number(req.headers['x-aws-ec2-metadata-token-ttl-seconds']);
    if (!(ttl >= 1 && ttl <= 21600)) return refuse(res, 'imds', 400, 'Bad Request');
    const t = crypto.randomBytes(40).toString('base64');
    imdsTokens.set(t, Date.now() + ttl * 1000);
    res.writeHead(200, { 'Content-Type': 'text/plain', 'X-aws-ec2-metadata-token-ttl-seconds': String(ttl) });
    return res.end(t);
  }
  if (url.startsWith('/latest/meta-data/')) {
    if (req.method !== 'GET') return refuse(res, 'imds', 405, 'Method Not Allowed');
    if (!imdsTokenOk(req)) return refuse(res, 'imds', 401, 'Unauthorized');
    if (url === '/latest/meta-data/iam/security-credentials/') {
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      return res.end(ROLE);
    }
    if (url === `/latest/meta-data/iam/security-credentials/${ROLE}`) {
      const c = await issue('imds');
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      return res.end(JSON.stringify({ Code: 'Success', LastUpdated: new Date().toISOString(),
        Type: 'AWS-HMAC', AccessKeyId: c.AccessKeyId, SecretAccessKey: c.SecretAccessKey,
        Token: c.Token, Expiration: c.Expiration }, null, 2));
    }
    return refuse(res, 'imds', 404, 'Not Found');
  }
  if (req.method === 'GET' && url === '/container/creds') {
    if (req.headers.authorization !== o['container-token']) {
      return refuse(res, 'container', 403, JSON.stringify({ message: 'Authorization header is missing or wrong' }),
        'application/json');
    }
    const c = await issue('container');
    res.writeHead(200, { 'Content-Type': 'application/json' });
    return res.end(JSON.stringify({ AccessKeyId: c.AccessKeyId, SecretAccessKey: c.SecretAccessKey,
      Token: c.Token, Expiration: c.Expiration, RoleArn: o['role-arn'] }));
  }
  if (req.method === 'POST' && url === '/') return sts(req, res, body);
  return refuse(res, 'other', 404, 'Not Found');
}

const server = http.createServer((req, res) => {
  const chunks = [];
  let size = 0;
  req.on('data', c => {
    size += c.length;
    if (size <= 1024 * 1024) chunks.push(c);
  });
  req.on('end', () => {
    handle(req, res, Buffer.concat(chunks)).catch(err => {
      process.stderr.write(`awsfakes: ${err.stack || err}\n`);
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
});
const [host, port] = o.listen.split(':');
server.listen(Number(port), host, () => {
  if (o['port-file']) fs.writeFileSync(o['port-file'], String(server.address().port));
});
