// Wallet login against the built binary with the clients dapps really use:
// SIWE messages built by the `siwe` package and signed by an `ethers`
// Wallet; Sign-In with Solana signed by `tweetnacl`, keys in `bs58`.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Wallet, Signature } from 'ethers';
import { SiweMessage } from 'siwe';
import nacl from 'tweetnacl';
import bs58 from 'bs58';

import { startGateway } from './lib/alou.mjs';

let g;
before(async () => {
  g = await startGateway();
});
after(async () => {
  const exits = await g?.stop();
  assert.equal(exits?.serve?.code, 0, 'alou serve exits 0 on SIGTERM');
});

async function call(method, path, { body, token } = {}) {
  const headers = {};
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  const res = await fetch(`${g.url}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text, headers: res.headers };
}

const nonceFor = async (address, chain = 'ethereum') => {
  const r = await call('GET', `/api/wallet/nonce/${address}?chain=${chain}`);
  assert.equal(r.status, 200, r.text);
  return r.json;
};
const verify = (chain, message, signature) => call('POST', '/api/wallet/verify', { body: { chain, message, signature } });

function expectError(r, status, code) {
  assert.equal(r.status, status, r.text);
  assert.equal(r.json?.error?.code, code, r.text);
}

// A SIWE message as a dapp builds it with the siwe package around our nonce.
async function siwe(wallet, overrides = {}) {
  const { nonce } = await nonceFor(wallet.address);
  const msg = new SiweMessage({
    domain: `127.0.0.1:${g.port}`,
    address: wallet.address,
    statement: 'Sign in to Alou from the e2e suite.',
    uri: g.url,
    version: '1',
    chainId: 1,
    nonce,
    issuedAt: new Date().toISOString(),
    ...overrides,
  });
  return msg.prepareMessage();
}

describe('Sign-In with Ethereum (siwe + ethers)', () => {
  test('the nonce endpoint message parses with the siwe package and verifies unchanged', async () => {
    const w = Wallet.createRandom();
    const n = await nonceFor(w.address.toLowerCase());
    assert.ok(n.nonce.length >= 16);
    const parsed = new SiweMessage(n.message);
    assert.equal(parsed.address, w.address);
    assert.equal(parsed.nonce, n.nonce);
    assert.equal(parsed.domain, `127.0.0.1:${g.port}`);
    const r = await verify('ethereum', n.message, await w.signMessage(n.message));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.address, w.address);
  });

  test('login, me, token as API credential, logout', async () => {
    const w = Wallet.createRandom();
    const message = await siwe(w);
    const r = await verify('ethereum', message, await w.signMessage(message));
    assert.equal(r.status, 200, r.text);
    const { token, expires_at } = r.json;
    assert.ok(new Date(expires_at) > new Date());
    const me = await call('GET', '/api/wallet/me', { token });
    assert.equal(me.status, 200, me.text);
    assert.equal(me.json.address, w.address);
    assert.equal(me.json.chain, 'ethereum');
    const s = await call('POST', '/api/session', { token, body: { title: 'from e2e' } });
    assert.equal(s.status, 201, s.text);
    const read = await call('GET', `/api/session/${s.json.id}`, { token });
    assert.equal(read.json.title, 'from e2e');
    // The same token on the gateway, as a member.
    const models = await call('GET', '/v1/models', { token });
    assert.equal(models.status, 200, models.text);
    const chat = await call('POST', '/v1/chat/completions', {
      token,
      body: { model: 'mock', messages: [{ role: 'user', content: 'hi from a wallet' }] },
    });
    assert.equal(chat.status, 200, chat.text);
    assert.equal(chat.json.choices[0].message.content, 'echo: hi from a wallet');
    assert.equal((await call('POST', '/api/wallet/logout', { token })).status, 200);
    expectError(await call('GET', '/api/wallet/me', { token }), 401, 'invalid_api_key');
  });

  test('a replayed signed message is 409', async () => {
    const w = Wallet.createRandom();
    const message = await siwe(w);
    const sig = await w.signMessage(message);
    assert.equal((await verify('ethereum', message, sig)).status, 200);
    expectError(await verify('ethereum', message, sig), 409, 'nonce_used');
  });

  const refusals = [
    ['wrong domain', { domain: 'evil.example' }, 401, 'domain_mismatch'],
    ['wrong URI', { uri: 'https://evil.example/login' }, 401, 'uri_mismatch'],
    ['wrong chain', { chainId: 5 }, 401, 'chain_not_allowed'],
    ['expired', { expirationTime: new Date(Date.now() - 60_000).toISOString() }, 401, 'message_expired'],
    ['not yet valid', { notBefore: new Date(Date.now() + 3_600_000).toISOString() }, 401, 'message_not_yet_valid'],
    ['issued in the future', { issuedAt: new Date(Date.now() + 3_600_000).toISOString() }, 401, 'issued_in_future'],
  ];
  for (const [name, overrides, status, code] of refusals) {
    test(`${name} is refused (${status} ${code})`, async () => {
      const w = Wallet.createRandom();
      const message = await siwe(w, overrides);
      expectError(await verify('ethereum', message, await w.signMessage(message)), status, code);
    });
  }

  test('tampered message and another key are 401', async () => {
    const w = Wallet.createRandom();
    const message = await siwe(w);
    const sig = await w.signMessage(message);
    const tampered = message.replace('from the e2e suite', 'from somewhere else');
    expectError(await verify('ethereum', tampered, sig), 401, 'signature_mismatch');
    expectError(await verify('ethereum', message, await Wallet.createRandom().signMessage(message)), 401,
      'signature_mismatch');
    assert.equal((await verify('ethereum', message, sig)).status, 200, 'the refusals spent nothing');
  });

  test('a nonce issued for another address is 401', async () => {
    const a = Wallet.createRandom();
    const b = Wallet.createRandom();
    const { nonce } = await nonceFor(b.address);
    const message = new SiweMessage({
      domain: `127.0.0.1:${g.port}`, address: a.address, uri: g.url, version: '1', chainId: 1, nonce,
      issuedAt: new Date().toISOString(),
    }).prepareMessage();
    expectError(await verify('ethereum', message, await a.signMessage(message)), 401, 'nonce_address_mismatch');
  });

  test('malformed and high-s signatures are 400', async () => {
    const w = Wallet.createRandom();
    const message = await siwe(w);
    const sig = Signature.from(await w.signMessage(message));
    expectError(await verify('ethereum', message, '0x1234'), 400, 'invalid_signature');
    expectError(await verify('ethereum', message, '0x' + 'zz'.repeat(65)), 400, 'invalid_signature');
    // The malleable twin (n - s, v flipped) that EIP-2 forbids.
    const n = 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141n;
    const highS = '0x' + (n - BigInt(sig.s)).toString(16).padStart(64, '0');
    const twin = sig.r + highS.slice(2) + (sig.v === 27 ? '1c' : '1b');
    expectError(await verify('ethereum', message, twin), 400, 'invalid_signature');
    expectError(await verify('ethereum', 'x'.repeat(100_000), sig.serialized), 400, 'invalid_message');
    expectError(await call('POST', '/api/wallet/verify', { body: '{"chain":' }), 400, 'invalid_json');
    assert.equal((await verify('ethereum', message, sig.serialized)).status, 200);
  });

  test('alg:none and re-signed tokens are 401', async () => {
    const w = Wallet.createRandom();
    const message = await siwe(w);
    const { token } = (await verify('ethereum', message, await w.signMessage(message))).json;
    const [, payload] = token.split('.');
    const none = Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url') + '.' + payload + '.';
    expectError(await call('GET', '/api/wallet/me', { token: none }), 401, 'invalid_api_key');
    const forgedPayload = Buffer.from(
      JSON.stringify({ ...JSON.parse(Buffer.from(payload, 'base64url')), sub: Wallet.createRandom().address }),
    ).toString('base64url');
    const [h, , s] = token.split('.');
    expectError(await call('GET', '/api/wallet/me', { token: `${h}.${forgedPayload}.${s}` }), 401, 'invalid_api_key');
  });
});

describe('Sign-In with Solana (tweetnacl + bs58)', () => {
  test('login with a base58 signature, replay is 409', async () => {
    const kp = nacl.sign.keyPair();
    const address = bs58.encode(kp.publicKey);
    const n = await nonceFor(address, 'solana');
    assert.match(n.message, new RegExp(`wants you to sign in with your Solana account:\\n${address}\\n`));
    const sig = bs58.encode(nacl.sign.detached(new TextEncoder().encode(n.message), kp.secretKey));
    const r = await verify('solana', n.message, sig);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.address, address);
    const me = await call('GET', '/api/wallet/me', { token: r.json.token });
    assert.equal(me.json.chain, 'solana');
    expectError(await verify('solana', n.message, sig), 409, 'nonce_used');
  });

  test('base64 signatures are accepted; another key is 401', async () => {
    const kp = nacl.sign.keyPair();
    const address = bs58.encode(kp.publicKey);
    const n = await nonceFor(address, 'solana');
    const bytes = new TextEncoder().encode(n.message);
    const other = nacl.sign.keyPair();
    expectError(await verify('solana', n.message, bs58.encode(nacl.sign.detached(bytes, other.secretKey))), 401,
      'signature_mismatch');
    const sig = Buffer.from(nacl.sign.detached(bytes, kp.secretKey)).toString('base64');
    assert.equal((await verify('solana', n.message, sig)).status, 200);
  });

  test('wrong domain is 401', async () => {
    const kp = nacl.sign.keyPair();
    const address = bs58.encode(kp.publicKey);
    const n = await nonceFor(address, 'solana');
    const evil = n.message.replace(`127.0.0.1:${g.port} wants`, 'evil.example wants');
    const sig = bs58.encode(nacl.sign.detached(new TextEncoder().encode(evil), kp.secretKey));
    expectError(await verify('solana', evil, sig), 401, 'domain_mismatch');
  });
});
