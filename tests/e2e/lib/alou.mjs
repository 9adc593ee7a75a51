// Helpers for the end-to-end tier: they start the real `alou` binary (the
// gateway and `alou mock-upstream`) as child processes on free ports, with a
// throwaway config and data directory, and tear them down again.
//
// Usage:
//   const g = await startGateway();
//   const key = await g.createKey({ name: 'alice', models: ['mock'], rpm: 1 });
//   ... talk to g.baseURL (http://127.0.0.1:PORT/v1) ...
//   await g.stop();   // SIGTERM both, asserts `alou serve` exits with code 0

import { spawn, execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

const READY_TIMEOUT_MS = 10_000;
const EXIT_TIMEOUT_MS = 10_000;

/** The binary under test: $ALOU_BIN, else build/asan/alou, else build/release/alou. */
export function alouBin() {
  const candidates = process.env.ALOU_BIN
    ? [process.env.ALOU_BIN]
    : ['build/asan/alou', 'build/release/alou'];
  for (const c of candidates) {
    const p = path.resolve(REPO_ROOT, c);
    if (existsSync(p)) return p;
  }
  throw new Error(
    `alou binary not found (tried ${candidates.join(', ')} under ${REPO_ROOT}); ` +
      'build it (scripts/build asan) or set ALOU_BIN',
  );
}

/** A port that was free a moment ago (the OS picks it; we release it at once). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** A random printable secret of `n` characters. */
export function randomSecret(n = 32) {
  return randomBytes(n).toString('base64url').slice(0, n);
}

function tomlString(s) {
  return JSON.stringify(s); // a JSON string is a valid TOML basic string
}

function configToml({ port, dataDir, mockPort, extraToml = '' }) {
  return `# written by tests/e2e/lib/alou.mjs
[server]
listen = ${tomlString(`127.0.0.1:${port}`)}

[storage]
data_dir = ${tomlString(dataDir)}
redis_url = ""

[log]
level = "warn"

[auth]
admin_key_env = "ALOU_ADMIN_KEY"

[wallet]
domain = ${tomlString(`127.0.0.1:${port}`)}
uri = ${tomlString(`http://127.0.0.1:${port}`)}

[[providers]]
name = "mock"
kind = "mock"

[[providers]]
name = "up"
kind = "openai"
base_url = ${tomlString(`http://127.0.0.1:${mockPort}/v1`)}

# The same mock upstream in Anthropic's and Gemini's own formats.
[[providers]]
name = "claude"
kind = "anthropic"
base_url = ${tomlString(`http://127.0.0.1:${mockPort}/v1`)}

[[providers]]
name = "gem"
kind = "gemini"
base_url = ${tomlString(`http://127.0.0.1:${mockPort}/v1beta`)}

[[providers]]
name = "az"
kind = "azure"
base_url = ${tomlString(`http://127.0.0.1:${mockPort}`)}
api_version = "2024-10-21"

[[models]]
name = "mock"
routes = [{ provider = "mock", model = "mock", weight = 1 }]

# Azure OpenAI's URL shape (deployments, api-version, api-key header).
[[models]]
name = "azure"
routes = [{ provider = "az", model = "gpt-x-deployment", weight = 1 }]

[[models]]
name = "claude"
routes = [{ provider = "claude", model = "claude-x", weight = 1 }]

[[models]]
name = "gemini"
routes = [{ provider = "gem", model = "gemini-x", weight = 1 }]

[[models]]
name = "remote"
routes = [{ provider = "up", model = "gpt-x", weight = 1 }]

# Priced ($2 in / $4 out per million tokens): billing tests.
[[models]]
name = "paid"
routes = [{ provider = "up", model = "gpt-x", weight = 1 }]
price = { input_per_mtok = 2, output_per_mtok = 4 }

[billing]
default_max_output_tokens = 64
${extraToml}`;
}

/**
 * A child process whose stdout/stderr are kept (for failure messages) and
 * whose exit is observable as a promise.
 */
class Child {
  constructor(name, args, env) {
    this.name = name;
    this.output = '';
    this.proc = spawn(alouBin(), args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (d) => {
      this.output += d.toString();
      if (this.output.length > 200_000) this.output = this.output.slice(-100_000);
    };
    this.proc.stdout.on('data', keep);
    this.proc.stderr.on('data', keep);
    this.exited = new Promise((resolve) => {
      this.proc.on('exit', (code, signal) => resolve({ code, signal }));
      this.proc.on('error', (err) => resolve({ code: null, signal: null, error: err }));
    });
    this.exit = null;
    this.exited.then((e) => (this.exit = e));
  }

  get running() {
    return this.exit === null;
  }

  describe() {
    return `${this.name} (pid ${this.proc.pid}) output:\n${this.output || '(none)'}`;
  }

  /** SIGTERM, then wait for exit (SIGKILL after EXIT_TIMEOUT_MS). */
  async stop() {
    if (!this.running) return this.exit;
    this.proc.kill('SIGTERM');
    let timer;
    const timeout = new Promise((resolve) => {
      timer = setTimeout(() => resolve(null), EXIT_TIMEOUT_MS);
    });
    const r = await Promise.race([this.exited, timeout]);
    clearTimeout(timer);
    if (r === null) {
      this.proc.kill('SIGKILL');
      await this.exited;
      return { ...this.exit, timedOut: true };
    }
    return r;
  }
}

async function waitUntil(what, child, probe) {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  let lastError;
  while (Date.now() < deadline) {
    if (!child.running) {
      throw new Error(`${what}: exited early with ${JSON.stringify(child.exit)}\n${child.describe()}`);
    }
    try {
      if (await probe()) return;
    } catch (e) {
      lastError = e;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(
    `${what}: not ready within ${READY_TIMEOUT_MS} ms (last error: ${lastError?.message ?? 'none'})\n` +
      child.describe(),
  );
}

async function httpOk(url) {
  const res = await fetch(url, { signal: AbortSignal.timeout(1000) });
  await res.arrayBuffer();
  return res.ok;
}

/**
 * Starts `alou mock-upstream` and `alou serve` on free ports with a temp
 * config and data directory. Resolves once GET /api/health answers 200.
 * `extraToml` is appended to the config (e.g. [[mcp_servers]] tables);
 * `extraEnv` is added to both processes' environment (settings such as
 * ALOU_SERVER_SHUTDOWN_TIMEOUT_MS, which a second [server] table cannot set).
 */
export async function startGateway({ extraToml = '', extraEnv = {} } = {}) {
  const dir = await mkdtemp(path.join(tmpdir(), 'alou-e2e-'));
  const dataDir = path.join(dir, 'data');
  const configPath = path.join(dir, 'alou.toml');
  const adminKey = randomSecret(32);
  const env = { ...process.env, ALOU_ADMIN_KEY: adminKey };
  // Settings come from the file alone: drop ALOU_<SECTION>_<KEY> overrides
  // that the caller's shell may have set.
  for (const k of Object.keys(env)) {
    if (/^ALOU_[A-Z]+_[A-Z_]+$/.test(k) && k !== 'ALOU_ADMIN_KEY') delete env[k];
  }
  Object.assign(env, extraEnv);

  const children = [];
  const g = {
    dir,
    configPath,
    adminKey,
    env,
    port: 0,
    mockPort: 0,
    baseURL: '',
    url: '',
    mock: null,
    serve: null,

    /** `alou keys create`; returns the printed key. */
    async createKey({ name, role = 'member', models, tools, rpm, credit } = {}) {
      const args = ['keys', 'create', '--name', name, '--role', role];
      if (models) args.push('--models', models.join(','));
      if (tools) args.push('--tools', tools.join(','));
      if (rpm !== undefined) args.push('--rpm', String(rpm));
      if (credit !== undefined) args.push('--credit', String(credit));
      args.push('--config', configPath);
      const { stdout } = await execFileAsync(alouBin(), args, { env, timeout: 15_000 });
      const lines = stdout.split('\n').filter((l) => l.trim() !== '');
      if (lines.length !== 1 || !/^sk-alou-\S+$/.test(lines[0].trim())) {
        throw new Error(`alou keys create: expected the key alone on stdout, got ${JSON.stringify(stdout)}`);
      }
      return lines[0].trim();
    },

    /** Runs an `alou` command on this gateway's config: {code, stdout, stderr}. */
    async cli(...args) {
      try {
        const { stdout, stderr } = await execFileAsync(alouBin(), [...args, '--config', configPath], {
          env,
          timeout: 60_000,
        });
        return { code: 0, stdout, stderr };
      } catch (e) {
        return { code: e.code, stdout: e.stdout, stderr: e.stderr };
      }
    },

    /** kill -9 the gateway (no shutdown at all). */
    async crash() {
      g.serve.proc.kill('SIGKILL');
      await g.serve.exited;
    },

    /** Starts `alou serve` again on the same port, config and data. */
    async restart() {
      g.serve = new Child('alou serve', ['serve', '--config', configPath], env);
      await waitUntil('alou serve', g.serve, () => httpOk(`${g.url}/api/health`));
    },

    /** SIGTERM both processes; returns their exits. Never throws. */
    async stop() {
      const exits = {};
      // The gateway first, so that it drains before its upstream goes away.
      if (g.serve) exits.serve = await g.serve.stop();
      if (g.mock) exits.mock = await g.mock.stop();
      await rm(dir, { recursive: true, force: true });
      return exits;
    },
  };

  try {
    g.mockPort = await freePort();
    g.mock = new Child('alou mock-upstream', ['mock-upstream', '--listen', `127.0.0.1:${g.mockPort}`], env);
    children.push(g.mock);
    // The mock has no health route: any HTTP answer means it is listening.
    await waitUntil('alou mock-upstream', g.mock, async () => {
      const res = await fetch(`http://127.0.0.1:${g.mockPort}/v1/models`, { signal: AbortSignal.timeout(1000) });
      await res.arrayBuffer();
      return true;
    });

    g.port = await freePort();
    await writeFile(configPath, configToml({ port: g.port, dataDir, mockPort: g.mockPort, extraToml }));
    g.serve = new Child('alou serve', ['serve', '--config', configPath], env);
    children.push(g.serve);
    g.url = `http://127.0.0.1:${g.port}`;
    g.baseURL = `${g.url}/v1`;
    await waitUntil('alou serve', g.serve, () => httpOk(`${g.url}/api/health`));
    return g;
  } catch (e) {
    await g.stop();
    throw e;
  }
}
