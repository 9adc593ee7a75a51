#pragma once
// `alou mock-upstream`: the mock model (model.hpp) served over real HTTP in
// the providers' own wire formats, so that provider adapters, streaming,
// retries and fallbacks are tested against real sockets.
//
// Routes (all http::Access::kPublic; credentials are ignored):
//   POST /v1/chat/completions   OpenAI Chat Completions, stream or not,
//                               stream_options.include_usage, tool calls
//                               (streamed as tool_call argument deltas)
//   POST /v1/embeddings         a deterministic unit vector per input (8 floats
//                               from an FNV-1a hash of it; `dimensions` 1..4096,
//                               encoding_format float|base64), usage.prompt_tokens
//   GET  /v1/models             OpenAI list shape
//   POST /v1/messages           Anthropic Messages, stream or not
//   POST /v1beta/models/{model}:generateContent
//   POST /v1beta/models/{model}:streamGenerateContent   (?alt=sse: SSE;
//                               otherwise a JSON array of the chunks)
//
// Per request: a body that is not JSON, or not the API's shape, is a 400 in
// that API's error shape. The reply comes from mock::respond():
//   /fail CODE  HTTP CODE in the API's error shape: OpenAI (code
//               "mock_failure"), Anthropic, Google {"error":{code,message,status}};
//               no Retry-After header;
//   /slow MS    waits MS (steady_timer) before each SSE event, or once
//               before a non-stream answer (also before a /fail or a /cut);
//   /cut N      a stream sends its head and min(N, events - 1) events, so
//               never the terminating one ([DONE], message_stop, the
//               finishReason chunk), then closes the socket (~50 ms after the
//               last event, so that it is flushed); a non-stream request is
//               closed without any response.
// Streams go through Exchange::stream_sse; a stream that the client leaves
// is cancelled (the generation routes are watch_client).
// Ids are deterministic per process (a counter): chatcmpl-mock-N,
// call_mock_N, msg_mock_N, toolu_mock_N, mock-N; `created` is the real time.
#include "alou/http/router.hpp"

namespace alou::mock {

void add_upstream_routes(http::Router& router);

}  // namespace alou::mock
