// The /login page in Debian's Chromium (headless, driven by playwright-core)
// with injected wallets: an EIP-1193 provider backed by an ethers Wallet and
// a Phantom-like provider backed by tweetnacl. The signing happens in Node,
// reached through page.exposeFunction; the page itself is unmodified.
// Screenshots go to build/e2e-artifacts/.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { Wallet, getBytes } from 'ethers';
import nacl from 'tweetnacl';
import bs58 from 'bs58';
import { chromium } from 'playwright-core';

import { REPO_ROOT, startGateway } from './lib/alou.mjs';

const CHROMIUM = process.env.ALOU_CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = path.join(REPO_ROOT, 'build', 'e2e-artifacts');

let g;
let browser;
before(async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} not found: install Debian's chromium (scripts/setup)`);
  await mkdir(ARTIFACTS, { recursive: true });
  g = await startGateway();
  browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
});
after(async () => {
  await browser?.close();
  const exits = await g?.stop();
  assert.equal(exits?.serve?.code, 0);
});

async function meWith(token) {
  const res = await fetch(`${g.url}/api/wallet/me`, { headers: { authorization: `Bearer ${token}` } });
  return { status: res.status, json: await res.json() };
}

async function openLogin(setup) {
  const context = await browser.newContext();
  const page = await context.newPage();
  if (setup) await setup(page);
  await page.goto(`${g.url}/login`);
  return { context, page };
}

// EIP-1193: eth_requestAccounts and personal_sign (hex-encoded UTF-8 message).
async function injectEthereum(page, wallet, { reject = false } = {}) {
  await page.exposeFunction('__aluoEthSign', async (hexMessage) => wallet.signMessage(getBytes(hexMessage)));
  await page.addInitScript(({ address, reject }) => {
    window.ethereum = {
      isMetaMask: true,
      async request({ method, params }) {
        if (method === 'eth_requestAccounts') return [address.toLowerCase()];
        if (method === 'personal_sign') {
          if (reject) throw Object.assign(new Error('User rejected the request.'), { code: 4001 });
          return window.__aluoEthSign(params[0]);
        }
        throw Object.assign(new Error(`unsupported ${method}`), { code: 4200 });
      },
    };
  }, { address: wallet.address, reject });
}

// Phantom: connect() → {publicKey}, signMessage(bytes) → {signature: Uint8Array}.
async function injectPhantom(page, keyPair) {
  await page.exposeFunction('__aluoSolSign', async (bytes) =>
    Array.from(nacl.sign.detached(Uint8Array.from(bytes), keyPair.secretKey)));
  await page.addInitScript(({ address }) => {
    const publicKey = { toString: () => address, toBase58: () => address };
    window.phantom = {
      solana: {
        isPhantom: true,
        publicKey,
        async connect() { return { publicKey }; },
        async signMessage(bytes) {
          const sig = await window.__aluoSolSign(Array.from(bytes));
          return { signature: Uint8Array.from(sig), publicKey };
        },
      },
    };
  }, { address: bs58.encode(keyPair.publicKey) });
}

describe('/login in Chromium', () => {
  test('Sign in with Ethereum shows the address and a working token, then logs out', async () => {
    const wallet = Wallet.createRandom();
    const { context, page } = await openLogin((p) => injectEthereum(p, wallet));
    await page.click('#eth');
    await page.waitForSelector('#signed-in:not([hidden])', { timeout: 10_000 });
    assert.equal(await page.textContent('#address'), wallet.address);
    assert.equal(await page.textContent('#chain'), 'Ethereum');
    assert.notEqual((await page.textContent('#expires')).trim(), '');
    await page.screenshot({ path: path.join(ARTIFACTS, 'login-ethereum.png') });
    const token = await page.evaluate(() => localStorage.getItem('alou.wallet.token'));
    const me = await meWith(token);
    assert.equal(me.status, 200);
    assert.equal(me.json.address, wallet.address);

    // A reload keeps the session (the page asks /api/wallet/me).
    await page.reload();
    await page.waitForSelector('#signed-in:not([hidden])');
    assert.equal(await page.textContent('#address'), wallet.address);

    await page.click('#logout');
    await page.waitForSelector('#signed-out:not([hidden])');
    assert.equal(await page.textContent('#status'), 'Logged out.');
    assert.equal((await meWith(token)).status, 401, 'logout revoked the token');
    await context.close();
  });

  test('Sign in with Solana shows the address and a working token', async () => {
    const kp = nacl.sign.keyPair();
    const { context, page } = await openLogin((p) => injectPhantom(p, kp));
    await page.click('#sol');
    await page.waitForSelector('#signed-in:not([hidden])', { timeout: 10_000 });
    assert.equal(await page.textContent('#address'), bs58.encode(kp.publicKey));
    assert.equal(await page.textContent('#chain'), 'Solana');
    await page.screenshot({ path: path.join(ARTIFACTS, 'login-solana.png') });
    const token = await page.evaluate(() => localStorage.getItem('alou.wallet.token'));
    const me = await meWith(token);
    assert.equal(me.status, 200);
    assert.equal(me.json.chain, 'solana');
    await context.close();
  });

  test('no wallet installed: clear messages for both buttons', async () => {
    const { context, page } = await openLogin();
    await page.click('#eth');
    await page.waitForSelector('#status.error');
    assert.match(await page.textContent('#status'), /No Ethereum wallet found/);
    await page.click('#sol');
    await page.waitForFunction(() => document.querySelector('#status').textContent.includes('Solana'));
    assert.match(await page.textContent('#status'), /No Solana wallet found/);
    assert.equal(await page.isVisible('#signed-in'), false);
    await page.screenshot({ path: path.join(ARTIFACTS, 'login-no-wallet.png') });
    await context.close();
  });

  test('the user rejecting the signature gets a clear message', async () => {
    const wallet = Wallet.createRandom();
    const { context, page } = await openLogin((p) => injectEthereum(p, wallet, { reject: true }));
    await page.click('#eth');
    await page.waitForSelector('#status.error');
    assert.equal(await page.textContent('#status'), 'You rejected the request in your wallet.');
    assert.equal(await page.isVisible('#signed-in'), false);
    await context.close();
  });
});
