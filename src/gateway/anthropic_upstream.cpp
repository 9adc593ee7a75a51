#include "anthropic_upstream.hpp"

#include <algorithm>
#include <optional>
#include <utility>
#include <vector>

namespace alou::gateway::anthropic {
namespace {

using nlohmann::json;

Result<json> ok(json j) { return Result<json>(boost::system::in_place_value, std::move(j)); }

Error invalid(const std::string& message) { return Error::bad_request(message, "invalid_request"); }


// image_url.url -> an Anthropic image source: data: URLs as base64, others
// as url sources.
Result<json> image_block(const json& part) {
  const json iu = part.value("image_url", json());
  const json url = iu.is_object() ? iu.value("url", json()) : iu;
  if (!url.is_string()) return invalid("an image_url part needs image_url.url");
  const std::string u = url.get<std::string>();
  if (u.rfind("data:", 0) == 0) {
    const auto semi = u.find(";base64,");
    if (semi == std::string::npos) return invalid("an image data: URL must be base64 (data:MIME;base64,...)");
    json block = {{"type", "image"},
                  {"source", {{"type", "base64"}, {"media_type", u.substr(5, semi - 5)}, {"data", u.substr(semi + 8)}}}};
    return ok(std::move(block));
  }
  if (u.rfind("https://", 0) == 0 || u.rfind("http://", 0) == 0) {
    json block = {{"type", "image"}, {"source", {{"type", "url"}, {"url", u}}}};
    return ok(std::move(block));
  }
  return invalid("an image URL must be a data: or http(s) URL");
}

// A user message's content -> Anthropic content blocks.
Result<json> user_blocks(const json& content) {
  json blocks = json::array();
  if (content.is_string()) {
    if (!content.get<std::string>().empty()) blocks.push_back({{"type", "text"}, {"text", content}});
    return ok(std::move(blocks));
  }
  if (!content.is_array()) return invalid("a user message content must be a string or an array of parts");
  for (const auto& p : content) {
    const std::string type = p.is_object() ? p.value("type", "") : "";
    if (type == "text" && p.contains("text") && p["text"].is_string()) {
      if (!p["text"].get<std::string>().empty()) blocks.push_back({{"type", "text"}, {"text", p["text"]}});
    } else if (type == "image_url") {
      auto b = image_block(p);
      if (!b) return b.error();
      blocks.push_back(std::move(*b));
    } else {
      return invalid("content part type \"" + type + "\" is not supported by Anthropic providers");
    }
  }
  return ok(std::move(blocks));
}

Result<json> assistant_blocks(const json& m) {
  json blocks = json::array();
  const json content = m.value("content", json());
  if (content.is_string()) {
    if (!content.get<std::string>().empty()) blocks.push_back({{"type", "text"}, {"text", content}});
  } else if (content.is_array()) {
    for (const auto& p : content) {
      const std::string type = p.is_object() ? p.value("type", "") : "";
      if (type == "text" && p.contains("text") && p["text"].is_string()) {
        if (!p["text"].get<std::string>().empty()) blocks.push_back({{"type", "text"}, {"text", p["text"]}});
      } else if (type != "refusal") {
        return invalid("content part type \"" + type + "\" is not supported in an assistant message");
      }
    }
  } else if (!content.is_null()) {
    return invalid("an assistant message content must be a string, null or an array of parts");
  }
  if (const auto calls = m.find("tool_calls"); calls != m.end() && !calls->is_null()) {
    if (!calls->is_array()) return invalid("tool_calls must be an array");
    for (const auto& c : *calls) {
      const json fn = c.is_object() ? c.value("function", json()) : json();
      if (!fn.is_object() || !fn.contains("name") || !fn["name"].is_string() || !c.contains("id") ||
          !c["id"].is_string()) {
        return invalid("each tool call needs a string id and function.name");
      }
      json input = json::object();
      if (const auto a = fn.find("arguments"); a != fn.end() && a->is_string() && !a->get<std::string>().empty()) {
        input = json::parse(a->get<std::string>(), nullptr, false);
        if (!input.is_object()) {
          return invalid("the arguments of tool call \"" + c["id"].get<std::string>() + "\" are not a JSON object");
        }
      } else if (a != fn.end() && a->is_object()) {
        input = *a;
      }
      blocks.push_back({{"type", "tool_use"}, {"id", c["id"]}, {"name", fn["name"]}, {"input", std::move(input)}});
    }
  }
  return ok(std::move(blocks));
}

// The tools of an OpenAI request -> Anthropic tools.
Result<json> tools_of(const json& tools) {
  if (!tools.is_array()) return invalid("tools must be an array");
  json out = json::array();
  for (const auto& t : tools) {
    const json fn = t.is_object() ? t.value("function", json()) : json();
    if (!t.is_object() || t.value("type", "function") != "function" || !fn.is_object() || !fn.contains("name") ||
        !fn["name"].is_string()) {
      return invalid("each tool must be {type: \"function\", function: {name, description?, parameters?}}");
    }
    json tool = {{"name", fn["name"]}};
    if (fn.contains("description") && fn["description"].is_string()) tool["description"] = fn["description"];
    tool["input_schema"] = fn.contains("parameters") && fn["parameters"].is_object()
                               ? fn["parameters"]
                               : json{{"type", "object"}, {"properties", json::object()}};
    out.push_back(std::move(tool));
  }
  return ok(std::move(out));
}

Result<json> tool_choice_of(const json& choice) {
  if (choice.is_string()) {
    const std::string c = choice.get<std::string>();
    if (c == "auto") return ok(json{{"type", "auto"}});
    if (c == "required") return ok(json{{"type", "any"}});
    if (c == "none") return ok(json{{"type", "none"}});
  } else if (choice.is_object() && choice.value("type", "") == "function" && choice.contains("function") &&
             choice["function"].is_object() && choice["function"].contains("name") &&
             choice["function"]["name"].is_string()) {
    return ok(json{{"type", "tool"}, {"name", choice["function"]["name"]}});
  }
  return invalid("tool_choice must be \"auto\", \"required\", \"none\" or {type: \"function\", function: {name}}");
}

}  // namespace

Result<json> to_messages_request(const json& in, const UpstreamOptions& options) {
  if (!in.is_object() || !in.contains("model") || !in["model"].is_string()) return invalid("model is required");
  const auto msgs = in.find("messages");
  if (msgs == in.end() || !msgs->is_array()) return invalid("messages must be an array");
  if (const auto n = in.find("n"); n != in.end() && !n->is_null() && !(n->is_number_integer() && n->get<int>() == 1)) {
    return invalid("n other than 1 is not supported by Anthropic providers");
  }

  std::string system;
  // (role, blocks) in order, consecutive same roles merged below.
  std::vector<std::pair<std::string, json>> turns;
  const auto add = [&turns](const std::string& role, json blocks) {
    if (blocks.empty()) return;
    if (!turns.empty() && turns.back().first == role) {
      for (auto& b : blocks) turns.back().second.push_back(std::move(b));
    } else {
      turns.emplace_back(role, std::move(blocks));
    }
  };
  for (const auto& m : *msgs) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      return invalid("each message must be an object with a string role");
    }
    const std::string role = m["role"].get<std::string>();
    if (role == "system" || role == "developer") {
      const auto text = plain_text(m.value("content", json()));
      if (!text) return invalid("a system message content must be text");
      if (text->empty()) continue;
      if (!system.empty()) system += "\n\n";
      system += *text;
    } else if (role == "user") {
      auto blocks = user_blocks(m.value("content", json()));
      if (!blocks) return blocks.error();
      add("user", std::move(*blocks));
    } else if (role == "assistant") {
      auto blocks = assistant_blocks(m);
      if (!blocks) return blocks.error();
      add("assistant", std::move(*blocks));
    } else if (role == "tool") {
      if (!m.contains("tool_call_id") || !m["tool_call_id"].is_string()) {
        return invalid("a tool message needs a string tool_call_id");
      }
      const auto text = plain_text(m.value("content", json()));
      if (!text) return invalid("a tool message content must be text");
      add("user", json::array({{{"type", "tool_result"}, {"tool_use_id", m["tool_call_id"]}, {"content", *text}}}));
    } else {
      return invalid("message role \"" + role + "\" is not supported by Anthropic providers");
    }
  }
  if (turns.empty()) return invalid("messages must contain at least one user or assistant message");

  json messages = json::array();
  for (auto& [role, blocks] : turns) {
    // One text block reads better (and logs shorter) as a plain string.
    if (blocks.size() == 1 && blocks[0]["type"] == "text") {
      messages.push_back({{"role", role}, {"content", blocks[0]["text"]}});
    } else {
      messages.push_back({{"role", role}, {"content", std::move(blocks)}});
    }
  }

  json out = {{"model", in["model"]}, {"messages", std::move(messages)}};
  if (!system.empty()) out["system"] = system;
  std::int64_t max_tokens = options.default_max_tokens;
  for (const char* k : {"max_tokens", "max_completion_tokens"}) {
    if (const auto it = in.find(k); it != in.end() && !it->is_null()) {
      if (!it->is_number_integer() || it->get<std::int64_t>() < 1) return invalid(std::string(k) + " must be a positive integer");
      max_tokens = it->get<std::int64_t>();
    }
  }
  out["max_tokens"] = max_tokens;
  if (const auto it = in.find("temperature"); it != in.end() && !it->is_null()) {
    if (!it->is_number()) return invalid("temperature must be a number");
    // OpenAI's range is 0..2, Anthropic's 0..1.
    out["temperature"] = std::clamp(it->get<double>(), 0.0, 1.0);
  }
  if (const auto it = in.find("top_p"); it != in.end() && !it->is_null()) {
    if (!it->is_number()) return invalid("top_p must be a number");
    out["top_p"] = *it;
  }
  if (const auto it = in.find("stop"); it != in.end() && !it->is_null()) {
    json stops = json::array();
    if (it->is_string()) {
      stops.push_back(*it);
    } else if (it->is_array() && std::all_of(it->begin(), it->end(), [](const json& s) { return s.is_string(); })) {
      stops = *it;
    } else {
      return invalid("stop must be a string or an array of strings");
    }
    if (!stops.empty()) out["stop_sequences"] = std::move(stops);
  }
  if (const auto it = in.find("tools"); it != in.end() && !it->is_null()) {
    auto tools = tools_of(*it);
    if (!tools) return tools.error();
    if (!tools->empty()) out["tools"] = std::move(*tools);
  }
  if (const auto it = in.find("tool_choice"); it != in.end() && !it->is_null() && out.contains("tools")) {
    auto choice = tool_choice_of(*it);
    if (!choice) return choice.error();
    out["tool_choice"] = std::move(*choice);
  }
  if (const auto it = in.find("parallel_tool_calls"); it != in.end() && it->is_boolean() && !it->get<bool>() &&
                                                       out.contains("tools")) {
    if (!out.contains("tool_choice")) out["tool_choice"] = {{"type", "auto"}};
    if (out["tool_choice"]["type"] != "none") out["tool_choice"]["disable_parallel_tool_use"] = true;
  }
  if (const auto it = in.find("user"); it != in.end() && it->is_string()) out["metadata"] = {{"user_id", *it}};
  if (in.value("stream", false)) out["stream"] = true;
  return ok(std::move(out));
}

const char* finish_reason(std::string_view stop_reason) {
  if (stop_reason == "max_tokens" || stop_reason == "model_context_window_exceeded") return "length";
  if (stop_reason == "tool_use") return "tool_calls";
  if (stop_reason == "refusal") return "content_filter";
  return "stop";  // end_turn, stop_sequence, pause_turn
}

json openai_usage(const json& usage) {
  const auto number = [&usage](const char* k) -> std::int64_t {
    if (!usage.is_object()) return 0;
    const auto it = usage.find(k);
    return it != usage.end() && it->is_number_integer() ? it->get<std::int64_t>() : 0;
  };
  const std::int64_t cached = number("cache_read_input_tokens");
  const std::int64_t prompt = number("input_tokens") + cached + number("cache_creation_input_tokens");
  const std::int64_t completion = number("output_tokens");
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

std::optional<std::string> to_chat_completion(const json& m, std::int64_t created) {
  if (!m.is_object() || !m.contains("content") || !m["content"].is_array()) return std::nullopt;
  std::string text;
  json calls = json::array();
  for (const auto& b : m["content"]) {
    if (!b.is_object()) continue;
    const std::string type = b.value("type", "");
    if (type == "text" && b.contains("text") && b["text"].is_string()) {
      text += b["text"].get<std::string>();
    } else if (type == "tool_use") {
      calls.push_back({{"id", b.value("id", "")},
                       {"type", "function"},
                       {"function", {{"name", b.value("name", "")}, {"arguments", b.value("input", json::object()).dump()}}}});
    }
    // thinking / redacted_thinking blocks have no OpenAI counterpart.
  }
  json message = {{"role", "assistant"}, {"refusal", nullptr}};
  message["content"] = text.empty() && !calls.empty() ? json(nullptr) : json(text);
  if (!calls.empty()) message["tool_calls"] = std::move(calls);
  const std::string stop = m.contains("stop_reason") && m["stop_reason"].is_string() ? m["stop_reason"].get<std::string>() : "";
  const json out = {{"id", m.value("id", "")},
                    {"object", "chat.completion"},
                    {"created", created},
                    {"model", m.value("model", "")},
                    {"choices", json::array({{{"index", 0},
                                              {"message", std::move(message)},
                                              {"logprobs", nullptr},
                                              {"finish_reason", finish_reason(stop)}}})},
                    {"usage", openai_usage(m.value("usage", json::object()))}};
  return out.dump();
}

std::string ChunkTranslator::chunk(const json& delta, const char* finish) const {
  return make_chunk(id_, created_, model_, 0, delta, finish);
}

std::optional<UpstreamFailure> ChunkTranslator::on_event(const SseMessage& m, std::vector<std::string>& out) {
  if (m.data.empty()) return std::nullopt;
  const json j = json::parse(m.data, nullptr, false);
  if (!j.is_object()) return protocol_failure(provider_, "sent an event that is not a JSON object");
  const std::string type = m.event.empty() ? j.value("type", "") : m.event;
  if (type == "error") {
    const json e = j.value("error", json::object());
    const std::string etype = e.is_object() ? e.value("type", "") : "";
    // Anthropic's error types map onto HTTP statuses (overloaded_error is 529).
    const int status = etype == "overloaded_error"      ? 529
                       : etype == "rate_limit_error"    ? 429
                       : etype == "invalid_request_error" ? 400
                                                          : 500;
    return failure_from_response(provider_, status, m.data, {});
  }
  if (type == "message_start") {
    const json msg = j.value("message", json::object());
    if (!msg.is_object()) return protocol_failure(provider_, "sent a malformed message_start");
    id_ = msg.value("id", "");
    model_ = msg.value("model", "");
    if (msg.contains("usage") && msg["usage"].is_object()) usage_ = msg["usage"];
    started_ = true;
    out.push_back(chunk({{"role", "assistant"}, {"content", ""}}));
    return std::nullopt;
  }
  if (!started_) {
    if (type == "ping") return std::nullopt;
    return protocol_failure(provider_, "sent \"" + type + "\" before message_start");
  }
  if (type == "content_block_start") {
    const json block = j.value("content_block", json::object());
    const int index = j.value("index", 0);
    if (block.is_object() && block.value("type", "") == "tool_use") {
      const int tool = static_cast<int>(tool_index_.size());
      tool_index_[index] = tool;
      json call = {{"index", tool},
                   {"id", block.value("id", "")},
                   {"type", "function"},
                   {"function", {{"name", block.value("name", "")}, {"arguments", ""}}}};
      out.push_back(chunk({{"tool_calls", json::array({std::move(call)})}}));
    } else if (block.is_object() && block.value("type", "") == "text" && block.contains("text") &&
               block["text"].is_string() && !block["text"].get<std::string>().empty()) {
      out.push_back(chunk({{"content", block["text"]}}));
    }
  } else if (type == "content_block_delta") {
    const json delta = j.value("delta", json::object());
    const std::string dtype = delta.is_object() ? delta.value("type", "") : "";
    if (dtype == "text_delta" && delta.contains("text") && delta["text"].is_string()) {
      out.push_back(chunk({{"content", delta["text"]}}));
    } else if (dtype == "input_json_delta" && delta.contains("partial_json") && delta["partial_json"].is_string()) {
      const auto it = tool_index_.find(j.value("index", 0));
      if (it == tool_index_.end()) return protocol_failure(provider_, "sent an input_json_delta outside a tool_use block");
      if (!delta["partial_json"].get<std::string>().empty()) {
        out.push_back(chunk(
            {{"tool_calls", json::array({{{"index", it->second}, {"function", {{"arguments", delta["partial_json"]}}}}})}}));
      }
    }
    // thinking_delta / signature_delta: no OpenAI counterpart.
  } else if (type == "message_delta") {
    if (j.contains("usage") && j["usage"].is_object()) {
      for (const auto& [k, v] : j["usage"].items()) {
        if (v.is_number_integer()) usage_[k] = v;
      }
    }
    const json delta = j.value("delta", json::object());
    const std::string stop = delta.is_object() && delta.contains("stop_reason") && delta["stop_reason"].is_string()
                                 ? delta["stop_reason"].get<std::string>()
                                 : "";
    out.push_back(chunk(json::object(), finish_reason(stop)));
  } else if (type == "message_stop") {
    stopped_ = true;
    out.push_back(make_usage_chunk(id_, created_, model_, openai_usage(usage_)));
  }
  // ping, content_block_stop and unknown events carry nothing to relay.
  return std::nullopt;
}

std::optional<UpstreamFailure> ChunkTranslator::on_end(std::vector<std::string>&) {
  if (stopped_) return std::nullopt;
  return UpstreamFailure{Error{502, "upstream_disconnected", "upstream " + provider_ + " ended the stream early"}};
}

}  // namespace alou::gateway::anthropic
