// MCP tool-call round trip: the official SDK client calling server-everything's
// `echo` directly over stdio, against the same client calling it through
// Alou's /mcp (Streamable HTTP) with Alou holding one stdio connection to the
// same server — in one run. Driven by `scripts/bench mcp`; runs on its own too:
//
//   node scripts/bench.d/mcp_bench.mjs --alou build/release/alou [--seconds 5]
//        [--calls 2000] [--concurrency 32] [--threads 1] [--port 18091]
//
// Per path: sequential calls (one in flight: latency p50/p90/p99), then
// `concurrency` calls kept in flight for `seconds` (throughput). Every answer
// is checked ("Echo: <message>"); any failure voids the row. Uses the
// packages of tests/e2e/node_modules (`npm ci` there). Starts and stops
// everything it needs; prints a markdown section for docs/benchmarks.md.

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const NM = path.join(ROOT, 'tests/e2e/node_modules');
const sdk = (p) => import(pathToFileURL(path.join(NM, '@modelcontextprotocol/sdk/dist/esm', p)).href);
const { Client } = await sdk('client/index.js');
const { StdioClientTransport } = await sdk('client/stdio.js');
const { StreamableHTTPClientTransport } = await sdk('client/streamableHttp.js');
const EVERYTHING = path.join(NM, '.bin/mcp-server-everything');

function arg(name, def) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}
const ALOU = path.resolve(ROOT, arg('alou', 'build/release/alou'));
const SECONDS = Number(arg('seconds', '5'));
const CALLS = Number(arg('calls', '2000'));
const CONC = Number(arg('concurrency', '32'));
const THREADS = Number(arg('threads', '1'));
const PORT = Number(arg('port', '18091'));

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function pct(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function echo(client, i) {
  const message = `m${i}`;
  const r = await client.callTool({ name: client.benchTool, arguments: { message } });
  if (r.isError || r.content?.[0]?.text !== `Echo: ${message}`) {
    throw new Error(`unexpected answer: ${JSON.stringify(r).slice(0, 200)}`);
  }
}

// Sequential latency, then throughput with CONC calls in flight.
async function measure(client) {
  for (let i = 0; i < 200; ++i) await echo(client, i); // warm-up (JIT, connections)
  const lat = [];
  for (let i = 0; i < CALLS; ++i) {
    const t0 = process.hrtime.bigint();
    await echo(client, i);
    lat.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  lat.sort((a, b) => a - b);
  let done = 0;
  const deadline = Date.now() + SECONDS * 1000;
  const t0 = process.hrtime.bigint();
  const cpu0 = process.cpuUsage();
  const worker = async (w) => {
    for (let i = 0; Date.now() < deadline; ++i) {
      await echo(client, w * 1e6 + i);
      ++done;
    }
  };
  await Promise.all(Array.from({ length: CONC }, (_, w) => worker(w)));
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  return {
    p50: pct(lat, 50),
    p90: pct(lat, 90),
    p99: pct(lat, 99),
    rps: done / secs,
    clientCpu: (cpu.user + cpu.system) / 1e6 / secs, // CPUs the bench client itself used
  };
}

function cpuSeconds(pid) {
  // utime + stime of a process, from /proc (clock ticks of 1/100 s on Linux).
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return NaN;
  }
}

async function direct() {
  const transport = new StdioClientTransport({ command: EVERYTHING, args: ['stdio'], stderr: 'ignore' });
  const client = new Client({ name: 'alou-bench', version: '1.0.0' });
  await client.connect(transport);
  client.benchTool = 'echo';
  try {
    return await measure(client);
  } finally {
    await client.close();
  }
}

async function throughAlou() {
  const dir = await mkdtemp(path.join(tmpdir(), 'alou-mcp-bench-'));
  const adminKey = `sk-alou-bench-${randomBytes(24).toString('hex')}`;
  const cfg = path.join(dir, 'alou.toml');
  await writeFile(
    cfg,
    `[server]
listen = "127.0.0.1:${PORT}"
threads = ${THREADS}

[storage]
data_dir = ${JSON.stringify(path.join(dir, 'data'))}

[log]
level = "warn"
access_log = false

[[mcp_servers]]
name = "everything"
transport = "stdio"
command = [${JSON.stringify(EVERYTHING)}, "stdio"]
`,
    { mode: 0o600 },
  );
  const env = { PATH: process.env.PATH, HOME: process.env.HOME ?? dir, ALOU_ADMIN_KEY: adminKey };
  const serve = spawn(ALOU, ['serve', '--config', cfg], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  serve.stderr.on('data', (d) => (log = (log + d).slice(-4000)));
  const exited = new Promise((r) => serve.on('exit', (code, sig) => r({ code, sig })));
  const url = `http://127.0.0.1:${PORT}`;
  const auth = { Authorization: `Bearer ${adminKey}` };
  try {
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (serve.exitCode !== null) throw new Error(`alou exited: ${log}`);
      try {
        const r = await fetch(`${url}/api/mcp/servers`, { headers: auth });
        const b = await r.json();
        if (b.servers?.[0]?.state === 'ready') break;
      } catch {}
      if (Date.now() > deadline) throw new Error(`alou or server-everything not ready in 30 s: ${log}`);
      await sleep(100);
    }
    const transport = new StreamableHTTPClientTransport(new URL(`${url}/mcp`), { requestInit: { headers: auth } });
    const client = new Client({ name: 'alou-bench', version: '1.0.0' });
    await client.connect(transport);
    client.benchTool = 'everything__echo';
    const cpu0 = cpuSeconds(serve.pid);
    const t0 = Date.now();
    try {
      const m = await measure(client);
      m.alouCpu = (cpuSeconds(serve.pid) - cpu0) / ((Date.now() - t0) / 1000);
      return m;
    } finally {
      await client.close();
    }
  } finally {
    serve.kill('SIGTERM');
    const killer = setTimeout(() => serve.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(killer);
    await rm(dir, { recursive: true, force: true });
  }
}

const ms = (x) => (Number.isFinite(x) ? `${x.toFixed(3)} ms` : 'n/a');
const rows = [];
let d, a;
try {
  d = await direct();
  rows.push(['direct (SDK → stdio)', d]);
} catch (e) {
  console.error(`mcp bench: direct failed: ${e.message}`);
}
try {
  a = await throughAlou();
  rows.push(['alou (SDK → /mcp → stdio)', a]);
} catch (e) {
  console.error(`mcp bench: through alou failed: ${e.message}`);
}
let commit = 'none';
try {
  commit = (await import('node:child_process')).execSync('git rev-parse --short HEAD', { cwd: ROOT }).toString().trim();
} catch {}
const cores = (await import('node:os')).cpus().length;
console.log(
  `\n### MCP echo ${new Date().toISOString().slice(0, 10)} — commit ${commit}, ${cores} cores, ` +
    `alou threads=${THREADS}, ${CALLS} sequential calls, ${CONC} in flight for ${SECONDS}s\n`,
);
console.log('| path | p50 c1 | p90 c1 | p99 c1 | calls/s (c' + CONC + ') | client CPU | alou CPU |');
console.log('|---|---:|---:|---:|---:|---:|---:|');
for (const [name, m] of rows) {
  console.log(
    `| ${name} | ${ms(m.p50)} | ${ms(m.p90)} | ${ms(m.p99)} | ${Math.round(m.rps)} | ${m.clientCpu.toFixed(2)} | ` +
      `${m.alouCpu !== undefined ? m.alouCpu.toFixed(2) : ''} |`,
  );
}
console.log();
if (d && a) {
  const added = a.p50 - d.p50;
  console.log(`- alou − direct p50 at c1: ${(added * 1000).toFixed(0)} µs (target ≤ 1000 µs): ${added <= 1 ? 'met' : 'NOT met'}`);
  console.log(`- alou echo calls/s at c${CONC}: ${Math.round(a.rps)} (target ≥ 1000): ${a.rps >= 1000 ? 'met' : 'NOT met'}`);
  console.log(`- alou / direct throughput: ${(a.rps / d.rps).toFixed(2)}`);
}
process.exit(d && a ? 0 : 1);
