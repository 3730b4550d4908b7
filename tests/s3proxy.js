#!/usr/bin/env node
/*
 * s3proxy.js -- a verifying reverse proxy for outboxd's integration tests.
 *
 * s3rver (the local S3 server the tests use) accepts any SigV4 signature and
 * ignores Content-MD5 and x-amz-content-sha256.  A request that s3rver takes
 * could still be one that real S3 refuses, so every test request goes through
 * this proxy first.  It buffers the body, checks x-amz-content-sha256 and
 * Content-MD5 against it, recomputes the SigV4 signature with AWS's own signer
 * (@smithy/signature-v4) from the canonical request *AWS* would build (not the
 * one the client claims), and only then forwards the request unchanged to
 * s3rver.  Every refusal is answered the way S3 answers (XML error body),
 * appended as a JSON line to the --log file and counted, so the test harness
 * can fail a run in which the daemon sent anything AWS would refuse.
 *
 * On command (POST /__proxy/fault, unsigned, never forwarded) it injects the
 * faults S3 shows in production: 503 SlowDown, 500 InternalError, a reset in
 * the middle of the body, a stall, a reply lost after the object was stored,
 * BadDigest, AccessDenied, RequestTimeTooSkewed, a refused connection.
 *
 * Modes:
 *   node s3proxy.js --listen 127.0.0.1:0 --upstream http://127.0.0.1:PORT
 *        --access-key AK --secret-key SK [--region R] [--data-dir DIR]
 *        --port-file FILE --log FILE
 *     --region R    refuse a credential scope naming another region
 *     --data-dir D  s3rver's --directory: lets the proxy answer the multipart
 *                   calls s3rver gets wrong (see Proxy.multipart)
 *   node s3proxy.js --self-test VECTORS.md     check the verifier on AWS's
 *                                              published vectors, exit 0/1
 *   node s3proxy.js --presign URL --access-key AK --secret-key SK
 *        [--region R] [--expires SECONDS] [--method GET]   print a presigned URL
 *
 * Control API (same port, unsigned, never forwarded, never counted):
 *   POST /__proxy/fault  {"type": T, "count": N, "seconds": S, "match": "sub",
 *                         "method": "PUT", "query": "sub", "ms": M}
 *       arms a fault for the next N matching requests (default 1) or, with
 *       "seconds", for every matching request during S seconds (and at most N
 *       if both are given).  "match" is a substring of the decoded path,
 *       "query" of the decoded query string, "method" the HTTP method.  The
 *       first armed fault that matches applies.  Types:
 *         slowdown       503 SlowDown, not forwarded
 *         error500       500 InternalError, not forwarded
 *         reset          reads part of the body, then resets the connection
 *         stall          reads the request, never answers, holds the socket
 *         lost_reply     verified and forwarded (the object IS stored), then
 *                        the client's connection is reset without an answer
 *         bad_digest     400 BadDigest, not forwarded
 *         access_denied  403 AccessDenied, not forwarded
 *         skewed         403 RequestTimeTooSkewed, ServerTime (and Date) 20
 *                        minutes ahead, not forwarded
 *         down           the connection is reset at once (an unfiltered one
 *                        already when a connection is accepted)
 *         delay          verified, then forwarded after "ms" (1000) ms
 *         corrupt        one byte in the middle of the body is flipped as it
 *                        arrives (damage in transit), then verified as
 *                        usual: the digest that covers the body must refuse it
 *       answers {"ok":true,"id":N}, or 400 for a bad spec
 *   POST /__proxy/clear  disarms every fault
 *   POST /__proxy/reset  zeroes the counters and forgets the PUT log
 *   GET  /__proxy/puts   the PUT log: a JSON array, one element per PUT whose
 *                        body the proxy read whole (before any fault that
 *                        answers it and before verification), with time
 *                        (the body's end), started (when its body began),
 *                        path, query, length, sha256 (of the body), fault
 *                        (the type injected, or null), content_sha256 (the
 *                        x-amz-content-sha256 header), content_md5 (whether
 *                        a Content-MD5 header came), checksum_sha256 (the
 *                        x-amz-checksum-sha256 header) and, for an aws-chunked
 *                        body, content_encoding, decoded_length and
 *                        trailer_checksum (null when it did not decode); lets a test prove that
 *                        a body was, or was never, sent, and what covered it
 *   GET  /__proxy/writes every PUT and POST whose body the proxy read whole (as
 *                        the PUT log, and CreateMultipartUpload,
 *                        CompleteMultipartUpload): time, method, path, query,
 *                        length, headers (the x-amz-server-side-encryption,
 *                        ...-aws-kms-key-id and x-amz-storage-class it
 *                        carried) and signed (its SignedHeaders, a list);
 *                        lets a test prove which requests asked for
 *                        encryption or a storage class, signed
 *   POST /__proxy/creds  {"access_key", "secret_key", "token", "expires_ms"}
 *                        accepts temporary credentials (issued by the fakes
 *                        of tests/awsfakes.js) with that session token until
 *                        expires_ms (epoch ms); after it S3's 400
 *                        ExpiredToken, with another token 400 InvalidToken
 *   POST /__proxy/kms    {"on": true, "match": "sub"} emulates an SSE-KMS
 *                        bucket for paths containing "sub" (all without it):
 *                        successful replies carry x-amz-server-side-encryption:
 *                        aws:kms, and no ETag is an MD5 -- every ETag in PUT,
 *                        UploadPart, CompleteMultipartUpload, HEAD, GET and
 *                        ListParts replies is the real one with its 32 hex
 *                        digits XORed with a fixed mask (so it is never the
 *                        MD5, is stable, and maps back); the ETags a client
 *                        lists in CompleteMultipartUpload are mapped back
 *                        before the request is checked and forwarded, as S3
 *                        accepts the ETags it gave out.  {"on": false} ends
 *                        it.  Not touched by /__proxy/clear.
 *   POST /__proxy/checksum {"path": "/bucket/key", "sha256": "BASE64[-N]"}
 *                        from now on HEAD and GET in checksum mode answer this
 *                        as the checksum stored with the object (an object
 *                        whose stored checksum differs from its bytes: what
 *                        outboxctl verify must notice); {"path", "clear": true}
 *                        forgets it; /__proxy/clear forgets all
 *   GET  /__proxy/stats  {"requests", "by_method", "by_path", "rejected",
 *                         "faults_injected", "armed": [...]}
 *
 * Rejections (each appended to --log as one JSON line with time, method,
 * path, reason, status, code, url, and for signature mismatches the
 * canonical request and string to sign the proxy computed): anonymous or
 * SigV2 requests, malformed Authorization or presign parameters, a wrong
 * access key, a region other than --region, x-amz-date more than 15 minutes
 * off, an expired presigned URL, unsigned x-amz-* headers (as S3 does, but
 * x-amz-content-sha256), a missing or non-hex x-amz-content-sha256 on a
 * header-signed request (UNSIGNED-PAYLOAD only on presigned URLs; of the
 * aws-chunked forms only STREAMING-UNSIGNED-PAYLOAD-TRAILER, decoded and its
 * trailing x-amz-checksum-sha256 checked against the decoded body, 400
 * BadDigest, with S3's framing errors: see decodeAwsChunked), a wrong signature, an x-amz-content-sha256 or Content-MD5
 * that does not match the body, an x-amz-checksum-sha256 that is not a
 * base64 SHA-256 (400 InvalidRequest) or does not match the body (400
 * BadDigest), a CompleteMultipartUpload of an upload created with
 * x-amz-checksum-algorithm SHA256 whose part list lacks a part's
 * ChecksumSHA256 (400 InvalidRequest) or names another than the part was
 * sent with (400 InvalidPart), a PUT with a body covered by no digest
 * (UNSIGNED-PAYLOAD, so a presigned PUT, without Content-MD5), and
 * with --data-dir the multipart errors S3 reports (see Proxy.multipart).
 *
 * Modules are resolved from $OUTBOXD_NODE_MODULES when set, else normally
 * (the repository's node_modules, installed with `npm ci`).
 */
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const path = require('path');
const { createRequire } = require('module');

/* ------------------------------------------------------------------ */
/* dependencies                                                        */

function loadDeps() {
  const base = process.env.OUTBOXD_NODE_MODULES;
  const req = base
    ? createRequire(path.join(path.resolve(base), '__outboxd_resolve__.js'))
    : require;
  try {
    const sv4 = req('@smithy/signature-v4');
    return {
      SignatureV4: sv4.SignatureV4,
      getCanonicalHeaders: sv4.getCanonicalHeaders,
      HttpRequest: req('@smithy/protocol-http').HttpRequest,
      Sha256: req('@aws-crypto/sha256-js').Sha256,
    };
  } catch (err) {
    process.stderr.write(
      `s3proxy: cannot load the signer modules (${err.message}); ` +
        'run `npm ci` in the source tree or set OUTBOXD_NODE_MODULES\n',
    );
    process.exit(2);
  }
}
const deps = loadDeps();

/* ------------------------------------------------------------------ */
/* small helpers                                                       */

const MAX_SKEW_MS = 15 * 60 * 1000;
const MAX_PRESIGN_SECONDS = 7 * 24 * 3600;
const MAX_BODY = 5 * 1024 * 1024 * 1024; /* S3's single-PUT limit */
const EMPTY_SHA256 =
  'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

/* SSE-KMS emulation: an ETag's 32 hex digits XORed with this mask (an
 * involution, so the same function maps a real ETag to the one the client
 * sees and back).  Other ETag forms pass through unchanged. */
const KMS_MASK = Buffer.from('a5c3e1f00f1e3c5a5ac3e1f00f1e3ca5', 'hex');
/* request headers the PUT/POST log keeps (GET /__proxy/writes) */
const STORAGE_HEADERS = ['x-amz-server-side-encryption',
  'x-amz-server-side-encryption-aws-kms-key-id', 'x-amz-storage-class',
  'x-amz-checksum-sha256', 'x-amz-checksum-algorithm', 'x-amz-trailer',
  'content-encoding', 'x-amz-decoded-content-length'];
/* The checksum S3 keeps with an object, emulated: s3rver knows nothing of
 * x-amz-checksum-*, so the proxy stores what it verified as metadata that
 * s3rver keeps (a PUT's header, a multipart upload's metadata file) under
 * these names, strips them from every reply, and answers
 * x-amz-checksum-sha256 on HEAD and GET in checksum mode, as S3 does. */
const HIDDEN_CHECKSUM = 'x-amz-meta-s3proxy-checksum-sha256';
const HIDDEN_ALGORITHM = 'x-amz-meta-s3proxy-checksum-algorithm';

/* A base64 SHA-256 as S3 takes it in x-amz-checksum-sha256: 32 bytes. */
function validChecksum(v) {
  return typeof v === 'string' && /^[A-Za-z0-9+/]{43}=$/.test(v) &&
    Buffer.from(v, 'base64').length === 32;
}

/*
 * Decodes an aws-chunked body sent with x-amz-content-sha256:
 * STREAMING-UNSIGNED-PAYLOAD-TRAILER, as S3 does: chunks "<hex>\r\n<data>\r\n"
 * (each but the last >= 8 KiB, no chunk signatures), "0\r\n", trailer lines
 * "name:value\r\n", "\r\n". The decoded length must be
 * x-amz-decoded-content-length, Content-Encoding must name aws-chunked,
 * x-amz-trailer must announce x-amz-checksum-sha256 and the trailer carry
 * it, and it must be the decoded body's SHA-256 (else 400 BadDigest).
 * Returns { ok: true, body, checksum } or an s3err(...).
 */
function decodeAwsChunked(raw, h) {
  const enc = (header1(h, 'content-encoding') || '').split(',').map(x => x.trim());
  if (!enc.includes('aws-chunked')) {
    return s3err(400, 'InvalidRequest', 'A STREAMING-* payload needs Content-Encoding: aws-chunked');
  }
  const declen = header1(h, 'x-amz-decoded-content-length');
  if (declen === undefined || !/^[0-9]+$/.test(declen)) {
    return s3err(411, 'MissingContentLength', 'You must provide the x-amz-decoded-content-length header.');
  }
  if (header1(h, 'x-amz-trailer') !== 'x-amz-checksum-sha256') {
    return s3err(400, 'InvalidRequest',
      `x-amz-trailer must be x-amz-checksum-sha256 here (got ${header1(h, 'x-amz-trailer')})`);
  }
  const incomplete = () => s3err(400, 'IncompleteBody',
    'The request body terminated unexpectedly (aws-chunked framing)');
  const parts = [];
  let pos = 0, total = 0, last = -1;
  for (;;) {
    const eol = raw.indexOf('\r\n', pos);
    if (eol < 0 || eol - pos > 64) return incomplete();
    const line = raw.subarray(pos, eol).toString('latin1');
    if (!/^[0-9a-fA-F]+$/.test(line)) {
      return s3err(400, 'InvalidRequest', `Invalid chunk header "${line.slice(0, 40)}" (no chunk signature on an unsigned stream)`);
    }
    const size = parseInt(line, 16);
    pos = eol + 2;
    if (size === 0) break;
    if (last >= 0 && last < 8192) {
      return s3err(400, 'InvalidChunkSizeError', 'Only the last chunk is allowed to have a size less than 8192 bytes');
    }
    if (pos + size + 2 > raw.length || raw[pos + size] !== 13 || raw[pos + size + 1] !== 10) return incomplete();
    parts.push(raw.subarray(pos, pos + size));
    total += size;
    last = size;
    pos += size + 2;
  }
  const trailers = {};
  for (;;) {
    const eol = raw.indexOf('\r\n', pos);
    if (eol < 0) return incomplete();
    const line = raw.subarray(pos, eol).toString('latin1');
    pos = eol + 2;
    if (line === '') break;
    const c = line.indexOf(':');
    if (c <= 0) return s3err(400, 'MalformedTrailerError', `The request contained a malformed trailer line "${line.slice(0, 60)}"`);
    trailers[line.slice(0, c).trim().toLowerCase()] = line.slice(c + 1).trim();
  }
  if (pos !== raw.length) return incomplete();
  if (String(total) !== declen) {
    return s3err(400, 'IncompleteBody',
      `You did not provide the number of bytes specified by x-amz-decoded-content-length (${declen}; the chunks hold ${total})`);
  }
  const checksum = trailers['x-amz-checksum-sha256'];
  if (checksum === undefined) {
    return s3err(400, 'MalformedTrailerError', 'The x-amz-checksum-sha256 trailer announced in x-amz-trailer is missing');
  }
  if (!validChecksum(checksum)) {
    return s3err(400, 'InvalidRequest', 'Value for x-amz-checksum-sha256 trailing header is invalid.');
  }
  const body = Buffer.concat(parts);
  const calc = crypto.createHash('sha256').update(body).digest('base64');
  if (calc !== checksum) {
    return s3err(400, 'BadDigest', 'The SHA256 you specified did not match the calculated checksum.',
      { ExpectedChecksum: checksum, CalculatedChecksum: calc });
  }
  return { ok: true, body, checksum };
}

/* S3's composite checksum of a multipart upload: the SHA-256 of the
 * parts' binary SHA-256s, in part order, base64, then "-" and the count. */
function compositeChecksum(partChecksums) {
  const h = crypto.createHash('sha256');
  for (const c of partChecksums) h.update(Buffer.from(c, 'base64'));
  return `${h.digest('base64')}-${partChecksums.length}`;
}

function kmsEtag(etag) {
  if (typeof etag !== 'string') return etag;
  return etag.replace(/^((?:"|&quot;|&#34;)?)([0-9a-fA-F]{32})((?:-\d+)?(?:"|&quot;|&#34;)?)$/, (m, a, hex, b) => {
    const x = Buffer.from(hex, 'hex');
    for (let i = 0; i < 16; i++) x[i] ^= KMS_MASK[i];
    return a + x.toString('hex') + b;
  });
}
function kmsEtagsInXml(text) {
  return text.replace(/<ETag>([\s\S]*?)<\/ETag>/g, (m, v) => `<ETag>${kmsEtag(v.trim())}</ETag>`);
}
const KMS_HEADERS = {
  'x-amz-server-side-encryption': 'aws:kms',
  'x-amz-server-side-encryption-aws-kms-key-id':
    'arn:aws:kms:us-east-1:111122223333:key/0ut60xd0-test-4kms-0000-000000000000',
};

function isHex(c) {
  return /^[0-9A-Fa-f]$/.test(c);
}

/* Percent-decode a raw URL component to bytes.  An invalid escape stays a
 * literal '%'; a raw non-ASCII character (never valid on the wire) is taken
 * as UTF-8. */
function pctDecode(s) {
  const out = [];
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x25 && i + 2 < s.length && isHex(s[i + 1]) && isHex(s[i + 2])) {
      out.push(parseInt(s.substr(i + 1, 2), 16));
      i += 2;
    } else if (c < 0x80) {
      out.push(c);
    } else {
      for (const b of Buffer.from(s[i], 'utf8')) out.push(b);
    }
  }
  return Buffer.from(out);
}

/* AWS's canonical URI for S3: every byte except unreserved characters and
 * '/' as %XX with upper-case hex, computed from the decoded path so that how
 * the client chose to escape it does not matter. */
function canonicalPath(rawPath) {
  const bytes = pctDecode(rawPath);
  let out = '';
  for (const b of bytes) {
    const ch = String.fromCharCode(b);
    if (/[A-Za-z0-9\-._~/]/.test(ch)) out += ch;
    else out += '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

function splitUrl(rawUrl) {
  const q = rawUrl.indexOf('?');
  return q < 0
    ? { rawPath: rawUrl, rawQuery: '' }
    : { rawPath: rawUrl.slice(0, q), rawQuery: rawUrl.slice(q + 1) };
}

/* The raw query as the object the signer wants: decoded keys and values,
 * repeated keys as arrays, a key without '=' has the empty value. */
function parseQuery(rawQuery) {
  const query = {};
  if (!rawQuery) return query;
  for (const part of rawQuery.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const k = pctDecode(eq < 0 ? part : part.slice(0, eq)).toString('utf8');
    const v = eq < 0 ? '' : pctDecode(part.slice(eq + 1)).toString('utf8');
    if (Object.prototype.hasOwnProperty.call(query, k)) {
      query[k] = [].concat(query[k], v);
    } else {
      query[k] = v;
    }
  }
  return query;
}

function xmlEscape(s) {
  return String(s).replace(
    /[<>&'"]/g,
    c => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', "'": '&apos;', '"': '&quot;' })[c],
  );
}

function amzDateToDate(s) {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(s || '');
  if (!m) return null;
  const d = new Date(Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]));
  return isNaN(d) ? null : d;
}

function isoSeconds(d) {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

function requestId() {
  return crypto.randomBytes(8).toString('hex').toUpperCase();
}

/* A refusal: HTTP status, S3 error code, message, extra XML elements. */
function s3err(status, code, message, extra) {
  return { ok: false, status, code, message, extra: extra || {} };
}

/* headers as the verifier wants them: lower-case name -> array of values */
function distinctHeaders(rawHeaders) {
  const h = {};
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    const k = rawHeaders[i].toLowerCase();
    (h[k] = h[k] || []).push(rawHeaders[i + 1]);
  }
  return h;
}

function header1(h, name) {
  return h[name] ? h[name].join(',') : undefined;
}

/* ------------------------------------------------------------------ */
/* SigV4 verification                                                  */

/*
 * verifyAuth(r) checks the authentication of one request the way S3 does.
 * r: { method, rawUrl, headers (lower-case name -> [values]), now (Date),
 *      accessKeyId, secretAccessKey, region (expected, or undefined) }
 * Returns { ok: true, presigned, payloadHash } or an s3err(...).  The body is
 * not looked at here: the caller checks it against payloadHash.
 */
async function verifyAuth(r) {
  const { rawPath, rawQuery } = splitUrl(r.rawUrl);
  const query = parseQuery(rawQuery);
  const h = r.headers;
  const hasHeaderAuth = h.authorization !== undefined;
  const hasQueryAuth = Object.prototype.hasOwnProperty.call(query, 'X-Amz-Algorithm');

  if (hasHeaderAuth && hasQueryAuth) {
    return s3err(400, 'InvalidArgument',
      'Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter, ' +
      'Signature query string parameter or the Authorization header should be specified');
  }
  if (!hasHeaderAuth && !hasQueryAuth) {
    if (query.Signature !== undefined || query.AWSAccessKeyId !== undefined) {
      return s3err(400, 'InvalidRequest',
        'The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.');
    }
    return s3err(403, 'AccessDenied', 'Anonymous access is denied: the request is not signed');
  }

  let credential, signedHeadersStr, signature, amzDate, presigned = false, expires;
  if (hasHeaderAuth) {
    const auth = header1(h, 'authorization');
    const sp = auth.indexOf(' ');
    const algorithm = sp < 0 ? auth : auth.slice(0, sp);
    if (algorithm !== 'AWS4-HMAC-SHA256') {
      if (algorithm === 'AWS') {
        return s3err(400, 'InvalidRequest',
          'The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256.');
      }
      return s3err(400, 'InvalidArgument', 'Unsupported Authorization Type',
        { ArgumentName: 'Authorization', ArgumentValue: auth });
    }
    const comps = {};
    for (const c of auth.slice(sp + 1).split(',')) {
      const t = c.trim();
      const eq = t.indexOf('=');
      if (eq > 0) comps[t.slice(0, eq)] = t.slice(eq + 1);
    }
    for (const name of ['Credential', 'SignedHeaders', 'Signature']) {
      if (comps[name] === undefined) {
        return s3err(400, 'AuthorizationHeaderMalformed',
          `The authorization header is malformed; missing ${name}.`);
      }
    }
    ({ Credential: credential, SignedHeaders: signedHeadersStr, Signature: signature } = comps);
    amzDate = header1(h, 'x-amz-date');
    if (amzDate === undefined) {
      return s3err(403, 'AccessDenied',
        'AWS authentication requires a valid Date or x-amz-date header (this proxy requires x-amz-date)');
    }
  } else {
    if (query['X-Amz-Algorithm'] !== 'AWS4-HMAC-SHA256') {
      return s3err(400, 'AuthorizationQueryParametersError',
        'X-Amz-Algorithm only supports "AWS4-HMAC-SHA256"');
    }
    for (const name of ['X-Amz-Credential', 'X-Amz-Date', 'X-Amz-Expires',
      'X-Amz-SignedHeaders', 'X-Amz-Signature']) {
      if (typeof query[name] !== 'string') {
        return s3err(400, 'AuthorizationQueryParametersError',
          `Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, ` +
          `X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters (${name} is missing or repeated).`);
      }
    }
    presigned = true;
    credential = query['X-Amz-Credential'];
    signedHeadersStr = query['X-Amz-SignedHeaders'];
    signature = query['X-Amz-Signature'];
    amzDate = query['X-Amz-Date'];
    if (!/^[0-9]+$/.test(query['X-Amz-Expires'])) {
      return s3err(400, 'AuthorizationQueryParametersError',
        'X-Amz-Expires should be a number');
    }
    expires = Number(query['X-Amz-Expires']);
    if (expires > MAX_PRESIGN_SECONDS) {
      return s3err(400, 'AuthorizationQueryParametersError',
        'X-Amz-Expires must be less than a week (in seconds) that is; 604800 seconds');
    }
  }

  /* credential scope: AK/yyyymmdd/region/s3/aws4_request */
  const scopeParts = credential.split('/');
  if (scopeParts.length !== 5 || scopeParts[4] !== 'aws4_request' ||
      !/^\d{8}$/.test(scopeParts[1])) {
    return s3err(400, presigned ? 'AuthorizationQueryParametersError' : 'AuthorizationHeaderMalformed',
      `The credential is malformed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request" (got "${credential}").`);
  }
  const [akid, scopeDate, scopeRegion, scopeService] = scopeParts;
  const service = r.service || 's3';
  let secretAccessKey = r.secretAccessKey;
  if (akid !== r.accessKeyId) {
    /* temporary credentials the fakes issued (tests/awsfakes.js): S3
     * takes them with their session token until they expire */
    const t = r.temporary && r.temporary.get(akid);
    if (!t) {
      return s3err(403, 'InvalidAccessKeyId',
        'The AWS Access Key Id you provided does not exist in our records.',
        { AWSAccessKeyId: akid });
    }
    const tok = hasHeaderAuth ? header1(h, 'x-amz-security-token') : query['X-Amz-Security-Token'];
    if (tok !== t.token) {
      return s3err(400, 'InvalidToken', 'The provided token is malformed or otherwise invalid.');
    }
    if (r.now.getTime() >= t.expiresMs) {
      return s3err(400, 'ExpiredToken', 'The provided token has expired.');
    }
    secretAccessKey = t.secret;
  }
  const temporaryKey = akid !== r.accessKeyId ? akid : undefined;
  if (scopeService !== service) {
    return s3err(400, 'AuthorizationHeaderMalformed',
      `The authorization header is malformed; incorrect service "${scopeService}". This endpoint belongs to "${service}".`);
  }
  if (r.region && scopeRegion !== r.region) {
    return s3err(400, 'AuthorizationHeaderMalformed',
      `The authorization header is malformed; the region '${scopeRegion}' is wrong; expecting '${r.region}'`,
      { Region: r.region });
  }
  const signingDate = amzDateToDate(amzDate);
  if (!signingDate) {
    return s3err(403, 'AccessDenied',
      `X-Amz-Date must be in the ISO8601 Long Format "yyyyMMdd'T'HHmmss'Z'" (got "${amzDate}")`);
  }
  if (amzDate.slice(0, 8) !== scopeDate) {
    return s3err(400, 'AuthorizationHeaderMalformed',
      `The authorization header is malformed; Invalid credential date "${scopeDate}". ` +
      `This date is not the same as X-Amz-Date: "${amzDate.slice(0, 8)}".`);
  }

  /* time */
  const now = r.now;
  if (presigned) {
    if (signingDate.getTime() - now.getTime() > MAX_SKEW_MS) {
      return s3err(403, 'AccessDenied', 'Request is not valid yet',
        { 'X-Amz-Date': amzDate, ServerTime: isoSeconds(now) });
    }
    const expiry = new Date(signingDate.getTime() + expires * 1000);
    if (now.getTime() > expiry.getTime()) {
      return s3err(403, 'AccessDenied', 'Request has expired',
        { 'X-Amz-Expires': String(expires), Expires: isoSeconds(expiry), ServerTime: isoSeconds(now) });
    }
  } else if (Math.abs(now.getTime() - signingDate.getTime()) > MAX_SKEW_MS) {
    return s3err(403, 'RequestTimeTooSkewed',
      'The difference between the request time and the current time is too large.',
      { RequestTime: amzDate, ServerTime: isoSeconds(now), MaxAllowedSkewMilliseconds: String(MAX_SKEW_MS) });
  }

  /* signed headers: canonical form, host included, every x-amz-* header
   * that the request carries included (S3 refuses unsigned x-amz-*, except
   * x-amz-content-sha256, whose value is in the canonical request anyway) */
  const signedList = signedHeadersStr.split(';');
  const sortedUnique = [...new Set(signedList)].sort();
  if (signedList.some(n => n === '' || n !== n.toLowerCase()) ||
      signedList.join(';') !== sortedUnique.join(';')) {
    return s3err(403, 'SignatureDoesNotMatch',
      `SignedHeaders "${signedHeadersStr}" is not a sorted, lower-case, duplicate-free list`);
  }
  if (!signedList.includes('host')) {
    return s3err(400, presigned ? 'AuthorizationQueryParametersError' : 'AuthorizationHeaderMalformed',
      'The host header must be signed');
  }
  const missing = signedList.filter(n => h[n] === undefined);
  if (missing.length) {
    return s3err(403, 'SignatureDoesNotMatch',
      `SignedHeaders names headers that the request does not carry: ${missing.join(', ')}`);
  }
  const unsignedAmz = Object.keys(h)
    .filter(n => n.startsWith('x-amz-') && n !== 'x-amz-content-sha256' && !signedList.includes(n))
    .sort();
  if (unsignedAmz.length) {
    return s3err(403, 'AccessDenied',
      'There were headers present in the request which were not signed',
      { HeadersNotSigned: unsignedAmz.join(', ') });
  }

  /* payload hash */
  let payloadHash = header1(h, 'x-amz-content-sha256');
  if (presigned) {
    if (payloadHash === undefined) payloadHash = 'UNSIGNED-PAYLOAD';
  } else if (payloadHash === undefined) {
    return s3err(400, 'InvalidRequest',
      'Missing required header for this request: x-amz-content-sha256');
  }
  if (payloadHash === 'UNSIGNED-PAYLOAD') {
    if (!presigned) {
      return s3err(400, 'InvalidRequest',
        'x-amz-content-sha256: UNSIGNED-PAYLOAD is accepted only on presigned URLs by this test proxy ' +
        '(outboxd must sign its payloads)');
    }
  } else if (payloadHash === 'STREAMING-UNSIGNED-PAYLOAD-TRAILER' && !presigned) {
    /* aws-chunked with a trailing checksum: the literal is the payload
     * hash in the canonical request; the caller decodes the body and
     * checks the trailer (decodeAwsChunked) */
  } else if (/^STREAMING-/.test(payloadHash)) {
    return s3err(400, 'InvalidRequest',
      `x-amz-content-sha256: ${payloadHash} is not supported by this test proxy ` +
      '(of the aws-chunked forms it takes STREAMING-UNSIGNED-PAYLOAD-TRAILER)');
  } else if (!/^[0-9a-f]{64}$/.test(payloadHash)) {
    return s3err(400, 'InvalidArgument',
      'x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, ' +
      'or a valid (lower-case hex) sha256 value.',
      { ArgumentName: 'x-amz-content-sha256', ArgumentValue: payloadHash });
  }

  /* the request as AWS canonicalises it, with only the signed headers */
  const signedHeaders = {};
  for (const n of signedList) signedHeaders[n] = h[n].join(',');
  const host = header1(h, 'host') || '';
  const request = new deps.HttpRequest({
    method: r.method,
    protocol: 'http:',
    hostname: host.replace(/:\d+$/, ''),
    path: canonicalPath(rawPath),
    query,
    headers: signedHeaders,
  });
  const signer = new deps.SignatureV4({
    credentials: { accessKeyId: akid, secretAccessKey },
    region: scopeRegion,
    service,
    sha256: deps.Sha256,
    uriEscapePath: false,
    applyChecksum: false,
  });

  const signedSet = new Set(signedList);
  const canonicalHeaders = deps.getCanonicalHeaders(request, new Set(), signedSet);
  const canonicalRequest = signer.createCanonicalRequest(request, canonicalHeaders, payloadHash);
  const scope = `${scopeDate}/${scopeRegion}/${service}/aws4_request`;
  const stringToSign = await signer.createStringToSign(amzDate, scope, canonicalRequest, 'AWS4-HMAC-SHA256');

  let expected;
  if (!presigned && !signedSet.has('date')) {
    /* The signer's own entry point: sign a request that carries exactly the
     * signed headers, at the client's x-amz-date. */
    const toSign = request;
    const unsignable = new Set();
    if (!signedSet.has('x-amz-content-sha256')) {
      /* the signer takes the payload hash from this header: present, unsigned */
      toSign.headers['x-amz-content-sha256'] = payloadHash;
      unsignable.add('x-amz-content-sha256');
    }
    const out = await signer.sign(toSign, {
      signingDate,
      signingRegion: scopeRegion,
      signingService: service,
      signableHeaders: signedSet,
      unsignableHeaders: unsignable,
    });
    const m = /SignedHeaders=([^,]*), Signature=([0-9a-f]{64})$/.exec(out.headers.authorization);
    if (!m || m[1] !== signedHeadersStr) {
      throw new Error(`signer signed "${m && m[1]}" instead of "${signedHeadersStr}"`);
    }
    expected = m[2];
  } else {
    /* A presigned URL, or a request that signs Date (which sign() always
     * regenerates): the same computation from the signer's own pieces. */
    expected = await signer.getSignature(amzDate, scope,
      signer.getSigningKey({ accessKeyId: akid, secretAccessKey },
        scopeRegion, scopeDate, service),
      canonicalRequest);
  }
  if (expected !== signature) {
    return s3err(403, 'SignatureDoesNotMatch',
      'The request signature we calculated does not match the signature you provided. ' +
      'Check your key and signing method.',
      {
        AWSAccessKeyId: akid,
        StringToSign: stringToSign,
        SignatureProvided: signature,
        CanonicalRequest: canonicalRequest,
      });
  }
  return { ok: true, presigned, payloadHash, temporaryKey };
}

/* ------------------------------------------------------------------ */
/* the proxy                                                           */

const FAULT_TYPES = new Set(['slowdown', 'error500', 'reset', 'stall', 'lost_reply',
  'bad_digest', 'access_denied', 'skewed', 'down', 'delay', 'corrupt']);
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection',
  'transfer-encoding', 'te', 'trailer', 'upgrade', 'expect', 'content-length']);

function parseArgs(argv) {
  const opts = {};
  const flags = new Set(['--self-test', '--presign']);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) { (opts._ = opts._ || []).push(a); continue; }
    const eq = a.indexOf('=');
    if (eq > 0) { opts[a.slice(2, eq)] = a.slice(eq + 1); continue; }
    if (flags.has(a) && (i + 1 >= argv.length || argv[i + 1].startsWith('--'))) {
      opts[a.slice(2)] = true; continue;
    }
    if (i + 1 >= argv.length) usage(`option ${a} needs a value`);
    opts[a.slice(2)] = argv[++i];
  }
  return opts;
}

function usage(msg) {
  process.stderr.write(`s3proxy: ${msg}\n` +
    'usage: s3proxy.js --listen HOST:PORT --upstream http://HOST:PORT --access-key AK ' +
    '--secret-key SK [--region R] [--data-dir DIR] [--port-file FILE] [--log FILE]\n' +
    '       s3proxy.js --self-test VECTORS.md\n' +
    '       s3proxy.js --presign URL --access-key AK --secret-key SK [--region R] ' +
    '[--expires S] [--method M]\n');
  process.exit(64);
}

class Proxy {
  constructor(o) {
    this.o = o;
    this.faults = [];
    this.nextFaultId = 1;
    this.stalled = new Set();
    this.receiving = new Map();	/* path -> body bytes received so far */
    this.sockets = new Set();
    this.kms = null; /* { match } while SSE-KMS is emulated */
    this.temporary = new Map(); /* access key -> { secret, token, expiresMs } */
    this.checksumOverride = new Map(); /* decoded path -> stored checksum */
    this.resetCounters();
    this.upAgent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
  }

  resetCounters() {
    this.requests = 0;
    this.byMethod = {};
    this.byPath = {};
    this.rejected = 0;
    this.faultsInjected = 0;
    this.puts = [];
    this.writes = [];
  }

  kmsFor(dpath) {
    return this.kms !== null && (this.kms.match === undefined || dpath.includes(this.kms.match));
  }

  log(msg) {
    process.stderr.write(`s3proxy: ${new Date().toISOString()} ${msg}\n`);
  }

  /* The first armed fault matching this request, consumed; or null.  With
   * conn=true (a new connection, nothing parsed yet) only an unfiltered
   * 'down' fault matches. */
  takeFault(method, dpath, dquery, conn) {
    const now = Date.now();
    this.faults = this.faults.filter(f =>
      (f.until === undefined || f.until > now) && (f.remaining === undefined || f.remaining > 0));
    for (const f of this.faults) {
      if (conn) {
        if (f.type !== 'down' || f.match !== undefined || f.method !== undefined || f.query !== undefined) continue;
      } else {
        if (f.method !== undefined && f.method.toUpperCase() !== method) continue;
        if (f.match !== undefined && !dpath.includes(f.match)) continue;
        if (f.query !== undefined && !dquery.includes(f.query)) continue;
      }
      if (f.remaining !== undefined) f.remaining--;
      this.faultsInjected++;
      return f;
    }
    return null;
  }

  armedList() {
    const now = Date.now();
    return this.faults
      .filter(f => (f.until === undefined || f.until > now) && (f.remaining === undefined || f.remaining > 0))
      .map(f => ({
        id: f.id, type: f.type, remaining: f.remaining === undefined ? null : f.remaining,
        seconds_left: f.until === undefined ? null : Math.max(0, (f.until - now) / 1000),
        match: f.match === undefined ? null : f.match, method: f.method === undefined ? null : f.method,
        query: f.query === undefined ? null : f.query, ms: f.ms === undefined ? null : f.ms,
      }));
  }

  sendError(req, res, status, code, message, extra, headers) {
    const rid = requestId();
    let xml = '<?xml version="1.0" encoding="UTF-8"?>\n<Error>' +
      `<Code>${xmlEscape(code)}</Code><Message>${xmlEscape(message)}</Message>`;
    for (const [k, v] of Object.entries(extra || {})) xml += `<${k}>${xmlEscape(v)}</${k}>`;
    xml += `<RequestId>${rid}</RequestId><HostId>${crypto.randomBytes(12).toString('base64')}</HostId></Error>`;
    const body = Buffer.from(xml, 'utf8');
    res.writeHead(status, {
      'Content-Type': 'application/xml',
      'Content-Length': body.length,
      'x-amz-request-id': rid,
      Server: 'AmazonS3',
      ...(headers || {}),
    });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  reject(req, res, info, dpath) {
    this.rejected++;
    const line = {
      time: new Date().toISOString(), method: req.method, path: dpath,
      reason: `${info.code}: ${info.message}`,
      status: info.status, code: info.code, url: req.url,
    };
    if (info.extra && info.extra.CanonicalRequest !== undefined) {
      line.canonical_request = info.extra.CanonicalRequest;
      line.string_to_sign = info.extra.StringToSign;
    }
    if (info.extra && info.extra.HeadersNotSigned !== undefined) line.headers_not_signed = info.extra.HeadersNotSigned;
    if (this.o.log) fs.appendFileSync(this.o.log, JSON.stringify(line) + '\n');
    this.log(`REJECTED ${req.method} ${req.url}: ${info.code}: ${info.message}`);
    this.sendError(req, res, info.status, info.code, info.message, info.extra);
  }

  async control(req, res, dpath) {
    const body = await new Promise((resolve, reject) => {
      const chunks = [];
      req.on('data', c => chunks.push(c));
      req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      req.on('error', reject);
    });
    const json = (status, obj) => {
      const b = Buffer.from(JSON.stringify(obj) + '\n');
      res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': b.length });
      res.end(b);
    };
    if (req.method === 'POST' && dpath === '/__proxy/fault') {
      let spec;
      try { spec = JSON.parse(body || '{}'); } catch (e) { return json(400, { error: `bad JSON: ${e.message}` }); }
      if (!FAULT_TYPES.has(spec.type)) {
        return json(400, { error: `unknown fault type ${JSON.stringify(spec.type)}; one of ${[...FAULT_TYPES].join(', ')}` });
      }
      const f = { id: this.nextFaultId++, type: spec.type };
      if (spec.seconds !== undefined) {
        if (!(Number(spec.seconds) > 0)) return json(400, { error: 'seconds must be > 0' });
        f.until = Date.now() + Number(spec.seconds) * 1000;
        if (spec.count !== undefined) f.remaining = Number(spec.count);
      } else {
        f.remaining = spec.count === undefined ? 1 : Number(spec.count);
        if (!(f.remaining >= 1)) return json(400, { error: 'count must be >= 1' });
      }
      for (const k of ['match', 'method', 'query']) {
        if (spec[k] !== undefined) f[k] = String(spec[k]);
      }
      if (f.type === 'delay') f.ms = spec.ms === undefined ? 1000 : Number(spec.ms);
      this.faults.push(f);
      this.log(`armed fault ${JSON.stringify(f)}`);
      return json(200, { ok: true, id: f.id });
    }
    if (req.method === 'POST' && dpath === '/__proxy/clear') {
      this.faults = [];
      this.checksumOverride.clear();
      return json(200, { ok: true });
    }
    if (req.method === 'POST' && dpath === '/__proxy/reset') {
      this.resetCounters();
      return json(200, { ok: true });
    }
    if (req.method === 'GET' && dpath === '/__proxy/puts') {
      return json(200, this.puts);
    }
    if (req.method === 'GET' && dpath === '/__proxy/writes') {
      return json(200, this.writes);
    }
    if (req.method === 'POST' && dpath === '/__proxy/creds') {
      let spec;
      try { spec = JSON.parse(body || '{}'); } catch (e) { return json(400, { error: `bad JSON: ${e.message}` }); }
      if (typeof spec.access_key !== 'string' || typeof spec.secret_key !== 'string' ||
          typeof spec.token !== 'string' || typeof spec.expires_ms !== 'number') {
        return json(400, { error: 'need access_key, secret_key, token (strings) and expires_ms (number)' });
      }
      this.temporary.set(spec.access_key, { secret: spec.secret_key, token: spec.token, expiresMs: spec.expires_ms });
      return json(200, { ok: true });
    }
    if (req.method === 'POST' && dpath === '/__proxy/kms') {
      let spec;
      try { spec = JSON.parse(body || '{}'); } catch (e) { return json(400, { error: `bad JSON: ${e.message}` }); }
      if (spec.on === false) {
        this.kms = null;
      } else {
        this.kms = spec.match === undefined ? {} : { match: String(spec.match) };
      }
      this.log(`SSE-KMS emulation ${this.kms ? JSON.stringify(this.kms) : 'off'}`);
      return json(200, { ok: true });
    }
    if (req.method === 'POST' && dpath === '/__proxy/checksum') {
      let spec;
      try { spec = JSON.parse(body || '{}'); } catch (e) { return json(400, { error: `bad JSON: ${e.message}` }); }
      if (typeof spec.path !== 'string') return json(400, { error: 'need path (the decoded /bucket/key)' });
      if (spec.clear) this.checksumOverride.delete(spec.path);
      else if (typeof spec.sha256 === 'string') this.checksumOverride.set(spec.path, spec.sha256);
      else return json(400, { error: 'need sha256 (base64, "-N" for composite) or clear' });
      return json(200, { ok: true });
    }
    if (req.method === 'GET' && dpath === '/__proxy/stats') {
      return json(200, {
        requests: this.requests, by_method: this.byMethod, by_path: this.byPath,
        rejected: this.rejected, faults_injected: this.faultsInjected, armed: this.armedList(),
        receiving: Object.fromEntries(this.receiving),
      });
    }
    return json(404, { error: `no control endpoint ${req.method} ${dpath}` });
  }

  async handle(req, res) {
    const { rawPath, rawQuery } = splitUrl(req.url);
    const dpath = pctDecode(rawPath).toString('utf8');
    if (dpath.startsWith('/__proxy/')) return this.control(req, res, dpath);

    const dquery = pctDecode(rawQuery).toString('utf8');
    this.requests++;
    this.byMethod[req.method] = (this.byMethod[req.method] || 0) + 1;
    this.byPath[dpath] = (this.byPath[dpath] || 0) + 1;

    const fault = this.takeFault(req.method, dpath, dquery, false);
    if (fault) this.log(`fault ${fault.type} on ${req.method} ${req.url}`);
    const sock = req.socket;

    if (fault && fault.type === 'down') {
      destroyHard(sock);
      return;
    }
    if (fault && fault.type === 'reset') {
      /* read part of the body, then drop the connection without a reply */
      const len = Number(req.headers['content-length'] || 0);
      const want = Math.min(Math.max(1, Math.floor(len / 2)), 256 * 1024);
      let got = 0;
      if (len === 0 && req.headers['transfer-encoding'] === undefined) { destroyHard(sock); return; }
      req.on('data', c => { got += c.length; if (got >= want) destroyHard(sock); });
      req.on('end', () => destroyHard(sock));
      return;
    }
    if (fault && fault.type === 'stall') {
      /* take the whole request, never answer, hold the socket */
      req.resume();
      this.stalled.add(sock);
      sock.on('close', () => this.stalled.delete(sock));
      return;
    }

    /* buffer the body, hashing as it comes */
    const started = new Date().toISOString();
    const sha = crypto.createHash('sha256');
    const md5 = crypto.createHash('md5');
    let chunks = [];
    let length = 0;
    let tooLarge = false;
    /* when body bytes came: the last read's size and its wait after the
     * one before (a streamed PUT paused at its trailer shows it), and the
     * bytes received so far by path (/__proxy/stats receiving) */
    let lastAt = Date.now(), lastGap = 0, lastLen = 0;
    await new Promise((resolve, reject) => {
      req.on('data', c => {
        const now = Date.now();
        lastGap = now - lastAt;
        lastAt = now;
        lastLen = c.length;
        length += c.length;
        this.receiving.set(dpath, length);
        if (length > MAX_BODY) { tooLarge = true; return; }
        sha.update(c);
        md5.update(c);
        chunks.push(c);
      });
      req.on('end', resolve);
      req.on('error', reject);
      req.on('aborted', () => reject(new Error('client aborted the request body')));
    }).finally(() => this.receiving.delete(dpath));
    if (tooLarge) {
      chunks.length = 0;
      return this.reject(req, res, s3err(400, 'EntityTooLarge',
        'Your proposed upload exceeds the maximum allowed object size.'), dpath);
    }
    let bodySha = sha.digest('hex');
    let bodyMd5 = md5.digest('base64');
    if (fault && fault.type === 'corrupt' && length > 0) {
      const b = Buffer.concat(chunks);
      b[b.length >> 1] ^= 0x20;
      chunks = [b];
      bodySha = crypto.createHash('sha256').update(b).digest('hex');
      bodyMd5 = crypto.createHash('md5').update(b).digest('base64');
    }
    let putEntry = null;
    if (req.method === 'PUT') {
      this.puts.push(putEntry = { time: new Date().toISOString(), started, path: dpath, query: dquery, length,
        sha256: bodySha, fault: fault ? fault.type : null, last_read: lastLen, last_wait_ms: lastGap,
        content_sha256: req.headers['x-amz-content-sha256'] || null,
        content_md5: req.headers['content-md5'] !== undefined,
        checksum_sha256: req.headers['x-amz-checksum-sha256'] || null });
    }
    if (req.method === 'PUT' || req.method === 'POST') {
      /* what a client asked of the stored object, and whether it signed it */
      const auth = String(req.headers.authorization || '');
      const m = /SignedHeaders=([^,\s]+)/.exec(auth);
      const storage = {};
      for (const k of STORAGE_HEADERS) {
        if (req.headers[k] !== undefined) storage[k] = req.headers[k];
      }
      this.writes.push({ time: new Date().toISOString(), method: req.method, path: dpath,
        query: dquery, length, headers: storage, signed: m ? m[1].split(';') : [] });
    }

    if (fault) {
      switch (fault.type) {
        case 'slowdown':
          return this.sendError(req, res, 503, 'SlowDown', 'Please reduce your request rate.');
        case 'error500':
          return this.sendError(req, res, 500, 'InternalError',
            'We encountered an internal error. Please try again.');
        case 'bad_digest':
          return this.sendError(req, res, 400, 'BadDigest',
            'The Content-MD5 you specified did not match what we received.',
            { ExpectedDigest: req.headers['content-md5'] || '', CalculatedDigest: bodyMd5 });
        case 'access_denied':
          return this.sendError(req, res, 403, 'AccessDenied', 'Access Denied');
        case 'skewed': {
          const server = new Date(Date.now() + 20 * 60 * 1000);
          return this.sendError(req, res, 403, 'RequestTimeTooSkewed',
            'The difference between the request time and the current time is too large.',
            {
              RequestTime: req.headers['x-amz-date'] || '',
              ServerTime: isoSeconds(server),
              MaxAllowedSkewMilliseconds: String(MAX_SKEW_MS),
            },
            { Date: server.toUTCString() });
        }
        default:
          break; /* lost_reply, delay: verified and forwarded below */
      }
    }

    /* verification */
    const headers = distinctHeaders(req.rawHeaders);
    const auth = await verifyAuth({
      method: req.method, rawUrl: req.url, headers, now: new Date(),
      accessKeyId: this.o['access-key'], secretAccessKey: this.o['secret-key'], region: this.o.region,
      temporary: this.temporary,
    });
    if (!auth.ok) return this.reject(req, res, auth, dpath);
    if (auth.temporaryKey) req.temporaryKey = auth.temporaryKey;
    let streamed = null;
    if (auth.payloadHash === 'STREAMING-UNSIGNED-PAYLOAD-TRAILER') {
      streamed = decodeAwsChunked(Buffer.concat(chunks), headers);
      if (putEntry) {
        putEntry.content_encoding = req.headers['content-encoding'] || null;
        putEntry.decoded_length = streamed.ok ? streamed.body.length : null;
        putEntry.trailer_checksum = streamed.ok ? streamed.checksum : null;
      }
      if (!streamed.ok) return this.reject(req, res, streamed, dpath);
      chunks = [streamed.body];
      length = streamed.body.length;
      bodySha = crypto.createHash('sha256').update(streamed.body).digest('hex');
      bodyMd5 = crypto.createHash('md5').update(streamed.body).digest('base64');
    }
    if (auth.payloadHash !== 'UNSIGNED-PAYLOAD' && !streamed && auth.payloadHash !== bodySha) {
      return this.reject(req, res, s3err(400, 'XAmzContentSHA256Mismatch',
        "The provided 'x-amz-content-sha256' header does not match what was computed.",
        { ClientComputedContentSHA256: auth.payloadHash, S3ComputedContentSHA256: bodySha }), dpath);
    }
    /* the checksum S3 keeps: checked against the body like S3 does */
    const cksum = header1(headers, 'x-amz-checksum-sha256');
    let storeChecksum = streamed ? streamed.checksum : null;
    if (cksum !== undefined) {
      if (!validChecksum(cksum)) {
        return this.reject(req, res, s3err(400, 'InvalidRequest',
          'Value for x-amz-checksum-sha256 header is invalid.'), dpath);
      }
      const bodyB64 = Buffer.from(bodySha, 'hex').toString('base64');
      if (cksum !== bodyB64) {
        return this.reject(req, res, s3err(400, 'BadDigest',
          'The SHA256 you specified did not match the calculated checksum.',
          { ExpectedChecksum: cksum, CalculatedChecksum: bodyB64 }), dpath);
      }
      storeChecksum = cksum;
    }
    const cmd5 = header1(headers, 'content-md5');
    if (cmd5 !== undefined) {
      const raw = /^[A-Za-z0-9+/]{22}==$/.test(cmd5) ? Buffer.from(cmd5, 'base64') : null;
      if (!raw || raw.length !== 16) {
        return this.reject(req, res, s3err(400, 'InvalidDigest',
          'The Content-MD5 you specified is not valid.', { 'Content-MD5': cmd5 }), dpath);
      }
      if (cmd5 !== bodyMd5) {
        return this.reject(req, res, s3err(400, 'BadDigest',
          'The Content-MD5 you specified did not match what we received.',
          { ExpectedDigest: cmd5, CalculatedDigest: bodyMd5 }), dpath);
      }
    } else if (req.method === 'PUT' && length > 0 && auth.payloadHash === 'UNSIGNED-PAYLOAD') {
      /* A body must be covered by a digest S3 checks: the signed
       * x-amz-content-sha256 (checked above) or Content-MD5. */
      return this.reject(req, res, s3err(400, 'InvalidRequest',
        'Missing required header for this request: Content-MD5 (this test proxy requires a digest ' +
        'of every PUT body: a signed x-amz-content-sha256 or Content-MD5)'),
      dpath);
    }

    const kms = this.kmsFor(dpath);
    let body = chunks, bodyLength = length;
    if (kms && req.method === 'POST' && /[?&]uploadId=/.test(req.url)) {
      /* CompleteMultipartUpload lists the ETags we gave out: map them back
       * to the ones s3rver (and the checks below) know */
      const text = kmsEtagsInXml(Buffer.concat(chunks).toString('utf8'));
      body = [Buffer.from(text, 'utf8')];
      bodyLength = body[0].length;
    }

    if (this.o['data-dir'] && /[?&]uploadId=/.test(req.url)) {
      const done = this.multipart(req, res, dpath, parseQuery(rawQuery), body, kms, storeChecksum);
      if (done) return;
    }

    /* what s3rver keeps for the checksum emulation (HIDDEN_*) */
    const extra = {};
    const pq = parseQuery(rawQuery);
    if (req.method === 'PUT' && pq.uploadId === undefined && storeChecksum) {
      extra[HIDDEN_CHECKSUM] = storeChecksum;
    }
    if (streamed) {
      /* s3rver gets the decoded body, as S3 stores it (aws-chunked is
       * not kept as the object's Content-Encoding) */
      for (const k of ['content-encoding', 'x-amz-decoded-content-length', 'x-amz-trailer']) extra[k] = null;
      extra['x-amz-content-sha256'] = bodySha;
    }
    if (req.method === 'POST' && pq.uploads !== undefined &&
        header1(headers, 'x-amz-checksum-algorithm') !== undefined) {
      const alg = header1(headers, 'x-amz-checksum-algorithm');
      if (alg !== 'SHA256') {
        return this.reject(req, res, s3err(400, 'InvalidRequest',
          `Checksum algorithm ${alg} is not emulated by this test proxy (SHA256 is)`), dpath);
      }
      extra[HIDDEN_ALGORITHM] = alg;
    }

    if (fault && fault.type === 'delay') await new Promise(r => setTimeout(r, fault.ms));
    await this.forward(req, res, body, bodyLength, fault && fault.type === 'lost_reply', kms,
      body !== chunks, extra);
  }

  /*
   * With --data-dir (s3rver's directory), the multipart checks and operations
   * s3rver 3.7.1 lacks, answered as S3 answers them: an unknown upload id is
   * 404 NoSuchUpload (s3rver says 500, or crashes on a Complete naming a
   * missing part), AbortMultipartUpload and ListParts are done here (s3rver
   * says 405), and CompleteMultipartUpload is refused, as S3 does, when a part
   * is missing, its ETag differs, the parts are out of order, or a part other
   * than the last is under 5 MiB.  Returns true when it answered.
   */
  multipart(req, res, dpath, query, chunks, kms, partChecksum) {
    const uploadId = query.uploadId;
    const m = /^\/([^/]+)\/(.+)$/.exec(dpath);
    if (typeof uploadId !== 'string' || !m) return false;
    const [, bucket, key] = m;
    const dir = path.join(this.o['data-dir'], bucket, '._S3rver_uploads', uploadId);
    let storedKey = null;
    if (/^[0-9A-Za-z]+$/.test(uploadId)) {
      try { storedKey = fs.readFileSync(path.join(dir, 'key'), 'utf8'); } catch (e) { storedKey = null; }
    }
    if (storedKey !== key) {
      this.sendError(req, res, 404, 'NoSuchUpload',
        'The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.',
        { UploadId: uploadId });
      return true;
    }
    const parts = () => fs.readdirSync(dir).filter(f => /^\d+$/.test(f)).map(Number).sort((a, b) => a - b)
      .map(n => {
        const st = fs.statSync(path.join(dir, String(n)));
        let md5 = null;
        try { md5 = fs.readFileSync(path.join(dir, `${n}.md5`), 'utf8').trim(); } catch (e) { md5 = null; }
        return { n, size: st.size, mtime: st.mtime, md5 };
      });
    if (req.method === 'DELETE') {
      fs.rmSync(dir, { recursive: true, force: true });
      res.writeHead(204, { 'x-amz-request-id': requestId(), Server: 'AmazonS3' });
      res.end();
      return true;
    }
    if (req.method === 'GET') {
      let xml = '<?xml version="1.0" encoding="UTF-8"?>\n' +
        '<ListPartsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">' +
        `<Bucket>${xmlEscape(bucket)}</Bucket><Key>${xmlEscape(key)}</Key><UploadId>${xmlEscape(uploadId)}</UploadId>` +
        '<PartNumberMarker>0</PartNumberMarker>';
      const ps = parts().filter(p => p.md5);
      xml += `<NextPartNumberMarker>${ps.length ? ps[ps.length - 1].n : 0}</NextPartNumberMarker>` +
        '<MaxParts>10000</MaxParts><IsTruncated>false</IsTruncated><StorageClass>STANDARD</StorageClass>';
      for (const p of ps) {
        xml += `<Part><PartNumber>${p.n}</PartNumber><LastModified>${p.mtime.toISOString()}</LastModified>` +
          `<ETag>${kms ? kmsEtag(`&quot;${p.md5}&quot;`) : `&quot;${p.md5}&quot;`}</ETag><Size>${p.size}</Size></Part>`;
      }
      xml += '</ListPartsResult>';
      const b = Buffer.from(xml);
      res.writeHead(200, { 'Content-Type': 'application/xml', 'Content-Length': b.length,
        'x-amz-request-id': requestId(), Server: 'AmazonS3', ...(kms ? KMS_HEADERS : {}) });
      res.end(b);
      return true;
    }
    if (req.method === 'PUT') {
      const pn = query.partNumber;
      if (typeof pn !== 'string' || !/^[0-9]+$/.test(pn) || +pn < 1 || +pn > 10000) {
        this.reject(req, res, s3err(400, 'InvalidArgument',
          'Part number must be an integer between 1 and 10000, inclusive',
          { ArgumentName: 'partNumber', ArgumentValue: String(pn) }), dpath);
        return true;
      }
      /* the part's verified checksum, for Complete's list and the
       * composite (s3rver keeps the part in this directory) */
      const f = path.join(dir, `${Number(pn)}.s3proxy-sha256`);
      if (partChecksum) fs.writeFileSync(f, partChecksum);
      else fs.rmSync(f, { force: true });
      return false;
    }
    if (req.method === 'POST') {
      const body = Buffer.concat(chunks).toString('utf8');
      const want = [];
      for (const pm of body.matchAll(/<Part>([\s\S]*?)<\/Part>/g)) {
        const num = /<PartNumber>\s*(\d+)\s*<\/PartNumber>/.exec(pm[1]);
        const et = /<ETag>([\s\S]*?)<\/ETag>/.exec(pm[1]);
        if (!num || !et) {
          this.reject(req, res, s3err(400, 'MalformedXML',
            'The XML you provided was not well-formed or did not validate against our published schema.'), dpath);
          return true;
        }
        const ck = /<ChecksumSHA256>([\s\S]*?)<\/ChecksumSHA256>/.exec(pm[1]);
        want.push({ n: Number(num[1]), etag: et[1].replace(/&quot;|&#34;|"/g, '').trim(),
          checksum: ck ? ck[1].trim() : null });
      }
      if (!/<CompleteMultipartUpload[\s>]/.test(body) || want.length === 0) {
        this.reject(req, res, s3err(400, 'MalformedXML',
          'The XML you provided was not well-formed or did not validate against our published schema.'), dpath);
        return true;
      }
      const have = new Map(parts().map(p => [p.n, p]));
      for (let i = 0; i < want.length; i++) {
        const w = want[i];
        if (i > 0 && w.n <= want[i - 1].n) {
          this.reject(req, res, s3err(400, 'InvalidPartOrder',
            'The list of parts was not in ascending order. Parts must be ordered by part number.',
            { UploadId: uploadId }), dpath);
          return true;
        }
        const p = have.get(w.n);
        if (!p || p.md5 !== w.etag) {
          this.reject(req, res, s3err(400, 'InvalidPart',
            "One or more of the specified parts could not be found.  The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.",
            { UploadId: uploadId, PartNumber: String(w.n), ETag: w.etag, StoredETag: p ? p.md5 || '' : '(no such part)' }), dpath);
          return true;
        }
        if (i < want.length - 1 && p.size < 5 * 1024 * 1024) {
          this.reject(req, res, s3err(400, 'EntityTooSmall',
            'Your proposed upload is smaller than the minimum allowed object size.',
            { ProposedSize: String(p.size), MinSizeAllowed: String(5 * 1024 * 1024), PartNumber: String(w.n), ETag: w.etag }),
          dpath);
          return true;
        }
      }
      /* an upload created with a checksum algorithm: S3 wants each part's
       * checksum in the list, as the part was sent, and keeps the
       * composite with the object */
      let meta = null;
      try { meta = JSON.parse(fs.readFileSync(path.join(dir, 'metadata'), 'utf8')); } catch (e) { meta = null; }
      if (meta && meta[HIDDEN_ALGORITHM] === 'SHA256') {
        const sums = [];
        for (const w of want) {
          let stored = null;
          try { stored = fs.readFileSync(path.join(dir, `${w.n}.s3proxy-sha256`), 'utf8'); } catch (e) { stored = null; }
          if (w.checksum === null) {
            this.reject(req, res, s3err(400, 'InvalidRequest',
              'The upload was created using a sha256 checksum. The complete request must include the ' +
              `checksum for each part. It was missing for part ${w.n} in the request.`), dpath);
            return true;
          }
          if (stored === null || stored !== w.checksum) {
            this.reject(req, res, s3err(400, 'InvalidPart',
              "One or more of the specified parts could not be found.  The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.",
              { UploadId: uploadId, PartNumber: String(w.n), ChecksumSHA256: w.checksum,
                StoredChecksumSHA256: stored || '(none)' }), dpath);
            return true;
          }
          sums.push(stored);
        }
        meta[HIDDEN_CHECKSUM] = compositeChecksum(sums);
        fs.writeFileSync(path.join(dir, 'metadata'), JSON.stringify(meta));
      }
      return false;
    }
    return false;
  }

  forward(req, res, chunks, length, loseReply, kms, rewritten, extra) {
    const headers = {};
    const caseOf = {};
    for (let i = 0; i + 1 < req.rawHeaders.length; i += 2) {
      const k = req.rawHeaders[i];
      const lk = k.toLowerCase();
      if (HOP_BY_HOP.has(lk)) continue;
      if (rewritten && lk === 'content-md5') continue; /* the body was rewritten */
      const name = caseOf[lk] || (caseOf[lk] = k);
      headers[name] = headers[name] === undefined ? req.rawHeaders[i + 1]
        : [].concat(headers[name], req.rawHeaders[i + 1]);
    }
    headers['Content-Length'] = String(length);
    for (const [k, v] of Object.entries(extra || {})) {
      for (const name of Object.keys(headers)) if (name.toLowerCase() === k) delete headers[name];
      if (v !== null) headers[k] = v;
    }
    /* checksum mode: the stored checksum goes back (checksumOverride: a
     * test's stand-in for an object whose stored checksum differs) */
    const checksumMode = (req.method === 'HEAD' || req.method === 'GET') &&
      String(req.headers['x-amz-checksum-mode'] || '').toUpperCase() === 'ENABLED';
    const override = this.checksumOverride.get(pctDecode(splitUrl(req.url).rawPath).toString('utf8'));
    /* s3rver knows only its own key: a request verified here with
     * temporary credentials goes on under that key (s3rver checks the key,
     * not the signature) */
    if (req.temporaryKey) {
      for (const name of Object.keys(headers)) {
        if (name.toLowerCase() === 'authorization') {
          headers[name] = String(headers[name]).replace(`Credential=${req.temporaryKey}/`,
            `Credential=${this.o['access-key']}/`);
        }
      }
    }
    if (rewritten) {
      const h = crypto.createHash('md5');
      for (const c of chunks) h.update(c);
      headers['Content-MD5'] = h.digest('base64');
    }
    /* under SSE-KMS emulation, bucket listings and Complete replies carry
     * ETags in their XML body: rewrite those (never an object's body) */
    const { rawPath } = splitUrl(req.url);
    const bucketLevel = /^\/[^/]+\/?$/.test(rawPath);
    const rewriteBody = kms && ((req.method === 'POST' && /[?&]uploadId=/.test(req.url)) ||
      (req.method === 'GET' && bucketLevel));
    const up = new URL(this.o.upstream);
    return new Promise(resolve => {
      const attempt = n => {
        const ureq = http.request({
          host: up.hostname, port: up.port || 80, method: req.method, path: req.url,
          headers, agent: this.upAgent,
        });
        let answered = false;
        ureq.on('response', ures => {
          answered = true;
          if (loseReply) {
            /* the object is stored; the client never hears of it */
            ures.resume();
            ures.on('end', () => { destroyHard(req.socket); resolve(); });
            return;
          }
          const rh = [];
          const ok = ures.statusCode < 300;
          for (let i = 0; i + 1 < ures.rawHeaders.length; i += 2) {
            const lk = ures.rawHeaders[i].toLowerCase();
            if (lk === 'connection' || lk === 'keep-alive' || lk === 'transfer-encoding') continue;
            if (kms && ok && lk.startsWith('x-amz-server-side-encryption')) continue;
            if (kms && ok && rewriteBody && lk === 'content-length') continue;
            if (lk === HIDDEN_ALGORITHM) continue;
            if (lk === HIDDEN_CHECKSUM) {
              const v = override !== undefined ? override : ures.rawHeaders[i + 1];
              if (checksumMode && ok) {
                rh.push('x-amz-checksum-sha256', v, 'x-amz-checksum-type', /-\d+$/.test(v) ? 'COMPOSITE' : 'FULL_OBJECT');
              }
              continue;
            }
            const v = kms && ok && lk === 'etag' ? kmsEtag(ures.rawHeaders[i + 1]) : ures.rawHeaders[i + 1];
            rh.push(ures.rawHeaders[i], v);
          }
          if (kms && ok) for (const [k, v] of Object.entries(KMS_HEADERS)) rh.push(k, v);
          if (kms && ok && rewriteBody) {
            const got = [];
            ures.on('data', c => got.push(c));
            ures.on('end', () => {
              const b = Buffer.from(kmsEtagsInXml(Buffer.concat(got).toString('utf8')), 'utf8');
              rh.push('Content-Length', String(b.length));
              res.writeHead(ures.statusCode, ures.statusMessage, rh);
              res.end(b);
              resolve();
            });
            ures.on('error', () => { destroyHard(req.socket); resolve(); });
            return;
          }
          res.writeHead(ures.statusCode, ures.statusMessage, rh);
          ures.pipe(res);
          ures.on('end', resolve);
          ures.on('error', () => { destroyHard(req.socket); resolve(); });
        });
        ureq.on('error', err => {
          if (answered) { destroyHard(req.socket); resolve(); return; }
          if (n === 1 && ureq.reusedSocket && (err.code === 'ECONNRESET' || err.code === 'EPIPE')) {
            return attempt(2); /* a stale keep-alive connection to s3rver */
          }
          this.log(`upstream error for ${req.method} ${req.url}: ${err.message}`);
          if (!res.headersSent) {
            this.sendError(req, res, 502, 'InternalError', `s3proxy: upstream s3rver failed: ${err.message}`);
          } else destroyHard(req.socket);
          resolve();
        });
        for (const c of chunks) ureq.write(c);
        ureq.end();
      };
      attempt(1);
    });
  }

  start() {
    const o = this.o;
    const server = http.createServer({ requestTimeout: 0, headersTimeout: 60000, keepAliveTimeout: 20000 });
    server.keepAliveTimeout = 20000;
    server.requestTimeout = 0;
    server.on('connection', sock => {
      this.sockets.add(sock);
      sock.on('close', () => this.sockets.delete(sock));
      sock.on('error', () => {});
      const f = this.takeFault(null, null, null, true);
      if (f) { this.log('fault down on a new connection'); destroyHard(sock); }
    });
    server.on('request', (req, res) => {
      req.on('error', () => {});
      res.on('error', () => {});
      this.handle(req, res).catch(err => {
        this.log(`error handling ${req.method} ${req.url}: ${err.stack || err}`);
        if (!res.headersSent && !req.socket.destroyed) {
          this.sendError(req, res, 500, 'InternalError', `s3proxy: ${err.message}`);
        } else destroyHard(req.socket);
      });
    });
    server.on('clientError', (err, sock) => {
      if (sock.writable) sock.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
      else sock.destroy();
    });
    const m = /^(.*):(\d+)$/.exec(o.listen);
    if (!m) usage('--listen must be HOST:PORT');
    const host = m[1].replace(/^\[|\]$/g, '');
    server.listen(Number(m[2]), host, () => {
      const port = server.address().port;
      if (o['port-file']) {
        const tmp = `${o['port-file']}.tmp${process.pid}`;
        fs.writeFileSync(tmp, `${port}\n`);
        fs.renameSync(tmp, o['port-file']);
      }
      this.log(`listening on ${host}:${port}, upstream ${o.upstream}`);
    });
    server.on('error', err => {
      this.log(`cannot listen on ${o.listen}: ${err.message}`);
      process.exit(1);
    });
    const stop = sig => {
      this.log(`${sig}: stopping`);
      server.close();
      for (const s of this.sockets) s.destroy();
      this.upAgent.destroy();
      setImmediate(() => process.exit(0));
    };
    process.on('SIGTERM', () => stop('SIGTERM'));
    process.on('SIGINT', () => stop('SIGINT'));
    process.on('SIGHUP', () => stop('SIGHUP'));
  }
}

function destroyHard(sock) {
  if (!sock || sock.destroyed) return;
  if (typeof sock.resetAndDestroy === 'function') sock.resetAndDestroy();
  else sock.destroy();
}

/* ------------------------------------------------------------------ */
/* --presign                                                           */

async function presignMain(o) {
  const u = new URL(o.presign);
  const { rawQuery } = splitUrl(u.pathname + u.search);
  const signer = new deps.SignatureV4({
    credentials: { accessKeyId: o['access-key'], secretAccessKey: o['secret-key'] },
    region: o.region || 'us-east-1', service: 's3', sha256: deps.Sha256,
    uriEscapePath: false, applyChecksum: false,
  });
  const req = new deps.HttpRequest({
    method: (o.method || 'GET').toUpperCase(), protocol: u.protocol, hostname: u.hostname,
    port: u.port ? Number(u.port) : undefined, path: canonicalPath(u.pathname),
    query: parseQuery(rawQuery),
    headers: { host: u.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' },
  });
  const out = await signer.presign(req, {
    expiresIn: Number(o.expires || 3600),
    unsignableHeaders: new Set(['x-amz-content-sha256']),
    unhoistableHeaders: new Set(['x-amz-content-sha256']),
  });
  const qs = Object.keys(out.query).sort().flatMap(k => [].concat(out.query[k]).map(v =>
    `${encodeRfc3986(k)}=${encodeRfc3986(v)}`)).join('&');
  process.stdout.write(`${u.protocol}//${u.host}${out.path}?${qs}\n`);
}

function encodeRfc3986(s) {
  return encodeURIComponent(s).replace(/[!'()*]/g, c => '%' + c.charCodeAt(0).toString(16).toUpperCase());
}

/* ------------------------------------------------------------------ */
/* --self-test: AWS's published vectors through the same verifier      */

async function selfTest(file) {
  const text = fs.readFileSync(file, 'utf8');
  const pick = (re, what) => {
    const m = re.exec(text);
    if (!m) throw new Error(`${file}: cannot find ${what}`);
    return m[1];
  };
  const ak = pick(/access key `([^`]+)`/, 'the access key');
  const sk = pick(/secret `([^`]+)`/, 'the secret');
  const time = pick(/time `(\d{8}T\d{6}Z)`/, 'the time');
  const region = pick(/region `([^`]+)`/, 'the region');
  const host = pick(/host `([^`]+)`/, 'the host');
  const sections = text.split(/^## /m).slice(1);
  const sig = n => {
    const s = sections.find(x => x.startsWith(`${n}.`));
    if (!s) throw new Error(`${file}: no section ${n}`);
    const m = /signature `([0-9a-f]{64})`/.exec(s);
    if (!m) throw new Error(`${file}: no signature in section ${n}`);
    return { sig: m[1], text: s };
  };
  const v1 = sig(1), v2 = sig(2), v3 = sig(3);
  const now = amzDateToDate(time);
  const scope = `${ak}/${time.slice(0, 8)}/${region}/s3/aws4_request`;
  const creds = { accessKeyId: ak, secretAccessKey: sk, region };
  const H = obj => {
    const h = {};
    for (const [k, v] of Object.entries(obj)) h[k.toLowerCase()] = [v];
    return h;
  };
  const authz = (signed, s) => `AWS4-HMAC-SHA256 Credential=${scope},SignedHeaders=${signed},Signature=${s}`;

  const v1headers = (s, extra) => H({
    Host: host, Range: 'bytes=0-9', 'x-amz-content-sha256': EMPTY_SHA256, 'x-amz-date': time,
    Authorization: authz('host;range;x-amz-content-sha256;x-amz-date', s), ...(extra || {}),
  });
  const v2body = 'Welcome to Amazon S3.';
  const v2sha = crypto.createHash('sha256').update(v2body).digest('hex');
  const v2headers = s => H({
    Host: host, Date: 'Fri, 24 May 2013 00:00:00 GMT', 'x-amz-date': time,
    'x-amz-storage-class': 'REDUCED_REDUNDANCY', 'x-amz-content-sha256': v2sha,
    Authorization: authz('date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class', s),
  });
  const v3query = pick(/canonical query string:\s*\n\s*`([^`]+)`/, 'the canonical query string of vector 3');
  const v3url = `/test.txt?${v3query}&X-Amz-Signature=${v3.sig}`;

  const cases = [];
  const expect = (name, r, code) => cases.push({ name, r, code });
  const base = { ...creds, now };

  expect('vector 1: GET with Range (header auth) verifies',
    { ...base, method: 'GET', rawUrl: '/test.txt', headers: v1headers(v1.sig) }, null);
  expect('vector 2: PUT signing Date, path /test$file.text sent unescaped, verifies',
    { ...base, method: 'PUT', rawUrl: '/test$file.text', headers: v2headers(v2.sig) }, null);
  expect('vector 2: same PUT with the path sent as /test%24file.text verifies',
    { ...base, method: 'PUT', rawUrl: '/test%24file.text', headers: v2headers(v2.sig) }, null);
  expect('vector 2: same PUT with the path sent as /test%24file%2Etext (over-escaped) verifies',
    { ...base, method: 'PUT', rawUrl: '/test%24file%2Etext', headers: v2headers(v2.sig) }, null);
  expect('vector 3: presigned GET verifies',
    { ...base, method: 'GET', rawUrl: v3url, headers: H({ Host: host }) }, null);
  expect('vector 3: presigned GET one second after expiry is refused',
    { ...base, now: new Date(now.getTime() + 86401000), method: 'GET', rawUrl: v3url, headers: H({ Host: host }) },
    'AccessDenied');
  expect('vector 3: presigned URL with one query byte changed is refused',
    { ...base, method: 'GET', rawUrl: v3url.replace('X-Amz-Expires=86400', 'X-Amz-Expires=86401'), headers: H({ Host: host }) },
    'SignatureDoesNotMatch');
  expect('vector 1: wrong signature is refused',
    { ...base, method: 'GET', rawUrl: '/test.txt', headers: v1headers(v1.sig.replace(/^./, c => (c === '0' ? '1' : '0'))) },
    'SignatureDoesNotMatch');
  expect('vector 1: wrong secret is refused',
    { ...base, secretAccessKey: sk + 'x', method: 'GET', rawUrl: '/test.txt', headers: v1headers(v1.sig) },
    'SignatureDoesNotMatch');
  expect('vector 1: another path is refused',
    { ...base, method: 'GET', rawUrl: '/test.txt2', headers: v1headers(v1.sig) }, 'SignatureDoesNotMatch');
  expect('vector 1: wrong access key is refused',
    { ...base, accessKeyId: 'AKIDOTHER', method: 'GET', rawUrl: '/test.txt', headers: v1headers(v1.sig) },
    'InvalidAccessKeyId');
  expect('vector 1: 16 minutes later is RequestTimeTooSkewed',
    { ...base, now: new Date(now.getTime() + 16 * 60000), method: 'GET', rawUrl: '/test.txt', headers: v1headers(v1.sig) },
    'RequestTimeTooSkewed');
  expect('vector 1: 14 minutes earlier is accepted',
    { ...base, now: new Date(now.getTime() - 14 * 60000), method: 'GET', rawUrl: '/test.txt', headers: v1headers(v1.sig) },
    null);
  expect('vector 1: another region expected is refused',
    { ...base, region: 'eu-west-1', method: 'GET', rawUrl: '/test.txt', headers: v1headers(v1.sig) },
    'AuthorizationHeaderMalformed');
  expect('vector 1: an unsigned x-amz-meta header is refused',
    { ...base, method: 'GET', rawUrl: '/test.txt', headers: v1headers(v1.sig, { 'x-amz-meta-a': 'b' }) },
    'AccessDenied');
  expect('vector 1: an unsigned x-amz-security-token is refused',
    { ...base, method: 'GET', rawUrl: '/test.txt', headers: v1headers(v1.sig, { 'x-amz-security-token': 't' }) },
    'AccessDenied');
  expect('header auth with UNSIGNED-PAYLOAD is refused',
    { ...base, method: 'GET', rawUrl: '/test.txt', headers: v1headers(v1.sig, { 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' }) },
    'InvalidRequest');

  /* Independent of the library: SigV4 from its definition with node's
   * crypto, for a request that leaves x-amz-content-sha256 unsigned (AWS
   * accepts that).  The canonical request is vector 1's minus that header. */
  const hmac = (k, d) => crypto.createHmac('sha256', k).update(d).digest();
  const cr = ['GET', '/test.txt', '', `host:${host}`, 'range:bytes=0-9', `x-amz-date:${time}`, '',
    'host;range;x-amz-date', EMPTY_SHA256].join('\n');
  const sts = ['AWS4-HMAC-SHA256', time, `${time.slice(0, 8)}/${region}/s3/aws4_request`,
    crypto.createHash('sha256').update(cr).digest('hex')].join('\n');
  let kk = hmac(`AWS4${sk}`, time.slice(0, 8));
  for (const x of [region, 's3', 'aws4_request']) kk = hmac(kk, x);
  const indep = crypto.createHmac('sha256', kk).update(sts).digest('hex');
  const unsignedShaHeaders = H({
    Host: host, Range: 'bytes=0-9', 'x-amz-content-sha256': EMPTY_SHA256, 'x-amz-date': time,
    Authorization: authz('host;range;x-amz-date', indep),
  });
  expect('x-amz-content-sha256 left unsigned (AWS accepts it) verifies',
    { ...base, method: 'GET', rawUrl: '/test.txt', headers: unsignedShaHeaders }, null);

  let failed = 0, n = 0;
  const report = (ok, name, diag) => {
    n++;
    if (!ok) failed++;
    process.stdout.write(`${ok ? 'ok' : 'not ok'} ${n} - ${name}\n`);
    if (!ok && diag) process.stdout.write(diag.split('\n').map(l => `# ${l}`).join('\n') + '\n');
  };
  for (const c of cases) {
    let got;
    try { got = await verifyAuth(c.r); } catch (e) { got = { ok: false, code: `exception ${e.message}` }; }
    const code = got.ok ? null : got.code;
    report(code === c.code, c.name,
      `expected ${c.code || 'acceptance'}, got ${code || 'acceptance'}` +
      (got.message ? `: ${got.message}` : '') +
      (got.extra && got.extra.CanonicalRequest ? `\ncanonical request:\n${got.extra.CanonicalRequest}` : ''));
  }

  /* the library's own entry points reproduce the vectors too */
  const signer = new deps.SignatureV4({
    credentials: { accessKeyId: ak, secretAccessKey: sk }, region, service: 's3',
    sha256: deps.Sha256, uriEscapePath: false, applyChecksum: false,
  });
  const s1 = await signer.sign(new deps.HttpRequest({
    method: 'GET', protocol: 'https:', hostname: host, path: '/test.txt',
    headers: { host, range: 'bytes=0-9', 'x-amz-content-sha256': EMPTY_SHA256 },
  }), { signingDate: now });
  report(s1.headers.authorization.endsWith(`Signature=${v1.sig}`),
    'SignatureV4.sign() reproduces vector 1', s1.headers.authorization);
  const p3 = await signer.presign(new deps.HttpRequest({
    method: 'GET', protocol: 'https:', hostname: host, path: '/test.txt',
    headers: { host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' },
  }), {
    signingDate: now, expiresIn: 86400,
    unsignableHeaders: new Set(['x-amz-content-sha256']),
    unhoistableHeaders: new Set(['x-amz-content-sha256']),
  });
  report(p3.query['X-Amz-Signature'] === v3.sig, 'SignatureV4.presign() reproduces vector 3',
    JSON.stringify(p3.query));
  report(canonicalPath('/jobs/a b+c$é%2f~x') === '/jobs/a%20b%2Bc%24%C3%A9/~x',
    'canonical URI: decode, then escape every byte but A-Za-z0-9-._~ and /',
    canonicalPath('/jobs/a b+c$é%2f~x'));
  process.stdout.write(`1..${n}\n`);
  return failed === 0 ? 0 : 1;
}

/* ------------------------------------------------------------------ */

async function main() {
  const o = parseArgs(process.argv.slice(2));
  if (o['self-test'] !== undefined) {
    const file = o['self-test'] === true ? (o._ || [])[0] : o['self-test'];
    if (!file) usage('--self-test needs the vectors file');
    process.exit(await selfTest(file));
  }
  if (o.presign !== undefined) {
    if (o.presign === true) o.presign = (o._ || [])[0];
    if (!o.presign || !o['access-key'] || !o['secret-key']) usage('--presign needs URL, --access-key, --secret-key');
    await presignMain(o);
    return;
  }
  for (const k of ['listen', 'upstream', 'access-key', 'secret-key']) {
    if (!o[k]) usage(`--${k} is required`);
  }
  new Proxy(o).start();
}

module.exports = { verifyAuth, deps };
if (require.main === module) {
  main().catch(err => {
    process.stderr.write(`s3proxy: ${err.stack || err}\n`);
    process.exit(1);
  });
}
