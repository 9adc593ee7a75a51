// The official MCP TypeScript SDK client against Alou's /mcp endpoint, with
// the reference server-everything behind Alou twice: over stdio and over its
// Streamable HTTP mode (so this also drives Alou's HTTP client transport).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { McpError } from '@modelcontextprotocol/sdk/types.js';

import { REPO_ROOT, freePort, startGateway } from './lib/alou.mjs';

const BIN = path.join(REPO_ROOT, 'tests/e2e/node_modules/.bin');

let gw;
let upstream; // server-everything in streamableHttp mode
let upstreamPort;

async function waitFor(what, probe, ms = 30_000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try {
      if (await probe()) return;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what}: not ready within ${ms} ms (${last?.message ?? 'no error'})`);
}

async function connect(token = gw.adminKey) {
  const client = new Client({ name: 'alou-e2e', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(`${gw.url}/mcp`), {
    requestInit: { headers: { Authorization: `Bearer ${token}` } },
  });
  await client.connect(transport);
  return { client, transport };
}

async function allTools(client) {
  const names = [];
  let cursor;
  do {
    const page = await client.listTools(cursor ? { cursor } : {});
    for (const t of page.tools) names.push(t.name);
    cursor = page.nextCursor;
  } while (cursor);
  return names;
}

describe('MCP SDK client against /mcp', () => {
  before(async () => {
    upstreamPort = await freePort();
    upstream = spawn(path.join(BIN, 'mcp-server-everything'), ['streamableHttp'], {
      env: { ...process.env, PORT: String(upstreamPort) },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    upstream.stderr.on('data', () => {});
    await waitFor('server-everything (HTTP)', async () => {
      const res = await fetch(`http://127.0.0.1:${upstreamPort}/mcp`, { method: 'GET' });
      await res.arrayBuffer();
      return true;
    });
    gw = await startGateway({
      extraToml: `
[[mcp_servers]]
name = "everything"
transport = "stdio"
command = [${JSON.stringify(path.join(BIN, 'mcp-server-everything'))}, "stdio"]

[[mcp_servers]]
name = "remote"
transport = "http"
url = "http://127.0.0.1:${upstreamPort}/mcp"
`,
    });
    await waitFor('both MCP servers ready', async () => {
      const res = await fetch(`${gw.url}/api/mcp/servers`, { headers: { Authorization: `Bearer ${gw.adminKey}` } });
      const body = await res.json();
      return body.servers.every((s) => s.state === 'ready');
    });
  });

  after(async () => {
    if (gw) {
      const exits = await gw.stop();
      assert.equal(exits.serve?.code, 0, `alou serve exited with ${JSON.stringify(exits.serve)}`);
    }
    upstream?.kill('SIGTERM');
  });

  test('initialize negotiates 2025-11-25 and lists every tool of both servers', async () => {
    const { client, transport } = await connect();
    assert.equal(client.getServerVersion()?.name, 'alou');
    assert.ok(transport.sessionId, 'no Mcp-Session-Id');
    const names = await allTools(client);
    assert.ok(names.includes('everything__echo'), names.join(','));
    assert.ok(names.includes('remote__echo'), names.join(','));
    assert.ok(names.every((n) => /^[a-zA-Z0-9_-]{1,64}$/.test(n)));
    await client.close();
  });

  test('calls tools over stdio and over HTTP upstreams', async () => {
    const { client } = await connect();
    const a = await client.callTool({ name: 'everything__echo', arguments: { message: 'via stdio' } });
    assert.equal(a.isError, false);
    assert.equal(a.content[0].text, 'Echo: via stdio');
    const b = await client.callTool({ name: 'remote__echo', arguments: { message: 'via http' } });
    assert.equal(b.isError, false);
    assert.equal(b.content[0].text, 'Echo: via http');
    const sum = await client.callTool({ name: 'remote__get-sum', arguments: { a: 1, b: 2 } });
    assert.match(sum.content[0].text, /3/);
    await client.ping();
    await client.close();
  });

  test('errors: bad arguments are a tool error, an unknown tool a protocol error', async () => {
    const { client } = await connect();
    const bad = await client.callTool({ name: 'everything__echo', arguments: {} });
    assert.equal(bad.isError, true);
    assert.match(bad.content[0].text, /message/);
    await assert.rejects(
      () => client.callTool({ name: 'nope__nothing', arguments: {} }),
      (e) => e instanceof McpError && e.code === -32602,
    );
    await client.close();
  });

  test('sessions: terminated sessions are gone; bad credentials are refused', async () => {
    const { client, transport } = await connect();
    const sid = transport.sessionId;
    await transport.terminateSession();
    const res = await fetch(`${gw.url}/mcp`, {
      method: 'POST',
      headers: {
        Authorization: `Bearer ${gw.adminKey}`,
        'Content-Type': 'application/json',
        Accept: 'application/json, text/event-stream',
        'Mcp-Session-Id': sid,
      },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    });
    assert.equal(res.status, 404);
    await client.close();
    await assert.rejects(() => connect('sk-alou-not-a-real-key-00000000000000000000'));
  });

  test('a key with a tool allow-list sees and calls only those tools', async () => {
    const key = await gw.createKey({ name: 'tools-e2e', tools: ['everything__echo', 'remote__*'] });
    const listed = await gw.cli('keys', 'list');
    assert.equal(listed.code, 0, listed.stderr);
    assert.match(listed.stdout, /tools-e2e .* everything__echo,remote__\*/);
    const { client } = await connect(key);
    const names = await allTools(client);
    assert.ok(names.includes('everything__echo'), names.join(','));
    assert.ok(names.includes('remote__get-sum'), names.join(','));
    assert.ok(names.every((n) => n === 'everything__echo' || n.startsWith('remote__')), names.join(','));
    const ok = await client.callTool({ name: 'everything__echo', arguments: { message: 'allowed' } });
    assert.equal(ok.content[0].text, 'Echo: allowed');
    await assert.rejects(
      () => client.callTool({ name: 'everything__get-sum', arguments: { a: 1, b: 2 } }),
      (e) => e instanceof McpError && e.code === -32602 && /not allowed/.test(e.message),
    );
    await client.close();
    const rest = await fetch(`${gw.url}/api/tools/everything__get-sum/call`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ arguments: { a: 1, b: 2 } }),
    });
    assert.equal(rest.status, 403);
    assert.equal((await rest.json()).error.code, 'tool_not_allowed');
  });

  test('prompts and resources are proxied', async () => {
    const { client } = await connect();
    const prompts = await client.listPrompts();
    const simple = prompts.prompts.find((p) => p.name.startsWith('everything__'));
    assert.ok(simple, JSON.stringify(prompts));
    const resources = await client.listResources();
    assert.ok(resources.resources.length > 0);
    const read = await client.readResource({ uri: resources.resources[0].uri });
    assert.ok(read.contents.length > 0);
    await client.close();
  });
});
