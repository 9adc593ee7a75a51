#include "anthropic.hpp"

#include <optional>

namespace alou::gateway::anthropic {
namespace {

using nlohmann::json;

// nlohmann::json converts to anything: build the result explicitly.
Result<json> ok(json j) { return Result<json>(boost::system::in_place_value, std::move(j)); }

Error invalid(const std::string& message) { return Error::bad_request(message, "invalid_request"); }

// A string, or an array of text blocks, as one string (system prompts and
// tool_result contents).
Result<std::string> text_of(const json& v, const char* what) {
  if (v.is_null()) return std::string();
  if (v.is_string()) return v.get<std::string>();
  if (!v.is_array()) return invalid(std::string(what) + " must be a string or an array of text blocks");
  std::string out;
  for (const auto& b : v) {
    if (!b.is_object() || b.value("type", "") != "text" || !b.contains("text") || !b["text"].is_string()) {
      return invalid(std::string(what) + " must contain text blocks only");
    }
    if (!out.empty()) out += '\n';
    out += b["text"].get<std::string>();
  }
  return out;
}

Result<json> image_part(const json& b) {
  const auto src = b.find("source");
  if (src == b.end() || !src->is_object()) return invalid("an image block needs a source object");
  const std::string type = src->value("type", "");
  if (type == "base64") {
    const auto media = src->find("media_type");
    const auto data = src->find("data");
    if (media == src->end() || !media->is_string() || data == src->end() || !data->is_string()) {
      return invalid("a base64 image source needs media_type and data strings");
    }
    json part = {{"type", "image_url"},
                 {"image_url", {{"url", "data:" + media->get<std::string>() + ";base64," + data->get<std::string>()}}}};
    return ok(std::move(part));
  }
  if (type == "url" && src->contains("url") && (*src)["url"].is_string()) {
    json part = {{"type", "image_url"}, {"image_url", {{"url", (*src)["url"]}}}};
    return ok(std::move(part));
  }
  return invalid("an image source must be {type: base64, media_type, data} or {type: url, url}");
}

// One Anthropic message -> one or more OpenAI messages appended to `out`.
std::optional<Error> add_message(const json& m, json& out) {
  if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
    return invalid("each message must be an object with a string role");
  }
  const std::string role = m["role"].get<std::string>();
  if (role != "user" && role != "assistant") return invalid("a message role must be \"user\" or \"assistant\"");
  const auto content = m.find("content");
  if (content == m.end()) return invalid("each message needs a content");
  if (content->is_string()) {
    out.push_back({{"role", role}, {"content", *content}});
    return std::nullopt;
  }
  if (!content->is_array()) return invalid("a message content must be a string or an array of content blocks");

  if (role == "assistant") {
    std::string text;
    json calls = json::array();
    for (const auto& b : *content) {
      const std::string type = b.is_object() ? b.value("type", "") : "";
      if (type == "text" && b.contains("text") && b["text"].is_string()) {
        text += b["text"].get<std::string>();
      } else if (type == "tool_use") {
        if (!b.contains("id") || !b["id"].is_string() || !b.contains("name") || !b["name"].is_string()) {
          return invalid("a tool_use block needs string id and name");
        }
        const json input = b.contains("input") ? b["input"] : json::object();
        calls.push_back({{"id", b["id"]},
                         {"type", "function"},
                         {"function", {{"name", b["name"]}, {"arguments", input.dump()}}}});
      } else if (type == "thinking" || type == "redacted_thinking") {
        continue;  // not replayable upstream
      } else {
        return invalid("unsupported content block type \"" + type + "\" in an assistant message");
      }
    }
    json msg = {{"role", "assistant"}};
    msg["content"] = text.empty() && !calls.empty() ? json(nullptr) : json(text);
    if (!calls.empty()) msg["tool_calls"] = std::move(calls);
    out.push_back(std::move(msg));
    return std::nullopt;
  }

  // user: tool results become "tool" messages (which OpenAI wants right
  // after the assistant's tool_calls), the rest one user message.
  json parts = json::array();
  bool text_only = true;
  for (const auto& b : *content) {
    const std::string type = b.is_object() ? b.value("type", "") : "";
    if (type == "text" && b.contains("text") && b["text"].is_string()) {
      parts.push_back({{"type", "text"}, {"text", b["text"]}});
    } else if (type == "image") {
      auto part = image_part(b);
      if (!part) return part.error();
      parts.push_back(std::move(*part));
      text_only = false;
    } else if (type == "tool_result") {
      if (!b.contains("tool_use_id") || !b["tool_use_id"].is_string()) {
        return invalid("a tool_result block needs a string tool_use_id");
      }
      auto text = text_of(b.value("content", json()), "a tool_result content");
      if (!text) return text.error();
      out.push_back({{"role", "tool"}, {"tool_call_id", b["tool_use_id"]}, {"content", std::move(*text)}});
    } else {
      return invalid("unsupported content block type \"" + type + "\" in a user message");
    }
  }
  if (parts.empty()) return std::nullopt;
  if (text_only && parts.size() == 1) {
    out.push_back({{"role", "user"}, {"content", parts[0]["text"]}});
  } else {
    out.push_back({{"role", "user"}, {"content", std::move(parts)}});
  }
  return std::nullopt;
}

// Anthropic message ids start with msg_; an upstream id that already does
// (provider kind anthropic) is kept as it is.
std::string message_id(const std::string& upstream_id) {
  return upstream_id.rfind("msg_", 0) == 0 ? upstream_id : "msg_" + upstream_id;
}

json parsed_arguments(const json& arguments) {
  if (arguments.is_object()) return arguments;
  if (!arguments.is_string()) return json::object();
  auto j = json::parse(arguments.get<std::string>(), nullptr, false);
  return j.is_object() ? j : json::object();
}

}  // namespace

const char* stop_reason(const std::string& finish_reason) {
  if (finish_reason == "length") return "max_tokens";
  if (finish_reason == "tool_calls" || finish_reason == "function_call") return "tool_use";
  return "end_turn";
}

Result<json> to_openai_request(const json& body) {
  if (!body.contains("model") || !body["model"].is_string()) return invalid("model: Field required");
  const auto msgs = body.find("messages");
  if (msgs == body.end() || !msgs->is_array() || msgs->empty()) {
    return invalid("messages: must be a non-empty array");
  }
  const auto max_tokens = body.find("max_tokens");
  if (max_tokens == body.end() || max_tokens->is_null()) return invalid("max_tokens: Field required");
  if (!max_tokens->is_number_integer() || max_tokens->get<std::int64_t>() < 1) {
    return invalid("max_tokens: must be a positive integer");
  }
  if (body.contains("stream") && !body["stream"].is_boolean() && !body["stream"].is_null()) {
    return invalid("stream: must be a boolean");
  }

  json out = {{"model", body["model"]}, {"max_tokens", *max_tokens}};
  json messages = json::array();
  if (const auto sys = body.find("system"); sys != body.end()) {
    auto text = text_of(*sys, "system");
    if (!text) return text.error();
    if (!text->empty()) messages.push_back({{"role", "system"}, {"content", std::move(*text)}});
  }
  for (const auto& m : *msgs) {
    if (auto e = add_message(m, messages)) return *e;
  }
  out["messages"] = std::move(messages);

  for (const char* k : {"temperature", "top_p"}) {
    if (const auto it = body.find(k); it != body.end() && !it->is_null()) {
      if (!it->is_number()) return invalid(std::string(k) + ": must be a number");
      out[k] = *it;
    }
  }
  if (const auto it = body.find("stop_sequences"); it != body.end() && !it->is_null()) {
    if (!it->is_array()) return invalid("stop_sequences: must be an array of strings");
    for (const auto& s : *it) {
      if (!s.is_string()) return invalid("stop_sequences: must be an array of strings");
    }
    if (!it->empty()) out["stop"] = *it;
  }
  if (const auto it = body.find("tools"); it != body.end() && !it->is_null()) {
    if (!it->is_array()) return invalid("tools: must be an array");
    json tools = json::array();
    for (const auto& t : *it) {
      if (!t.is_object() || !t.contains("name") || !t["name"].is_string()) {
        return invalid("tools: each tool needs a string name");
      }
      if (t.contains("type") && t["type"].is_string() && t["type"] != "custom") {
        return invalid("tools: tool type \"" + t["type"].get<std::string>() + "\" is not supported");
      }
      json fn = {{"name", t["name"]}};
      if (t.contains("description") && t["description"].is_string()) fn["description"] = t["description"];
      fn["parameters"] = t.contains("input_schema") && t["input_schema"].is_object()
                             ? t["input_schema"]
                             : json{{"type", "object"}, {"properties", json::object()}};
      tools.push_back({{"type", "function"}, {"function", std::move(fn)}});
    }
    if (!tools.empty()) out["tools"] = std::move(tools);
  }
  if (const auto it = body.find("tool_choice"); it != body.end() && !it->is_null()) {
    if (!it->is_object() || !it->contains("type") || !(*it)["type"].is_string()) {
      return invalid("tool_choice: must be an object with a type");
    }
    const std::string type = (*it)["type"].get<std::string>();
    if (type == "auto") {
      out["tool_choice"] = "auto";
    } else if (type == "any") {
      out["tool_choice"] = "required";
    } else if (type == "none") {
      out["tool_choice"] = "none";
    } else if (type == "tool" && it->contains("name") && (*it)["name"].is_string()) {
      out["tool_choice"] = {{"type", "function"}, {"function", {{"name", (*it)["name"]}}}};
    } else {
      return invalid("tool_choice: type must be auto, any, none or tool (with a name)");
    }
    if (it->value("disable_parallel_tool_use", false) && out.contains("tools")) out["parallel_tool_calls"] = false;
  }
  out["stream"] = body.contains("stream") && body["stream"].is_boolean() && body["stream"].get<bool>();
  return ok(std::move(out));
}

std::string to_anthropic_message(const std::string& completion, const std::string& model) {
  const json j = json::parse(completion, nullptr, false);
  json content = json::array();
  std::string finish;
  std::string id;
  std::int64_t in = 0;
  std::int64_t out = 0;
  if (j.is_object()) {
    if (j.contains("id") && j["id"].is_string()) id = j["id"].get<std::string>();
    if (j.contains("choices") && j["choices"].is_array() && !j["choices"].empty() && j["choices"][0].is_object()) {
      const json& c = j["choices"][0];
      if (c.contains("finish_reason") && c["finish_reason"].is_string()) finish = c["finish_reason"];
      const json msg = c.value("message", json::object());
      if (msg.is_object()) {
        if (msg.contains("content") && msg["content"].is_string() && !msg["content"].get<std::string>().empty()) {
          content.push_back({{"type", "text"}, {"text", msg["content"]}});
        }
        if (msg.contains("tool_calls") && msg["tool_calls"].is_array()) {
          for (const auto& call : msg["tool_calls"]) {
            if (!call.is_object()) continue;
            const json fn = call.value("function", json::object());
            content.push_back({{"type", "tool_use"},
                               {"id", call.value("id", "")},
                               {"name", fn.is_object() ? fn.value("name", "") : ""},
                               {"input", fn.is_object() ? parsed_arguments(fn.value("arguments", json())) : json::object()}});
          }
        }
      }
    }
    if (j.contains("usage") && j["usage"].is_object()) {
      in = j["usage"].value("prompt_tokens", std::int64_t{0});
      out = j["usage"].value("completion_tokens", std::int64_t{0});
    }
  }
  const json body = {{"id", message_id(id)},
                     {"type", "message"},
                     {"role", "assistant"},
                     {"model", model},
                     {"content", std::move(content)},
                     {"stop_reason", stop_reason(finish)},
                     {"stop_sequence", nullptr},
                     {"usage", {{"input_tokens", in}, {"output_tokens", out}}}};
  return body.dump();
}

void StreamRelay::start(const std::string& upstream_id, Events& out) {
  started_ = true;
  out.emplace_back("message_start", json{{"type", "message_start"},
                                         {"message",
                                          {{"id", message_id(upstream_id)},
                                           {"type", "message"},
                                           {"role", "assistant"},
                                           {"model", model_},
                                           {"content", json::array()},
                                           {"stop_reason", nullptr},
                                           {"stop_sequence", nullptr},
                                           {"usage", {{"input_tokens", 0}, {"output_tokens", 0}}}}}});
}

void StreamRelay::close_block(Events& out) {
  if (open_ == Open::kNone) return;
  out.emplace_back("content_block_stop", json{{"type", "content_block_stop"}, {"index", block_}});
  open_ = Open::kNone;
}

void StreamRelay::on_chunk(const json& chunk, Events& out) {
  if (!chunk.is_object()) return;
  if (!started_) start(chunk.contains("id") && chunk["id"].is_string() ? chunk["id"].get<std::string>() : "", out);
  if (chunk.contains("usage") && chunk["usage"].is_object()) {
    input_tokens_ = chunk["usage"].value("prompt_tokens", input_tokens_);
    output_tokens_ = chunk["usage"].value("completion_tokens", output_tokens_);
  }
  if (!chunk.contains("choices") || !chunk["choices"].is_array()) return;
  for (const auto& c : chunk["choices"]) {
    if (!c.is_object() || c.value("index", 0) != 0) continue;
    if (c.contains("finish_reason") && c["finish_reason"].is_string()) finish_ = c["finish_reason"];
    if (!c.contains("delta") || !c["delta"].is_object()) continue;
    const json& delta = c["delta"];
    if (delta.contains("content") && delta["content"].is_string() && !delta["content"].get<std::string>().empty()) {
      if (open_ != Open::kText) {
        close_block(out);
        open_ = Open::kText;
        ++block_;
        out.emplace_back("content_block_start", json{{"type", "content_block_start"},
                                                     {"index", block_},
                                                     {"content_block", {{"type", "text"}, {"text", ""}}}});
      }
      out.emplace_back("content_block_delta",
                       json{{"type", "content_block_delta"},
                            {"index", block_},
                            {"delta", {{"type", "text_delta"}, {"text", delta["content"]}}}});
    }
    if (delta.contains("tool_calls") && delta["tool_calls"].is_array()) {
      for (const auto& tc : delta["tool_calls"]) {
        if (!tc.is_object()) continue;
        const int index = tc.value("index", 0);
        const json fn = tc.contains("function") && tc["function"].is_object() ? tc["function"] : json::object();
        if (open_ != Open::kTool || index != tool_index_) {
          close_block(out);
          open_ = Open::kTool;
          tool_index_ = index;
          ++block_;
          out.emplace_back("content_block_start",
                           json{{"type", "content_block_start"},
                                {"index", block_},
                                {"content_block",
                                 {{"type", "tool_use"},
                                  {"id", tc.contains("id") && tc["id"].is_string() ? tc["id"].get<std::string>() : ""},
                                  {"name", fn.contains("name") && fn["name"].is_string() ? fn["name"].get<std::string>() : ""},
                                  {"input", json::object()}}}});
        }
        if (fn.contains("arguments") && fn["arguments"].is_string() && !fn["arguments"].get<std::string>().empty()) {
          out.emplace_back("content_block_delta",
                           json{{"type", "content_block_delta"},
                                {"index", block_},
                                {"delta", {{"type", "input_json_delta"}, {"partial_json", fn["arguments"]}}}});
        }
      }
    }
  }
}

void StreamRelay::finish(Events& out) {
  if (!started_) start("", out);
  close_block(out);
  out.emplace_back("message_delta",
                   json{{"type", "message_delta"},
                        {"delta", {{"stop_reason", stop_reason(finish_)}, {"stop_sequence", nullptr}}},
                        {"usage", {{"input_tokens", input_tokens_}, {"output_tokens", output_tokens_}}}});
  out.emplace_back("message_stop", json{{"type", "message_stop"}});
}

}  // namespace alou::gateway::anthropic
