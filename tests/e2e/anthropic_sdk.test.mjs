// The official Anthropic Node SDK against the real `alou serve` (POST
// /v1/messages), with models served in-process ("mock") and through the
// OpenAI adapter by `alou mock-upstream` ("remote"). Replies are `echo: M`;
// usage is ceil(chars / 4) both ways (DESIGN.md, "The mock provider").

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import Anthropic from '@anthropic-ai/sdk';

import { startGateway } from './lib/alou.mjs';

const MODELS = ['mock', 'remote', 'claude', 'gemini', 'azure'];
// Models served through an upstream (the mock upstream, over each provider kind).
const UPSTREAM_MODELS = ['remote', 'claude', 'gemini', 'azure'];

const WEATHER_TOOL = {
  name: 'get_weather',
  description: 'Current weather of a city',
  input_schema: {
    type: 'object',
    properties: { city: { type: 'string' } },
    required: ['city'],
  },
};

let gw;
let apiKey;

function client(key = apiKey) {
  // The SDK appends /v1/messages to baseURL and sends the key as x-api-key.
  return new Anthropic({ baseURL: gw.url, apiKey: key, maxRetries: 0, timeout: 15_000 });
}

before(async () => {
  gw = await startGateway();
  apiKey = await gw.createKey({ name: 'e2e-anthropic' });
});

after(async () => {
  if (!gw) return;
  const exits = await gw.stop();
  assert.equal(exits.serve?.code, 0, `alou serve did not exit cleanly on SIGTERM\n${gw.serve?.describe()}`);
});

describe('messages.create, non-streaming', () => {
  for (const model of MODELS) {
    test(`${model}: echo with usage`, async () => {
      const msg = await client().messages.create({
        model,
        max_tokens: 64,
        system: 'be brief',
        messages: [{ role: 'user', content: 'hello world' }],
      });
      assert.equal(msg.type, 'message');
      assert.equal(msg.role, 'assistant');
      assert.equal(msg.model, model);
      assert.match(msg.id, /^msg_/);
      assert.deepEqual(msg.content, [{ type: 'text', text: 'echo: hello world' }]);
      assert.equal(msg.stop_reason, 'end_turn');
      assert.equal(msg.stop_sequence, null);
      // prompt "be brief" + "hello world" = 19 chars -> 5; "echo: hello world" = 17 -> 5.
      assert.equal(msg.usage.input_tokens, 5);
      assert.equal(msg.usage.output_tokens, 5);
    });
  }
});

describe('messages, streaming', () => {
  for (const model of MODELS) {
    test(`${model}: messages.stream() finalText and events`, async () => {
      const stream = client().messages.stream({
        model,
        max_tokens: 64,
        messages: [{ role: 'user', content: 'hi there' }],
      });
      const types = [];
      stream.on('streamEvent', (e) => types.push(e.type));
      const text = await stream.finalText();
      assert.equal(text, 'echo: hi there');
      const final = await stream.finalMessage();
      assert.equal(final.stop_reason, 'end_turn');
      assert.equal(final.usage.output_tokens, 4);
      assert.equal(types[0], 'message_start');
      assert.equal(types.at(-1), 'message_stop');
      assert.ok(types.includes('content_block_delta'));
    });

    test(`${model}: create({stream: true}) iterates raw events`, async () => {
      const stream = await client().messages.create({
        model,
        max_tokens: 64,
        stream: true,
        messages: [{ role: 'user', content: 'hi there' }],
      });
      let text = '';
      const types = [];
      for await (const e of stream) {
        types.push(e.type);
        if (e.type === 'content_block_delta' && e.delta.type === 'text_delta') text += e.delta.text;
      }
      assert.equal(text, 'echo: hi there');
      assert.deepEqual(
        types.filter((t, i) => t !== types[i - 1]),
        ['message_start', 'content_block_start', 'content_block_delta', 'content_block_stop', 'message_delta', 'message_stop'],
      );
    });
  }
});

describe('tool use', () => {
  for (const model of UPSTREAM_MODELS) {
    test(`${model}: tool_use block, then a tool_result`, async () => {
      const messages = [{ role: 'user', content: '/tool get_weather {"city":"Paris"}' }];
      const first = await client().messages.create({
        model,
        max_tokens: 64,
        tools: [WEATHER_TOOL],
        tool_choice: { type: 'auto' },
        messages,
      });
      assert.equal(first.stop_reason, 'tool_use');
      assert.equal(first.content.length, 1);
      const use = first.content[0];
      assert.equal(use.type, 'tool_use');
      assert.equal(use.name, 'get_weather');
      assert.deepEqual(use.input, { city: 'Paris' });
      assert.ok(use.id);

      const second = await client().messages.create({
        model,
        max_tokens: 64,
        tools: [WEATHER_TOOL],
        messages: [
          ...messages,
          { role: 'assistant', content: first.content },
          { role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: '18C, clear' }] },
        ],
      });
      assert.deepEqual(second.content, [{ type: 'text', text: 'tool get_weather returned: 18C, clear' }]);
      assert.equal(second.stop_reason, 'end_turn');
    });

    test(`${model}: streamed tool_use input`, async () => {
      const stream = client().messages.stream({
        model,
        max_tokens: 64,
        tools: [WEATHER_TOOL],
        messages: [{ role: 'user', content: '/tool get_weather {"city":"Paris"}' }],
      });
      const final = await stream.finalMessage();
      assert.equal(final.stop_reason, 'tool_use');
      assert.equal(final.content[0].type, 'tool_use');
      assert.equal(final.content[0].name, 'get_weather');
      assert.deepEqual(final.content[0].input, { city: 'Paris' });
    });
  }
});

describe('errors', () => {
  test('a wrong key is an AuthenticationError', async () => {
    await assert.rejects(
      client('sk-alou-wrong-key-0123456789').messages.create({
        model: 'mock',
        max_tokens: 16,
        messages: [{ role: 'user', content: 'hi' }],
      }),
      (e) => {
        assert.ok(e instanceof Anthropic.AuthenticationError, `got ${e?.constructor?.name}: ${e?.message}`);
        assert.equal(e.status, 401);
        assert.equal(e.error?.type, 'error');
        assert.equal(e.error?.error?.type, 'authentication_error');
        return true;
      },
    );
  });

  for (const model of UPSTREAM_MODELS) {
    test(`${model}: an upstream cut mid-stream surfaces as an APIError`, async () => {
      const stream = await client().messages.create({
        model,
        max_tokens: 64,
        stream: true,
        messages: [{ role: 'user', content: '/cut 2 a b c d' }],
      });
      const types = [];
      await assert.rejects(
        (async () => {
          for await (const e of stream) types.push(e.type);
        })(),
        (e) => {
          assert.ok(e instanceof Anthropic.APIError, `got ${e?.constructor?.name}: ${e?.message}`);
          return true;
        },
      );
      assert.equal(types[0], 'message_start');
      assert.ok(!types.includes('message_stop'));
    });
  }

  test('an unknown model is a NotFoundError', async () => {
    await assert.rejects(
      client().messages.create({ model: 'nope', max_tokens: 16, messages: [{ role: 'user', content: 'hi' }] }),
      (e) => {
        assert.ok(e instanceof Anthropic.NotFoundError, `got ${e?.constructor?.name}: ${e?.message}`);
        assert.equal(e.error?.error?.type, 'not_found_error');
        return true;
      },
    );
  });
});
