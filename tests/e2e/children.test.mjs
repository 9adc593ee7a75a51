// The processes `alou serve` starts never outlive it and hold none of its
// descriptors (issue 25): a stdio MCP server started through npx (npm exec →
// sh → node: grandchildren) and command tools in flight. kill -9 of Alou
// ends every one of them within a second and the port is free for a restart
// at once; SIGTERM ends a command that would sleep on.

import assert from 'node:assert/strict';
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { REPO_ROOT, startGateway } from './lib/alou.mjs';

const E2E_DIR = path.join(REPO_ROOT, 'tests/e2e');

// ---- /proc ----

/** {pid, ppid, state, comm} of every process, or of `pid` alone. */
function processes() {
  const out = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const close = stat.lastIndexOf(')');
      const [state, ppid] = stat.slice(close + 2).split(' ');
      out.push({ pid: Number(name), ppid: Number(ppid), state, comm: stat.slice(stat.indexOf('(') + 1, close) });
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Every live descendant of `root` (children, grandchildren, …). */
function descendants(root) {
  const all = processes().filter((p) => p.state !== 'Z');
  const found = [];
  let frontier = [root];
  while (frontier.length > 0) {
    const next = all.filter((p) => frontier.includes(p.ppid));
    found.push(...next);
    frontier = next.map((p) => p.pid);
  }
  return found;
}

function alive(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function cmdline(pid) {
  try {
    const text = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean).join(' ');
    return text.replace(/\s+/g, ' ').slice(0, 100);
  } catch {
    return '?';
  }
}

/** fd number → readlink target ("socket:[123]", "pipe:[456]", "/path"). */
function descriptors(pid) {
  const out = new Map();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      out.set(Number(fd), readlinkSync(`/proc/${pid}/fd/${fd}`));
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/** The inode of the socket listening on 127.0.0.1:port (/proc/net/tcp). */
function listeningInode(port) {
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length > 9 && f[1].endsWith(`:${hexPort}`) && f[3] === '0A') return f[9];
  }
  return null;
}

async function waitFor(what, probe, ms = 60_000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const v = await probe();
    if (v) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: not within ${ms} ms`);
}

// ---- the gateway ----

function admin(g, method, pathname, body) {
  return fetch(`${g.url}${pathname}`, {
    method,
    headers: { Authorization: `Bearer ${g.adminKey}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

async function registerTool(g, name, command) {
  const res = await admin(g, 'POST', '/api/tools', {
    kind: 'command',
    name,
    risk: 'read_only',
    command,
    timeout_ms: 120_000,
  });
  assert.equal(res.status, 201, await res.text());
}

/** Calls the tool without waiting for it; the promise never rejects. */
function callInBackground(g, name) {
  return admin(g, 'POST', `/api/tools/${name}/call`, { arguments: {} })
    .then(async (res) => ({ status: res.status, body: await res.text() }))
    .catch((e) => ({ status: 0, body: String(e) }));
}

async function serverReady(g, name) {
  const res = await admin(g, 'GET', '/api/mcp/servers');
  const { servers } = await res.json();
  return servers.some((s) => s.name === name && s.state === 'ready');
}

const everything = `
[[mcp_servers]]
name = "everything"
transport = "stdio"
command = ["npx", "-y", "@modelcontextprotocol/server-everything"]
cwd = ${JSON.stringify(E2E_DIR)}
env = ["HOME", "npm_config_offline"]
`;

describe('children of alou serve', () => {
  let g;

  before(async () => {
    // npx resolves the package from tests/e2e/node_modules, never the network.
    g = await startGateway({ extraToml: everything, extraEnv: { npm_config_offline: 'true' } });
  });

  after(async () => {
    if (g) await g.stop();
  });

  test('hold none of its descriptors, die with it on kill -9, and leave the port free', async (t) => {
    await waitFor('server-everything ready', () => serverReady(g, 'everything'));
    // A command tool in flight whose grandchild (the backgrounded sleep) is
    // in its process group.
    await registerTool(g, 'nap_tree', ['sh', '-c', 'sleep 300 & wait']);
    const call = callInBackground(g, 'nap_tree');
    const alouPid = g.serve.proc.pid;
    await waitFor('the tool run', () => descendants(alouPid).some((p) => p.comm === 'sleep'), 10_000);

    const tree = descendants(alouPid);
    const described = tree.map((p) => `${p.pid} (ppid ${p.ppid}) ${cmdline(p.pid)}`).join('\n');
    t.diagnostic(`descendants of alou (pid ${alouPid}):\n${described}`);
    // npx's own children (sh, node), the tool's sh and sleep, the guard.
    assert.ok(tree.some((p) => p.comm === 'node' && p.ppid !== alouPid), `no node grandchild:\n${described}`);
    assert.ok(tree.some((p) => cmdline(p.pid).startsWith('alou-child-guard')), `no child guard:\n${described}`);

    const mine = descriptors(alouPid);
    const listening = listeningInode(g.port);
    assert.ok(listening, 'no listening socket found in /proc/net/tcp');
    assert.ok([...mine.values()].includes(`socket:[${listening}]`), 'alou does not hold its listening socket?');
    // Alou's sockets and files (not the pipes a child shares with it, nor
    // /dev/null or anon_inode:[eventpoll], which name a kind, not one file).
    const shared = new Set([...mine.values()].filter((v) => v.startsWith('socket:') || /^\/(?!dev\/)/.test(v)));
    t.diagnostic(`alou's sockets and files: ${[...shared].join(', ')}`);
    for (const p of tree) {
      const fds = descriptors(p.pid);
      const listed = [...fds].map(([fd, v]) => `${fd} -> ${v}`).join(', ');
      t.diagnostic(`${p.pid} ${p.comm}: ${listed}`);
      for (const [fd, v] of fds) {
        assert.ok(!shared.has(v), `${p.pid} (${cmdline(p.pid)}) holds alou's ${v} as fd ${fd}`);
        assert.ok(!v.startsWith(g.dir), `${p.pid} (${cmdline(p.pid)}) holds ${v} as fd ${fd}`);
      }
      if (p.ppid === alouPid && !cmdline(p.pid).startsWith('alou-child-guard')) {
        for (const fd of [0, 1, 2]) assert.match(fds.get(fd) ?? '', /^pipe:/, `${p.pid} fd ${fd}: ${listed}`);
      }
      if (p.comm === 'sleep') {
        assert.deepEqual([...fds.keys()].sort(), [0, 1, 2], `the sleep holds more than its pipes: ${listed}`);
      }
    }

    const t0 = Date.now();
    await g.crash();
    await waitFor('every child gone', () => tree.every((p) => !alive(p.pid)), 1000).catch(() => {
      const left = tree.filter((p) => alive(p.pid)).map((p) => `${p.pid} ${cmdline(p.pid)}`);
      assert.fail(`still running 1 s after kill -9:\n${left.join('\n')}`);
    });
    t.diagnostic(`every child gone ${Date.now() - t0} ms after kill -9`);
    await call;

    // At once on the same port.
    const t1 = Date.now();
    await g.restart();
    t.diagnostic(`listening again ${Date.now() - t1} ms after the restart began`);
    const health = await fetch(`${g.url}/api/health`);
    assert.equal(health.status, 200);
  });
});

describe('a command tool that sleeps', () => {
  let g;

  before(async () => {
    g = await startGateway({ extraEnv: { ALOU_SERVER_SHUTDOWN_TIMEOUT_MS: '1000' } });
  });

  after(async () => {
    if (g) await g.stop();
  });

  test('is ended by a clean shutdown (SIGTERM)', async (t) => {
    await registerTool(g, 'nap', ['sleep', '300']);
    const call = callInBackground(g, 'nap');
    const alouPid = g.serve.proc.pid;
    const sleeper = await waitFor(
      'the sleep',
      () => descendants(alouPid).find((p) => p.comm === 'sleep'),
      10_000,
    );
    const t0 = Date.now();
    const exit = await g.serve.stop();
    const exitedAfter = Date.now() - t0;
    assert.deepEqual(exit, { code: 0, signal: null }, g.serve.describe());
    assert.equal(alive(sleeper.pid), false, `the sleep (pid ${sleeper.pid}) outlived alou`);
    t.diagnostic(`alou exited ${exitedAfter} ms after SIGTERM; the sleep was gone by then`);
    // The server's grace (1 s), then at most the 2 s SIGTERM → SIGKILL grace.
    assert.ok(exitedAfter < 5000, `shutdown took ${exitedAfter} ms`);
    await call;
  });
});
