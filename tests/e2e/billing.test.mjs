// Billing under load, against the built binary: 1,000 concurrent requests
// on a balance that covers only some of them, and a kill -9 in the middle
// of a load followed by a restart and `alou ledger verify`.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { startGateway } from './lib/alou.mjs';

// The `paid` model's price in nanos per token ($2 / $4 per million).
const IN = 2000n;
const OUT = 4000n;

function cost(usage) {
  return BigInt(usage.prompt_tokens) * IN + BigInt(usage.completion_tokens) * OUT;
}

// Credit given by the CLI beside the running server is picked up within
// its poll interval (200 ms).
async function waitForBalance(g, key, nanos) {
  const deadline = Date.now() + 3000;
  for (;;) {
    const b = await balance(g, key);
    if (BigInt(b.balance_nanos) === nanos || Date.now() > deadline) return b;
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function balance(g, key) {
  const res = await fetch(`${g.url}/api/billing/balance`, { headers: { authorization: `Bearer ${key}` } });
  assert.equal(res.status, 200);
  return res.json();
}

function chat(g, key, content, { stream = false, maxTokens = 16 } = {}) {
  return fetch(`${g.baseURL}/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify({
      model: 'paid',
      max_tokens: maxTokens,
      stream,
      ...(stream ? { stream_options: { include_usage: true } } : {}),
      messages: [{ role: 'user', content }],
    }),
  });
}

describe('billing', () => {
  let g;
  before(async () => {
    g = await startGateway();
  });
  after(async () => {
    const exits = await g?.stop();
    assert.equal(exits?.serve?.code, 0, `alou serve exit: ${JSON.stringify(exits?.serve)}`);
  });

  test('1,000 concurrent requests never overshoot the balance and are charged exactly', async () => {
    const credit = 10_000_000n; // $0.01: a few hundred requests' worth
    const key = await g.createKey({ name: 'load', credit: '0.01' });
    assert.equal(BigInt((await waitForBalance(g, key, credit)).balance_nanos), credit);

    const results = await Promise.all(
      Array.from({ length: 1000 }, async (_, i) => {
        const res = await chat(g, key, `hello number ${i}`);
        return { status: res.status, body: await res.json() };
      }),
    );
    let charged = 0n;
    let ok = 0;
    let refused = 0;
    for (const r of results) {
      if (r.status === 200) {
        ok += 1;
        charged += cost(r.body.usage);
      } else {
        assert.equal(r.status, 402, JSON.stringify(r.body));
        assert.equal(r.body.error.code, 'insufficient_balance');
        refused += 1;
      }
    }
    assert.ok(ok > 0 && refused > 0, `ok ${ok}, refused ${refused}`);
    const b = await balance(g, key);
    assert.equal(BigInt(b.held_nanos), 0n);
    // Exact to the nano against the usage of the requests that succeeded.
    assert.equal(BigInt(b.balance_nanos), credit - charged);
    // Holds exceed what a request can cost, so the balance never went below zero.
    assert.ok(BigInt(b.balance_nanos) >= 0n, b.balance);
    const usage = await (await fetch(`${g.url}/api/usage?group_by=model`, {
      headers: { authorization: `Bearer ${key}` },
    })).json();
    assert.equal(usage.data[0].requests, ok);
    assert.equal(BigInt(usage.data[0].cost_nanos), charged);
  });

  test('kill -9 under load: verify passes, no hold is left, every delivered response is charged', async () => {
    const key = await g.createKey({ name: 'crash', credit: '100' });
    await waitForBalance(g, key, 100_000_000_000n);
    let delivered = 0;
    let inFlight = 0;
    let inFlightAtCrash = -1;
    let crashed = false;
    const worker = async (w) => {
      for (let i = 0; !crashed; i += 1) {
        inFlight += 1;
        try {
          const stream = (w + i) % 2 === 0;
          const res = await chat(g, key, `/slow 15 worker ${w} request ${i} a b c`, { stream });
          if (res.status !== 200) continue;
          if (stream) {
            const text = await res.text();
            if (text.includes('data: [DONE]')) delivered += 1;
          } else {
            const body = await res.json();
            if (body.usage) delivered += 1;
          }
        } catch {
          // the gateway died under this request: not delivered
        } finally {
          inFlight -= 1;
        }
      }
    };
    const workers = Array.from({ length: 12 }, (_, w) => worker(w));
    await new Promise((r) => setTimeout(r, 1500));
    inFlightAtCrash = inFlight;
    await g.crash();
    crashed = true;
    await Promise.all(workers);
    assert.ok(delivered > 10, `only ${delivered} responses before the crash`);

    // The ledger is sound before the restart (nothing half-written)...
    const before = await g.cli('ledger', 'verify');
    assert.equal(before.code, 0, before.stdout + before.stderr);
    await g.restart();
    // ...and after it, with every hold released.
    const verify = await g.cli('ledger', 'verify');
    assert.equal(verify.code, 0, verify.stdout + verify.stderr);
    assert.equal(JSON.parse(verify.stdout).ok, true);
    const b = await balance(g, key);
    assert.equal(BigInt(b.held_nanos), 0n);
    const usage = await (await fetch(`${g.url}/api/usage?group_by=model`, {
      headers: { authorization: `Bearer ${key}` },
    })).json();
    const settled = usage.data[0].requests;
    assert.ok(settled >= delivered, `settled ${settled} < delivered ${delivered}`);
    assert.ok(settled <= delivered + inFlightAtCrash, `settled ${settled} > ${delivered} + ${inFlightAtCrash}`);
    assert.equal(100_000_000_000n - BigInt(b.balance_nanos), BigInt(usage.data[0].cost_nanos));
  });
});
