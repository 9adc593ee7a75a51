// The official OpenAI Node SDK against the real `alou serve`, with models
// served in-process ("mock", kind mock) and through the OpenAI adapter by
// `alou mock-upstream` ("remote", kind openai). See DESIGN.md, "The mock
// provider": replies are `echo: M`; usage is ceil(chars / 4) both ways.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import OpenAI from 'openai';

import { startGateway } from './lib/alou.mjs';

const MODELS = ['mock', 'remote', 'claude', 'gemini', 'azure'];

const tokens = (chars) => Math.ceil(chars / 4);
const promptChars = (messages) => messages.reduce((n, m) => n + (m.content ?? '').length, 0);

const WEATHER_TOOL = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Current weather of a city',
    parameters: {
      type: 'object',
      properties: { city: { type: 'string' } },
      required: ['city'],
    },
  },
};

let gw;
let apiKey;

function client(key = apiKey, opts = {}) {
  return new OpenAI({ baseURL: gw.baseURL, apiKey: key, maxRetries: 0, timeout: 15_000, ...opts });
}

// Runs `fn`, expects it to reject with an instance of `cls` carrying `status`
// and OpenAI's error body with `code`; returns the error.
async function expectApiError(fn, cls, status, code) {
  let err;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  assert.ok(err, `expected ${cls.name}, but the call succeeded`);
  assert.ok(
    err instanceof cls,
    `expected ${cls.name}, got ${err?.constructor?.name}: ${err?.status} ${err?.message}`,
  );
  assert.equal(err.status, status);
  // OpenAI's error shape: {"error":{"message","type","param","code"}}.
  assert.equal(typeof err.error?.message, 'string', `error body: ${JSON.stringify(err.error)}`);
  assert.ok(err.error.message.length > 0);
  assert.ok('type' in err.error, `error body lacks type: ${JSON.stringify(err.error)}`);
  assert.ok('param' in err.error, `error body lacks param: ${JSON.stringify(err.error)}`);
  assert.equal(err.code, code, `error body: ${JSON.stringify(err.error)}`);
  assert.ok(err.headers?.get('x-request-id'), 'error response lacks x-request-id');
  return err;
}

before(async () => {
  gw = await startGateway();
  apiKey = await gw.createKey({ name: 'e2e-member' });
});

after(async () => {
  if (!gw) return;
  const exits = await gw.stop();
  // Graceful shutdown: SIGTERM makes `alou serve` drain and exit 0.
  assert.deepEqual(
    { code: exits.serve?.code, signal: exits.serve?.signal, timedOut: exits.serve?.timedOut },
    { code: 0, signal: null, timedOut: undefined },
    `alou serve did not exit cleanly on SIGTERM\n${gw.serve?.describe()}`,
  );
  assert.equal(exits.mock?.code, 0, `alou mock-upstream did not exit cleanly\n${gw.mock?.describe()}`);
});

describe('chat.completions, non-streaming', () => {
  for (const model of MODELS) {
    test(`${model}: echoes the last user message with usage`, async () => {
      const messages = [
        { role: 'system', content: 'You are terse.' },
        { role: 'user', content: 'hello there' },
      ];
      const res = await client().chat.completions.create({ model, messages });
      assert.equal(res.object, 'chat.completion');
      assert.equal(res.choices.length, 1);
      const reply = res.choices[0].message;
      assert.equal(reply.role, 'assistant');
      assert.equal(reply.content, 'echo: hello there');
      assert.equal(res.choices[0].finish_reason, 'stop');
      assert.deepEqual(
        {
          prompt_tokens: res.usage.prompt_tokens,
          completion_tokens: res.usage.completion_tokens,
          total_tokens: res.usage.total_tokens,
        },
        {
          prompt_tokens: tokens(promptChars(messages)),
          completion_tokens: tokens('echo: hello there'.length),
          total_tokens: tokens(promptChars(messages)) + tokens('echo: hello there'.length),
        },
      );
    });

    test(`${model}: withResponse exposes x-request-id`, async () => {
      const { data, response } = await client()
        .chat.completions.create({ model, messages: [{ role: 'user', content: 'hi' }] })
        .withResponse();
      assert.equal(data.choices[0].message.content, 'echo: hi');
      assert.ok(response.headers.get('x-request-id'));
    });
  }
});

describe('chat.completions, streaming', () => {
  for (const model of MODELS) {
    test(`${model}: deltas join to the reply`, async () => {
      const stream = await client().chat.completions.create({
        model,
        stream: true,
        messages: [{ role: 'user', content: 'hello there' }],
      });
      let text = '';
      let chunks = 0;
      let finish = null;
      for await (const chunk of stream) {
        assert.equal(chunk.object, 'chat.completion.chunk');
        chunks += 1;
        const c = chunk.choices[0];
        if (!c) continue;
        text += c.delta?.content ?? '';
        if (c.finish_reason) finish = c.finish_reason;
        // Without include_usage no chunk carries usage.
        assert.ok(chunk.usage == null, `unexpected usage: ${JSON.stringify(chunk.usage)}`);
      }
      assert.equal(text, 'echo: hello there');
      assert.ok(chunks >= 3, `expected word-by-word chunks, got ${chunks}`);
      assert.equal(finish, 'stop');
    });

    test(`${model}: include_usage puts usage on the last chunk`, async () => {
      const messages = [{ role: 'user', content: 'hello there' }];
      const stream = await client().chat.completions.create({
        model,
        stream: true,
        stream_options: { include_usage: true },
        messages,
      });
      const all = [];
      for await (const chunk of stream) all.push(chunk);
      const last = all.at(-1);
      assert.ok(last.usage, `last chunk has no usage: ${JSON.stringify(last)}`);
      assert.deepEqual(last.choices, []);
      assert.equal(last.usage.prompt_tokens, tokens(promptChars(messages)));
      assert.equal(last.usage.completion_tokens, tokens('echo: hello there'.length));
      assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + last.usage.completion_tokens);
      assert.ok(all.slice(0, -1).every((c) => c.usage == null), 'usage on a chunk before the last');
      const text = all.map((c) => c.choices[0]?.delta?.content ?? '').join('');
      assert.equal(text, 'echo: hello there');
    });

    test(`${model}: the SDK's stream helper assembles the final message`, async () => {
      const runner = client().chat.completions.stream({
        model,
        messages: [{ role: 'user', content: 'one two three' }],
      });
      const final = await runner.finalChatCompletion();
      assert.equal(final.choices[0].message.content, 'echo: one two three');
    });
  }
});

describe('tools', () => {
  for (const model of MODELS) {
    test(`${model}: a tool call, then the tool result`, async () => {
      const c = client();
      const messages = [{ role: 'user', content: '/tool get_weather {"city":"Paris"}' }];
      const first = await c.chat.completions.create({ model, messages, tools: [WEATHER_TOOL] });
      const choice = first.choices[0];
      assert.equal(choice.finish_reason, 'tool_calls');
      const calls = choice.message.tool_calls;
      assert.equal(calls?.length, 1, `tool_calls: ${JSON.stringify(choice.message)}`);
      assert.equal(calls[0].type, 'function');
      assert.ok(calls[0].id, 'tool call without id');
      assert.equal(calls[0].function.name, 'get_weather');
      assert.deepEqual(JSON.parse(calls[0].function.arguments), { city: 'Paris' });

      const result = '{"temp_c":21}';
      const second = await c.chat.completions.create({
        model,
        tools: [WEATHER_TOOL],
        messages: [
          ...messages,
          choice.message,
          { role: 'tool', tool_call_id: calls[0].id, content: result },
        ],
      });
      const content = second.choices[0].message.content;
      assert.ok(
        content.startsWith('tool get_weather returned:'),
        `unexpected reply: ${JSON.stringify(content)}`,
      );
      assert.ok(content.includes(result), `reply does not carry the result: ${content}`);
      assert.equal(second.choices[0].finish_reason, 'stop');
    });

    test(`${model}: a streamed tool call's argument deltas join to valid JSON`, async () => {
      const stream = await client().chat.completions.create({
        model,
        stream: true,
        tools: [WEATHER_TOOL],
        messages: [{ role: 'user', content: '/tool get_weather {"city":"Paris","days":3}' }],
      });
      const calls = new Map(); // index -> {id, name, args}
      let finish = null;
      for await (const chunk of stream) {
        const c = chunk.choices[0];
        if (!c) continue;
        if (c.finish_reason) finish = c.finish_reason;
        for (const tc of c.delta?.tool_calls ?? []) {
          const cur = calls.get(tc.index) ?? { id: '', name: '', args: '' };
          if (tc.id) cur.id = tc.id;
          cur.name += tc.function?.name ?? '';
          cur.args += tc.function?.arguments ?? '';
          calls.set(tc.index, cur);
        }
      }
      assert.equal(calls.size, 1, `tool calls: ${JSON.stringify([...calls])}`);
      const call = calls.get(0);
      assert.ok(call, 'the tool call has no index 0');
      assert.ok(call.id);
      assert.equal(call.name, 'get_weather');
      assert.deepEqual(JSON.parse(call.args), { city: 'Paris', days: 3 });
      assert.equal(finish, 'tool_calls');
    });
  }
});

describe('embeddings', () => {
  for (const model of ['mock', 'remote', 'azure', 'gemini']) {
    test(`embeddings.create on ${model} returns deterministic vectors with usage`, async () => {
      const r = await client().embeddings.create({ model, input: ['hello', 'world'], encoding_format: 'float' });
      assert.equal(r.object, 'list');
      assert.equal(r.data.length, 2);
      assert.equal(r.data[0].index, 0);
      assert.ok(Array.isArray(r.data[0].embedding) && r.data[0].embedding.length > 0);
      assert.notDeepEqual(r.data[0].embedding, r.data[1].embedding);
      const again = await client().embeddings.create({ model, input: 'hello', encoding_format: 'float' });
      assert.deepEqual(again.data[0].embedding, r.data[0].embedding);
      assert.ok(r.usage.prompt_tokens > 0);
    });
  }
  for (const model of ['remote', 'gemini']) {
    test(`embeddings.create on ${model} with the SDK's default (base64) decodes to the float vectors`, async () => {
      const f = await client().embeddings.create({ model, input: 'hello', encoding_format: 'float' });
      const b = await client().embeddings.create({ model, input: 'hello' });  // the SDK asks for base64
      assert.equal(b.data[0].embedding.length, f.data[0].embedding.length);
      for (let i = 0; i < f.data[0].embedding.length; i++) {
        assert.ok(Math.abs(b.data[0].embedding[i] - f.data[0].embedding[i]) < 1e-6, `component ${i}`);
      }
    });
  }
});

describe('models', () => {
  test('list contains the configured models', async () => {
    const ids = [];
    for await (const m of client().models.list()) {
      assert.equal(m.object, 'model');
      ids.push(m.id);
    }
    assert.ok(ids.includes('mock'), `models: ${ids}`);
    assert.ok(ids.includes('remote'), `models: ${ids}`);
  });

  test('retrieve one model', async () => {
    const m = await client().models.retrieve('mock');
    assert.equal(m.id, 'mock');
    assert.equal(m.object, 'model');
  });

  test('retrieve an unknown model is NotFoundError', async () => {
    await expectApiError(() => client().models.retrieve('no-such-model'), OpenAI.NotFoundError, 404, 'model_not_found');
  });
});

describe('errors', () => {
  test('a wrong API key is AuthenticationError (401)', async () => {
    const c = client('sk-alou-not-a-real-key');
    await expectApiError(
      () => c.chat.completions.create({ model: 'mock', messages: [{ role: 'user', content: 'hi' }] }),
      OpenAI.AuthenticationError,
      401,
      'invalid_api_key',
    );
    await expectApiError(() => c.models.list(), OpenAI.AuthenticationError, 401, 'invalid_api_key');
  });

  test('an unknown model is NotFoundError (404)', async () => {
    await expectApiError(
      () =>
        client().chat.completions.create({
          model: 'no-such-model',
          messages: [{ role: 'user', content: 'hi' }],
        }),
      OpenAI.NotFoundError,
      404,
      'model_not_found',
    );
  });

  for (const model of MODELS) {
    test(`${model}: "/fail 400" is BadRequestError`, async () => {
      await expectApiError(
        () => client().chat.completions.create({ model, messages: [{ role: 'user', content: '/fail 400' }] }),
        OpenAI.BadRequestError,
        400,
        'upstream_bad_request',
      );
    });
  }

  for (const model of MODELS) {
    test(`${model}: "/fail 500" upstream is InternalServerError (502)`, async () => {
      await expectApiError(
        () => client().chat.completions.create({ model, messages: [{ role: 'user', content: '/fail 500' }] }),
        OpenAI.InternalServerError,
        502,
        'upstream_error',
      );
    });

    test(`${model}: an upstream cut mid-stream ends the stream with an error event`, async () => {
      const stream = await client().chat.completions.create({
        model,
        stream: true,
        messages: [{ role: 'user', content: '/cut 2 one two three four' }],
      });
      let text = '';
      let err;
      try {
        for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
      } catch (e) {
        err = e;
      }
      // Headers (200) went out first, so the error arrives as an SSE event in
      // OpenAI's shape, which the SDK raises as a plain APIError.
      assert.ok(err instanceof OpenAI.APIError, `expected APIError, got ${err} after ${JSON.stringify(text)}`);
      assert.equal(err.error?.type, 'server_error', JSON.stringify(err.error));
      assert.match(err.error?.code ?? '', /^upstream_/, JSON.stringify(err.error));
      assert.ok(!text.includes('four'), `the stream was not cut: ${JSON.stringify(text)}`);
    });
  }

  test('a bad request body is BadRequestError', async () => {
    await expectApiError(
      () => client().chat.completions.create({ model: 'mock', messages: 'not a list' }),
      OpenAI.BadRequestError,
      400,
      'invalid_messages',
    );
  });

  test('a key restricted to "mock" gets PermissionDeniedError (403) for "remote"', async () => {
    const key = await gw.createKey({ name: 'e2e-mock-only', models: ['mock'] });
    const c = client(key);
    const ok = await c.chat.completions.create({ model: 'mock', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(ok.choices[0].message.content, 'echo: hi');
    await expectApiError(
      () => c.chat.completions.create({ model: 'remote', messages: [{ role: 'user', content: 'hi' }] }),
      OpenAI.PermissionDeniedError,
      403,
      'model_not_allowed',
    );
    // GET /v1/models lists only the models this key may use.
    const ids = [];
    for await (const m of c.models.list()) ids.push(m.id);
    assert.deepEqual(ids, ['mock']);
  });

  test('a key with --rpm 1 gets RateLimitError (429) on its second call', async () => {
    const key = await gw.createKey({ name: 'e2e-rpm-1', rpm: 1 });
    const c = client(key);
    const ok = await c.chat.completions.create({ model: 'mock', messages: [{ role: 'user', content: 'one' }] });
    assert.equal(ok.choices[0].message.content, 'echo: one');
    const err = await expectApiError(
      () => c.chat.completions.create({ model: 'mock', messages: [{ role: 'user', content: 'two' }] }),
      OpenAI.RateLimitError,
      429,
      'rate_limit_exceeded',
    );
    const retryAfter = err.headers.get('retry-after');
    assert.ok(retryAfter && Number(retryAfter) > 0, `Retry-After: ${retryAfter}`);
  });
});
