#!/usr/bin/env node
/*
 * delay.js - a TCP proxy on loopback that adds latency, for bench/run.sh's
 * W7 (production-like S3: HTTPS with real round trips).
 *
 *   node delay.js --listen PORT --upstream PORT --rtt-ms MS --log FILE
 *
 * Every byte is held MS/2 milliseconds in each direction, so every
 * request-reply exchange (and each round trip of a TCP or TLS handshake)
 * costs MS more, as on a network with that round-trip time. The bytes pass
 * through untouched (TLS is terminated behind it, by nginx). At most
 * WINDOW bytes are held per direction per connection, as a TCP window
 * would: a single connection then moves at most WINDOW per round trip.
 * One line per accepted connection goes to --log ("conn N"): each is one
 * TLS handshake, which is what W7 counts.
 */
'use strict';

const fs = require('fs');
const net = require('net');

const WINDOW = 4 * 1024 * 1024;

function args(argv) {
  const o = {};
  for (let i = 0; i < argv.length; i += 2) o[argv[i].replace(/^--/, '')] = argv[i + 1];
  for (const k of ['listen', 'upstream', 'rtt-ms', 'log']) {
    if (o[k] === undefined) {
      process.stderr.write(`delay.js: --${k} is required\n`);
      process.exit(64);
    }
  }
  return o;
}

/* Forwards src to dst, each chunk delay ms late, at most WINDOW held. */
function pipeDelayed(src, dst, delay) {
  const q = [];
  let held = 0, timer = null, ended = false;
  const pump = () => {
    timer = null;
    const now = Date.now();
    while (q.length > 0 && q[0].at <= now) {
      const c = q.shift();
      held -= c.buf.length;
      dst.write(c.buf);
    }
    if (held < WINDOW && src.isPaused()) src.resume();
    if (q.length > 0) timer = setTimeout(pump, q[0].at - now);
    else if (ended) dst.end();
  };
  src.on('data', buf => {
    q.push({ at: Date.now() + delay, buf });
    held += buf.length;
    if (held >= WINDOW) src.pause();
    if (timer === null) timer = setTimeout(pump, delay);
  });
  src.on('end', () => {
    ended = true;
    if (q.length === 0 && timer === null) dst.end();
  });
}

function main() {
  const o = args(process.argv.slice(2));
  const oneWay = Number(o['rtt-ms']) / 2;
  const log = fs.openSync(o.log, 'a');
  let n = 0;
  const server = net.createServer({ noDelay: true }, client => {
    const up = net.connect({ port: Number(o.upstream), host: '127.0.0.1', noDelay: true });
    fs.writeSync(log, `conn ${++n}\n`);
    const close = () => { client.destroy(); up.destroy(); };
    client.on('error', close);
    up.on('error', close);
    client.on('close', () => up.end());
    up.on('close', () => client.end());
    /* The client's SYN/ACK round trip: the connection is usable one
     * round trip after it was opened. */
    client.pause();
    setTimeout(() => {
      pipeDelayed(client, up, oneWay);
      pipeDelayed(up, client, oneWay);
      client.resume();
    }, 2 * oneWay);
  });
  server.listen(Number(o.listen), '127.0.0.1');
  process.on('SIGTERM', () => process.exit(0));
}

main();
