#include "alou/mock/wire.hpp"

#include <nlohmann/json.hpp>

#include <cmath>
#include <cstring>
#include <optional>

namespace alou::mock::wire {
namespace {

using json = nlohmann::json;

constexpr int kDefaultDims = 8;
constexpr int kMaxDims = 4096;

Error invalid(std::string message) { return Error::bad_request(std::move(message), "invalid_request"); }

// Parses an untrusted body that must be a JSON object.
std::optional<Error> parse_object(std::string_view body, json& out) {
  out = json::parse(body, nullptr, false);
  if (out.is_discarded()) return Error::bad_request("the request body is not valid JSON", "invalid_json");
  if (!out.is_object()) return invalid("the request body must be a JSON object");
  return std::nullopt;
}

std::string string_or(const json& obj, const char* key, std::string fallback = {}) {
  const auto it = obj.find(key);
  if (it == obj.end() || !it->is_string()) return fallback;
  return it->get<std::string>();
}

bool bool_or(const json& obj, const char* key, bool fallback = false) {
  const auto it = obj.find(key);
  if (it == obj.end() || !it->is_boolean()) return fallback;
  return it->get<bool>();
}

// Several text parts of one message are joined with "\n".
void append_text(std::string& to, const std::string& text) {
  if (!to.empty()) to += '\n';
  to += text;
}

// The text of a content that is a string, null, or an array of
// {"type":"text","text":...} parts (other part types are ignored).
std::optional<std::string> text_of(const json& content) {
  if (content.is_null()) return std::string{};
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) return std::nullopt;
  std::string out;
  for (const auto& part : content) {
    if (!part.is_object()) return std::nullopt;
    if (string_or(part, "type") == "text") append_text(out, string_or(part, "text"));
  }
  return out;
}

// Tool arguments given as a JSON string (OpenAI) or an object (others).
std::string arguments_text(const json& args) {
  if (args.is_string()) return args.get<std::string>();
  if (args.is_null()) return "{}";
  return args.dump();
}

// Arguments text back into an object for formats that carry an object.
json arguments_object(const std::string& text) {
  auto j = json::parse(text, nullptr, false);
  return j.is_object() ? j : json::object();
}

std::int64_t positive_or_zero(const json& obj, const char* key) {
  const auto it = obj.find(key);
  return it != obj.end() && it->is_number_integer() ? std::max<std::int64_t>(0, it->get<std::int64_t>()) : 0;
}

std::string_view model_or_default(const std::string& m) { return m.empty() ? std::string_view{"mock"} : m; }

// ---------------------------------------------------------------- gemini helpers

const char* google_status(int status) {
  switch (status) {
    case 400: return "INVALID_ARGUMENT";
    case 401: return "UNAUTHENTICATED";
    case 403: return "PERMISSION_DENIED";
    case 404: return "NOT_FOUND";
    case 409: return "ABORTED";
    case 429: return "RESOURCE_EXHAUSTED";
    case 499: return "CANCELLED";
    case 501: return "NOT_IMPLEMENTED";
    case 503: return "UNAVAILABLE";
    case 504: return "DEADLINE_EXCEEDED";
    default: return status >= 500 ? "INTERNAL" : "FAILED_PRECONDITION";
  }
}

// A functionResponse.response as the text R of "tool NAME returned: R": an
// object with exactly one string member is that string, anything else its
// compact JSON.
std::string function_response_text(const json& response) {
  if (response.is_string()) return response.get<std::string>();
  if (response.is_object() && response.size() == 1 && response.begin()->is_string()) {
    return response.begin()->get<std::string>();
  }
  return response.dump();
}

json gemini_usage(const Reply& r) {
  return {{"promptTokenCount", r.prompt_tokens},
          {"candidatesTokenCount", r.completion_tokens},
          {"totalTokenCount", r.prompt_tokens + r.completion_tokens}};
}

json gemini_chunk(const Request& req, const Ids& ids, json parts, const Reply* last) {
  json candidate = {{"content", {{"role", "model"}, {"parts", std::move(parts)}}}, {"index", 0}};
  if (last) candidate["finishReason"] = last->truncated ? "MAX_TOKENS" : "STOP";
  json out = {{"candidates", json::array({std::move(candidate)})}};
  if (last) out["usageMetadata"] = gemini_usage(*last);
  out["modelVersion"] = model_or_default(req.model);
  out["responseId"] = ids.id;
  return out;
}

json gemini_call_part(const ToolCall& call) {
  return {{"functionCall", {{"name", call.name}, {"args", arguments_object(call.arguments)}}}};
}

// ---------------------------------------------------------------- embeddings helpers

std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 14695981039346656037ull;
  for (const char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 1099511628211ull;
  }
  return h;
}

std::uint64_t splitmix(std::uint64_t& state) {
  std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::string base64(const std::string& in) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((in.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < in.size(); i += 3) {
    const auto n = (static_cast<std::uint32_t>(static_cast<unsigned char>(in[i])) << 16) |
                   (static_cast<std::uint32_t>(static_cast<unsigned char>(in[i + 1])) << 8) |
                   static_cast<unsigned char>(in[i + 2]);
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += kAlphabet[(n >> 6) & 63];
    out += kAlphabet[n & 63];
  }
  if (const auto left = in.size() - i; left > 0) {
    auto n = static_cast<std::uint32_t>(static_cast<unsigned char>(in[i])) << 16;
    if (left == 2) n |= static_cast<std::uint32_t>(static_cast<unsigned char>(in[i + 1])) << 8;
    out += kAlphabet[(n >> 18) & 63];
    out += kAlphabet[(n >> 12) & 63];
    out += left == 2 ? kAlphabet[(n >> 6) & 63] : '=';
    out += '=';
  }
  return out;
}

// Little-endian float32 bytes, as OpenAI's encoding_format "base64".
std::string float32_base64(const std::vector<double>& v) {
  std::string bytes;
  bytes.reserve(v.size() * 4);
  for (const double d : v) {
    const auto f = static_cast<float>(d);
    std::uint32_t u = 0;
    std::memcpy(&u, &f, sizeof u);
    for (int k = 0; k < 4; ++k) bytes += static_cast<char>((u >> (8 * k)) & 0xFF);
  }
  return base64(bytes);
}

}  // namespace

// ---------------------------------------------------------------- requests

Result<Request> parse_openai_chat(std::string_view body) {
  json j;
  if (auto e = parse_object(body, j)) return *e;
  Request req;
  req.model = string_or(j, "model", "mock");
  req.stream = bool_or(j, "stream");
  if (const auto so = j.find("stream_options"); so != j.end() && so->is_object()) {
    req.include_usage = bool_or(*so, "include_usage");
  }
  req.max_tokens = positive_or_zero(j, "max_completion_tokens");
  if (req.max_tokens == 0) req.max_tokens = positive_or_zero(j, "max_tokens");
  const auto msgs = j.find("messages");
  if (msgs == j.end() || !msgs->is_array()) return invalid("'messages' must be an array");
  for (const auto& m : *msgs) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return invalid("each message must be an object with a string 'role'");
    }
    Message out;
    out.role = m["role"].get<std::string>();
    if (out.role == "developer") out.role = "system";
    const auto text = text_of(m.value("content", json()));
    if (!text) return invalid("a message 'content' must be a string, null or an array of parts");
    out.content = *text;
    if (out.role == "tool") {
      out.tool_call_id = string_or(m, "tool_call_id");
    } else if (out.role == "function") {  // the legacy function-calling shape
      out.role = "tool";
      out.name = string_or(m, "name");
    }
    if (const auto calls = m.find("tool_calls"); calls != m.end() && calls->is_array()) {
      for (const auto& c : *calls) {
        if (!c.is_object()) return invalid("'tool_calls' entries must be objects");
        const json fn = c.value("function", json::object());
        if (!fn.is_object()) return invalid("a tool call 'function' must be an object");
        out.tool_calls.push_back(ToolCall{.id = string_or(c, "id"),
                                          .name = string_or(fn, "name"),
                                          .arguments = arguments_text(fn.value("arguments", json()))});
      }
    }
    if (const auto fc = m.find("function_call"); fc != m.end() && fc->is_object()) {
      out.tool_calls.push_back(
          ToolCall{.id = {}, .name = string_or(*fc, "name"), .arguments = arguments_text(fc->value("arguments", json()))});
    }
    req.messages.push_back(std::move(out));
  }
  return req;
}

Result<Request> parse_anthropic(std::string_view body) {
  json j;
  if (auto e = parse_object(body, j)) return *e;
  Request req;
  req.model = string_or(j, "model", "mock");
  req.stream = bool_or(j, "stream");
  req.max_tokens = positive_or_zero(j, "max_tokens");
  if (const auto sys = j.find("system"); sys != j.end()) {
    const auto text = text_of(*sys);
    if (!text) return invalid("'system' must be a string or an array of text blocks");
    if (!text->empty()) req.messages.push_back(Message{.role = "system", .content = *text});
  }
  const auto msgs = j.find("messages");
  if (msgs == j.end() || !msgs->is_array()) return invalid("'messages' must be an array");
  for (const auto& m : *msgs) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return invalid("each message must be an object with a string 'role'");
    }
    Message out;
    out.role = m["role"].get<std::string>();
    const json content = m.value("content", json());
    if (content.is_string()) {
      out.content = content.get<std::string>();
      req.messages.push_back(std::move(out));
      continue;
    }
    if (!content.is_array()) return invalid("a message 'content' must be a string or an array of blocks");
    // Tool results come first (they answer the previous turn), then the text.
    for (const auto& block : content) {
      if (!block.is_object()) return invalid("content blocks must be objects");
      const auto type = string_or(block, "type");
      if (type == "text") {
        append_text(out.content, string_or(block, "text"));
      } else if (type == "tool_use") {
        out.tool_calls.push_back(ToolCall{.id = string_or(block, "id"),
                                          .name = string_or(block, "name"),
                                          .arguments = arguments_text(block.value("input", json::object()))});
      } else if (type == "tool_result") {
        const auto text = text_of(block.value("content", json()));
        if (!text) return invalid("a tool_result 'content' must be a string or an array of text blocks");
        req.messages.push_back(
            Message{.role = "tool", .content = *text, .tool_call_id = string_or(block, "tool_use_id")});
      }
    }
    if (!out.content.empty() || !out.tool_calls.empty() || out.role != "user") {
      req.messages.push_back(std::move(out));
    }
  }
  return req;
}

Result<Request> parse_gemini(std::string_view body, std::string_view model) {
  json j;
  if (auto e = parse_object(body, j)) return *e;
  Request req;
  req.model = std::string(model);
  if (const auto gc = j.find("generationConfig"); gc != j.end() && gc->is_object()) {
    req.max_tokens = positive_or_zero(*gc, "maxOutputTokens");
  }
  auto sys = j.find("systemInstruction");
  if (sys == j.end()) sys = j.find("system_instruction");
  if (sys != j.end() && sys->is_object()) {
    std::string text;
    for (const auto& p : sys->value("parts", json::array())) {
      if (p.is_object()) append_text(text, string_or(p, "text"));
    }
    if (!text.empty()) req.messages.push_back(Message{.role = "system", .content = std::move(text)});
  }
  const auto contents = j.find("contents");
  if (contents == j.end() || !contents->is_array()) return invalid("'contents' must be an array");
  for (const auto& c : *contents) {
    if (!c.is_object()) return invalid("each content must be an object");
    const auto parts = c.find("parts");
    if (parts == c.end() || !parts->is_array()) return invalid("each content needs a 'parts' array");
    Message out;
    out.role = string_or(c, "role", "user") == "model" ? "assistant" : "user";
    for (const auto& p : *parts) {
      if (!p.is_object()) return invalid("parts must be objects");
      if (const auto t = p.find("text"); t != p.end() && t->is_string()) {
        append_text(out.content, t->get<std::string>());
      } else if (const auto fc = p.find("functionCall"); fc != p.end() && fc->is_object()) {
        out.tool_calls.push_back(ToolCall{.id = string_or(*fc, "id"),
                                          .name = string_or(*fc, "name"),
                                          .arguments = arguments_text(fc->value("args", json::object()))});
      } else if (const auto fr = p.find("functionResponse"); fr != p.end() && fr->is_object()) {
        req.messages.push_back(Message{.role = "tool",
                                       .content = function_response_text(fr->value("response", json())),
                                       .tool_call_id = string_or(*fr, "id"),
                                       .name = string_or(*fr, "name")});
      }
    }
    if (!out.content.empty() || !out.tool_calls.empty()) req.messages.push_back(std::move(out));
  }
  return req;
}

// ---------------------------------------------------------------- OpenAI

std::string openai_completion(const Request& req, const Reply& reply, const Ids& ids) {
  json message = {{"role", "assistant"}};
  if (reply.tool_call) {
    message["content"] = nullptr;
    message["tool_calls"] = json::array({{{"id", ids.call_id},
                                          {"type", "function"},
                                          {"function",
                                           {{"name", reply.tool_call->name},
                                            {"arguments", reply.tool_call->arguments}}}}});
  } else {
    message["content"] = reply.text;
  }
  message["refusal"] = nullptr;
  const json body = {
      {"id", ids.id},
      {"object", "chat.completion"},
      {"created", ids.created},
      {"model", model_or_default(req.model)},
      {"choices", json::array({{{"index", 0},
                                {"message", std::move(message)},
                                {"logprobs", nullptr},
                                {"finish_reason", reply.tool_call ? "tool_calls" : (reply.truncated ? "length" : "stop")}}})},
      {"usage",
       {{"prompt_tokens", reply.prompt_tokens},
        {"completion_tokens", reply.completion_tokens},
        {"total_tokens", reply.prompt_tokens + reply.completion_tokens}}}};
  return body.dump();
}

std::vector<Event> openai_stream(const Request& req, const Reply& reply, const Ids& ids) {
  std::vector<Event> out;
  const auto chunk = [&](json delta, const char* finish) {
    json c = {{"id", ids.id},
              {"object", "chat.completion.chunk"},
              {"created", ids.created},
              {"model", model_or_default(req.model)},
              {"choices", json::array({{{"index", 0},
                                        {"delta", std::move(delta)},
                                        {"logprobs", nullptr},
                                        {"finish_reason", finish ? json(finish) : json(nullptr)}}})}};
    if (req.include_usage) c["usage"] = nullptr;
    out.push_back(Event{.name = {}, .data = c.dump()});
  };
  if (reply.tool_call) {
    chunk({{"role", "assistant"},
           {"content", nullptr},
           {"tool_calls", json::array({{{"index", 0},
                                        {"id", ids.call_id},
                                        {"type", "function"},
                                        {"function", {{"name", reply.tool_call->name}, {"arguments", ""}}}}})}},
          nullptr);
    for (const auto& p : reply.pieces) {
      chunk({{"tool_calls", json::array({{{"index", 0}, {"function", {{"arguments", p}}}}})}}, nullptr);
    }
    chunk(json::object(), "tool_calls");
  } else {
    chunk({{"role", "assistant"}, {"content", ""}}, nullptr);
    for (const auto& p : reply.pieces) chunk({{"content", p}}, nullptr);
    chunk(json::object(), reply.truncated ? "length" : "stop");
  }
  if (req.include_usage) {
    const json c = {{"id", ids.id},
                    {"object", "chat.completion.chunk"},
                    {"created", ids.created},
                    {"model", model_or_default(req.model)},
                    {"choices", json::array()},
                    {"usage",
                     {{"prompt_tokens", reply.prompt_tokens},
                      {"completion_tokens", reply.completion_tokens},
                      {"total_tokens", reply.prompt_tokens + reply.completion_tokens}}}};
    out.push_back(Event{.name = {}, .data = c.dump()});
  }
  out.push_back(Event{.name = {}, .data = "[DONE]"});
  return out;
}

// ---------------------------------------------------------------- Anthropic

std::string anthropic_message(const Request& req, const Reply& reply, const Ids& ids) {
  json block;
  if (reply.tool_call) {
    block = {{"type", "tool_use"},
             {"id", ids.call_id},
             {"name", reply.tool_call->name},
             {"input", arguments_object(reply.tool_call->arguments)}};
  } else {
    block = {{"type", "text"}, {"text", reply.text}};
  }
  const json body = {{"id", ids.id},
                     {"type", "message"},
                     {"role", "assistant"},
                     {"model", model_or_default(req.model)},
                     {"content", json::array({std::move(block)})},
                     {"stop_reason", reply.tool_call ? "tool_use" : (reply.truncated ? "max_tokens" : "end_turn")},
                     {"stop_sequence", nullptr},
                     {"usage", {{"input_tokens", reply.prompt_tokens}, {"output_tokens", reply.completion_tokens}}}};
  return body.dump();
}

std::vector<Event> anthropic_stream(const Request& req, const Reply& reply, const Ids& ids) {
  std::vector<Event> out;
  const auto add = [&](const char* name, const json& data) { out.push_back(Event{.name = name, .data = data.dump()}); };
  add("message_start", {{"type", "message_start"},
                        {"message",
                         {{"id", ids.id},
                          {"type", "message"},
                          {"role", "assistant"},
                          {"model", model_or_default(req.model)},
                          {"content", json::array()},
                          {"stop_reason", nullptr},
                          {"stop_sequence", nullptr},
                          {"usage", {{"input_tokens", reply.prompt_tokens}, {"output_tokens", 0}}}}}});
  json block = reply.tool_call ? json{{"type", "tool_use"},
                                      {"id", ids.call_id},
                                      {"name", reply.tool_call->name},
                                      {"input", json::object()}}
                               : json{{"type", "text"}, {"text", ""}};
  add("content_block_start", {{"type", "content_block_start"}, {"index", 0}, {"content_block", std::move(block)}});
  for (const auto& p : reply.pieces) {
    const json delta = reply.tool_call ? json{{"type", "input_json_delta"}, {"partial_json", p}}
                                       : json{{"type", "text_delta"}, {"text", p}};
    add("content_block_delta", {{"type", "content_block_delta"}, {"index", 0}, {"delta", delta}});
  }
  add("content_block_stop", {{"type", "content_block_stop"}, {"index", 0}});
  add("message_delta", {{"type", "message_delta"},
                        {"delta", {{"stop_reason", reply.tool_call ? "tool_use" : (reply.truncated ? "max_tokens" : "end_turn")},
                                   {"stop_sequence", nullptr}}},
                        {"usage", {{"output_tokens", reply.completion_tokens}}}});
  add("message_stop", {{"type", "message_stop"}});
  return out;
}

// ---------------------------------------------------------------- Gemini

std::string gemini_response(const Request& req, const Reply& reply, const Ids& ids) {
  json parts = json::array();
  if (reply.tool_call) {
    parts.push_back(gemini_call_part(*reply.tool_call));
  } else {
    parts.push_back({{"text", reply.text}});
  }
  return gemini_chunk(req, ids, std::move(parts), &reply).dump();
}

std::vector<Event> gemini_stream(const Request& req, const Reply& reply, const Ids& ids) {
  std::vector<Event> out;
  if (reply.tool_call) {
    const json parts = json::array({gemini_call_part(*reply.tool_call)});
    out.push_back(Event{.name = {}, .data = gemini_chunk(req, ids, parts, &reply).dump()});
    return out;
  }
  for (std::size_t i = 0; i < reply.pieces.size(); ++i) {
    const bool last = i + 1 == reply.pieces.size();
    const json parts = json::array({{{"text", reply.pieces[i]}}});
    out.push_back(Event{.name = {}, .data = gemini_chunk(req, ids, parts, last ? &reply : nullptr).dump()});
  }
  return out;
}

std::string gemini_error(int status, std::string_view message) {
  const json body = {{"error", {{"code", status}, {"message", message}, {"status", google_status(status)}}}};
  return body.dump();
}

// ---------------------------------------------------------------- embeddings, models

std::vector<double> embedding(std::string_view input, int dims) {
  std::uint64_t state = fnv1a(input);
  std::vector<double> v(static_cast<std::size_t>(std::max(dims, 1)));
  double norm = 0;
  for (auto& x : v) {
    x = static_cast<double>(splitmix(state) >> 11) * 0x1.0p-52 - 1.0;  // [-1, 1)
    norm += x * x;
  }
  norm = std::sqrt(norm);
  for (auto& x : v) {
    x = norm > 0 ? x / norm : 0.0;
    x = std::round(x * 1e6) / 1e6;
  }
  return v;
}

Result<std::string> openai_embeddings(std::string_view body) {
  json j;
  if (auto e = parse_object(body, j)) return *e;
  const auto model = string_or(j, "model", "mock-embedding");
  int dims = kDefaultDims;
  if (const auto d = j.find("dimensions"); d != j.end()) {
    if (!d->is_number_integer() || d->get<std::int64_t>() < 1 || d->get<std::int64_t>() > kMaxDims) {
      return invalid("'dimensions' must be an integer 1..4096");
    }
    dims = d->get<int>();
  }
  const auto format = string_or(j, "encoding_format", "float");
  if (format != "float" && format != "base64") return invalid("'encoding_format' must be \"float\" or \"base64\"");

  // Each input as the text hashed for its vector, and its token count.
  std::vector<std::string> keys;
  std::int64_t chars = 0;
  std::int64_t token_ids = 0;
  const auto is_ids = [](const json& a) {
    return a.is_array() && !a.empty() &&
           std::all_of(a.begin(), a.end(), [](const json& x) { return x.is_number_integer(); });
  };
  const auto input = j.find("input");
  if (input == j.end()) return invalid("'input' is required");
  if (input->is_string()) {
    keys.push_back(input->get<std::string>());
    chars += count_chars(keys.back());
  } else if (is_ids(*input)) {
    keys.push_back(input->dump());
    token_ids += static_cast<std::int64_t>(input->size());
  } else if (input->is_array() && !input->empty()) {
    for (const auto& x : *input) {
      if (x.is_string()) {
        keys.push_back(x.get<std::string>());
        chars += count_chars(keys.back());
      } else if (is_ids(x)) {
        keys.push_back(x.dump());
        token_ids += static_cast<std::int64_t>(x.size());
      } else {
        return invalid("'input' must be a string, an array of strings or token arrays");
      }
    }
  } else {
    return invalid("'input' must be a non-empty string or array");
  }

  json data = json::array();
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const auto v = embedding(keys[i], dims);
    json e = {{"object", "embedding"}, {"index", i}};
    if (format == "base64") {
      e["embedding"] = float32_base64(v);
    } else {
      e["embedding"] = v;
    }
    data.push_back(std::move(e));
  }
  const std::int64_t prompt = tokens_for_chars(chars) + token_ids;
  const json out = {{"object", "list"},
                    {"data", std::move(data)},
                    {"model", model},
                    {"usage", {{"prompt_tokens", prompt}, {"total_tokens", prompt}}}};
  return out.dump();
}

Result<std::string> gemini_embeddings(std::string_view body) {
  json j;
  if (auto e = parse_object(body, j)) return *e;
  const auto requests = j.find("requests");
  if (requests == j.end() || !requests->is_array() || requests->empty()) {
    return invalid("'requests' must be a non-empty array");
  }
  json embeddings = json::array();
  for (const auto& r : *requests) {
    if (!r.is_object() || !r.contains("content") || !r["content"].is_object()) {
      return invalid("each request needs a 'content' object");
    }
    int dims = kDefaultDims;
    if (const auto d = r.find("outputDimensionality"); d != r.end()) {
      if (!d->is_number_integer() || d->get<std::int64_t>() < 1 || d->get<std::int64_t>() > kMaxDims) {
        return invalid("'outputDimensionality' must be an integer 1..4096");
      }
      dims = d->get<int>();
    }
    std::string text;
    const auto parts = r["content"].find("parts");
    if (parts == r["content"].end() || !parts->is_array()) return invalid("'content.parts' must be an array");
    for (const auto& p : *parts) {
      if (!p.is_object() || !p.contains("text") || !p["text"].is_string()) return invalid("parts must be text parts");
      text += p["text"].get<std::string>();
    }
    embeddings.push_back({{"values", embedding(text, dims)}});
  }
  const json out = {{"embeddings", std::move(embeddings)}};
  return out.dump();
}

std::string openai_models() {
  json data = json::array();
  for (const char* id : {"mock", "mock-embedding"}) {
    data.push_back({{"id", id}, {"object", "model"}, {"created", 0}, {"owned_by", "alou-mock"}});
  }
  const json out = {{"object", "list"}, {"data", std::move(data)}};
  return out.dump();
}

}  // namespace alou::mock::wire
