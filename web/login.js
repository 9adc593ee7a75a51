// Alou wallet login: Sign-In with Ethereum (EIP-1193) and Solana (Phantom).
// The server builds the message to sign (GET /api/wallet/nonce/...), the
// wallet signs it, POST /api/wallet/verify returns a token kept in
// localStorage. No build step, no dependencies.
'use strict';

const TOKEN_KEY = 'alou.wallet.token';
const $ = (id) => document.getElementById(id);

function setStatus(text, isError = false) {
  const el = $('status');
  el.textContent = text;
  el.classList.toggle('error', isError);
}

function busy(on) {
  for (const id of ['eth', 'sol', 'logout', 'copy']) $(id).disabled = on;
}

// Wallet errors carry EIP-1193 codes: 4001 is "the user rejected the request".
function explain(err) {
  if (err && (err.code === 4001 || err.code === 'ACTION_REJECTED')) return 'You rejected the request in your wallet.';
  if (err && err.code === -32002) return 'Your wallet already has a pending request: open it to continue.';
  return (err && err.message) || String(err);
}

async function api(path, options = {}) {
  const res = await fetch(path, options);
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    const e = new Error((body.error && body.error.message) || `HTTP ${res.status}`);
    e.status = res.status;
    throw e;
  }
  return body;
}

function utf8ToHex(text) {
  return '0x' + Array.from(new TextEncoder().encode(text), (b) => b.toString(16).padStart(2, '0')).join('');
}

function bytesToBase64(bytes) {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function showSignedIn(session) {
  $('signed-out').hidden = true;
  $('signed-in').hidden = false;
  $('address').textContent = session.address;
  $('chain').textContent = session.chain === 'solana' ? 'Solana' : 'Ethereum';
  $('expires').textContent = new Date(session.expires_at).toLocaleString();
  document.body.dataset.state = 'signed-in';
}

function showSignedOut() {
  $('signed-out').hidden = false;
  $('signed-in').hidden = true;
  document.body.dataset.state = 'signed-out';
}

async function finish(chain, message, signature) {
  const session = await api('/api/wallet/verify', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ chain, message, signature }),
  });
  localStorage.setItem(TOKEN_KEY, session.token);
  showSignedIn(session);
  setStatus('');
}

async function signInEthereum() {
  const eth = window.ethereum;
  if (!eth || typeof eth.request !== 'function') {
    setStatus('No Ethereum wallet found. Install MetaMask (metamask.io) or another EIP-1193 wallet, then reload.', true);
    return;
  }
  setStatus('Waiting for your wallet…');
  const accounts = await eth.request({ method: 'eth_requestAccounts' });
  if (!accounts || !accounts.length) throw new Error('Your wallet returned no account.');
  const address = accounts[0];
  const nonce = await api(`/api/wallet/nonce/${encodeURIComponent(address)}?chain=ethereum`);
  setStatus('Sign the message in your wallet…');
  const signature = await eth.request({ method: 'personal_sign', params: [utf8ToHex(nonce.message), address] });
  await finish('ethereum', nonce.message, signature);
}

async function signInSolana() {
  const sol = (window.phantom && window.phantom.solana) || window.solana;
  if (!sol || typeof sol.signMessage !== 'function') {
    setStatus('No Solana wallet found. Install Phantom (phantom.app), then reload.', true);
    return;
  }
  setStatus('Waiting for your wallet…');
  const connected = await sol.connect();
  const key = (connected && connected.publicKey) || sol.publicKey;
  if (!key) throw new Error('Your wallet returned no account.');
  const address = key.toString();
  const nonce = await api(`/api/wallet/nonce/${encodeURIComponent(address)}?chain=solana`);
  setStatus('Sign the message in your wallet…');
  const signed = await sol.signMessage(new TextEncoder().encode(nonce.message), 'utf8');
  const signature = signed && signed.signature ? signed.signature : signed;
  await finish('solana', nonce.message, bytesToBase64(signature));
}

async function run(action) {
  busy(true);
  try {
    await action();
  } catch (err) {
    setStatus(explain(err), true);
  } finally {
    busy(false);
  }
}

async function restore() {
  const token = localStorage.getItem(TOKEN_KEY);
  if (!token) return showSignedOut();
  try {
    const me = await api('/api/wallet/me', { headers: { authorization: `Bearer ${token}` } });
    showSignedIn(me);
  } catch {
    localStorage.removeItem(TOKEN_KEY);
    showSignedOut();
  }
}

async function logout() {
  const token = localStorage.getItem(TOKEN_KEY);
  localStorage.removeItem(TOKEN_KEY);
  if (token) {
    await api('/api/wallet/logout', { method: 'POST', headers: { authorization: `Bearer ${token}` } }).catch(() => {});
  }
  showSignedOut();
  setStatus('Logged out.');
}

async function copyToken() {
  const token = localStorage.getItem(TOKEN_KEY) || '';
  try {
    await navigator.clipboard.writeText(token);
    setStatus('Token copied.');
  } catch {
    setStatus('Copy failed: your browser blocked clipboard access.', true);
  }
}

$('eth').addEventListener('click', () => run(signInEthereum));
$('sol').addEventListener('click', () => run(signInSolana));
$('logout').addEventListener('click', () => run(logout));
$('copy').addEventListener('click', () => run(copyToken));
restore();
