#include "gemini.hpp"

#include <sodium.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

namespace alou::gateway::gemini {
namespace {

using nlohmann::json;

Result<json> ok(json j) { return Result<json>(boost::system::in_place_value, std::move(j)); }

Error invalid(const std::string& message) { return Error::bad_request(message, "invalid_request"); }


// Gemini's function parameters are an OpenAPI subset that rejects some
// JSON Schema keywords that OpenAI tools (and zod-generated schemas) carry.
json sanitize_schema(const json& s) {
  if (s.is_array()) {
    json out = json::array();
    for (const auto& x : s) out.push_back(sanitize_schema(x));
    return out;
  }
  if (!s.is_object()) return s;
  json out = json::object();
  for (const auto& [k, v] : s.items()) {
    if (k == "$schema" || k == "additionalProperties" || k == "strict") continue;
    out[k] = sanitize_schema(v);
  }
  return out;
}

Result<json> user_parts(const json& content) {
  json parts = json::array();
  if (content.is_string()) {
    if (!content.get<std::string>().empty()) parts.push_back({{"text", content}});
    return ok(std::move(parts));
  }
  if (!content.is_array()) return invalid("a user message content must be a string or an array of parts");
  for (const auto& p : content) {
    const std::string type = p.is_object() ? p.value("type", "") : "";
    if (type == "text" && p.contains("text") && p["text"].is_string()) {
      if (!p["text"].get<std::string>().empty()) parts.push_back({{"text", p["text"]}});
    } else if (type == "image_url") {
      const json iu = p.value("image_url", json());
      const json url = iu.is_object() ? iu.value("url", json()) : iu;
      const std::string u = url.is_string() ? url.get<std::string>() : "";
      const auto semi = u.find(";base64,");
      if (u.rfind("data:", 0) != 0 || semi == std::string::npos) {
        return invalid("Gemini providers take images as data:MIME;base64,... URLs only");
      }
      parts.push_back({{"inlineData", {{"mimeType", u.substr(5, semi - 5)}, {"data", u.substr(semi + 8)}}}});
    } else {
      return invalid("content part type \"" + type + "\" is not supported by Gemini providers");
    }
  }
  return ok(std::move(parts));
}

// An assistant message -> model parts; remembers each call's name by id
// (a functionResponse names the function, an OpenAI tool message its id).
Result<json> model_parts(const json& m, std::map<std::string, std::string>& names) {
  json parts = json::array();
  const auto text = plain_text(m.value("content", json()));
  if (!text) return invalid("an assistant message content must be text");
  if (!text->empty()) parts.push_back({{"text", *text}});
  if (const auto calls = m.find("tool_calls"); calls != m.end() && !calls->is_null()) {
    if (!calls->is_array()) return invalid("tool_calls must be an array");
    for (const auto& c : *calls) {
      const json fn = c.is_object() ? c.value("function", json()) : json();
      if (!fn.is_object() || !fn.contains("name") || !fn["name"].is_string()) {
        return invalid("each tool call needs a function.name");
      }
      json args = json::object();
      if (const auto a = fn.find("arguments"); a != fn.end() && a->is_string() && !a->get<std::string>().empty()) {
        args = json::parse(a->get<std::string>(), nullptr, false);
        if (!args.is_object()) return invalid("the arguments of tool call \"" + fn["name"].get<std::string>() + "\" are not a JSON object");
      }
      if (c.contains("id") && c["id"].is_string()) names[c["id"].get<std::string>()] = fn["name"].get<std::string>();
      parts.push_back({{"functionCall", {{"name", fn["name"]}, {"args", std::move(args)}}}});
    }
  }
  return ok(std::move(parts));
}

}  // namespace

Result<std::string> model_path(std::string_view model) {
  if (model.rfind("models/", 0) == 0) model.remove_prefix(7);
  const bool safe = !model.empty() && std::all_of(model.begin(), model.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
  });
  if (!safe) return invalid("Gemini model names use only letters, digits, '-', '.' and '_'");
  return std::string(model);
}

Result<json> to_generate_request(const json& in) {
  if (!in.is_object()) return invalid("the request must be an object");
  const auto msgs = in.find("messages");
  if (msgs == in.end() || !msgs->is_array()) return invalid("messages must be an array");

  std::string system;
  std::map<std::string, std::string> names;  // tool call id -> function name
  std::vector<std::pair<std::string, json>> turns;
  const auto add = [&turns](const char* role, json parts) {
    if (parts.empty()) return;
    if (!turns.empty() && turns.back().first == role) {
      for (auto& p : parts) turns.back().second.push_back(std::move(p));
    } else {
      turns.emplace_back(role, std::move(parts));
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
      auto parts = user_parts(m.value("content", json()));
      if (!parts) return parts.error();
      add("user", std::move(*parts));
    } else if (role == "assistant") {
      auto parts = model_parts(m, names);
      if (!parts) return parts.error();
      add("model", std::move(*parts));
    } else if (role == "tool") {
      const std::string id = m.contains("tool_call_id") && m["tool_call_id"].is_string() ? m["tool_call_id"].get<std::string>() : "";
      const auto name = names.find(id);
      if (name == names.end()) return invalid("tool message \"" + id + "\" answers no earlier tool call");
      const auto text = plain_text(m.value("content", json()));
      if (!text) return invalid("a tool message content must be text");
      // functionResponse.response must be an object: a JSON object result
      // as is, anything else wrapped.
      json response = json::parse(*text, nullptr, false);
      if (!response.is_object()) response = {{"content", *text}};
      add("user", json::array({{{"functionResponse", {{"name", name->second}, {"response", std::move(response)}}}}}));
    } else {
      return invalid("message role \"" + role + "\" is not supported by Gemini providers");
    }
  }
  if (turns.empty()) return invalid("messages must contain at least one user or assistant message");

  json contents = json::array();
  for (auto& [role, parts] : turns) contents.push_back({{"role", role}, {"parts", std::move(parts)}});
  json out = {{"contents", std::move(contents)}};
  if (!system.empty()) out["systemInstruction"] = {{"parts", json::array({{{"text", system}}})}};

  if (const auto it = in.find("tools"); it != in.end() && !it->is_null()) {
    if (!it->is_array()) return invalid("tools must be an array");
    json decls = json::array();
    for (const auto& t : *it) {
      const json fn = t.is_object() ? t.value("function", json()) : json();
      if (!t.is_object() || t.value("type", "function") != "function" || !fn.is_object() || !fn.contains("name") ||
          !fn["name"].is_string()) {
        return invalid("each tool must be {type: \"function\", function: {name, description?, parameters?}}");
      }
      json d = {{"name", fn["name"]}};
      if (fn.contains("description") && fn["description"].is_string()) d["description"] = fn["description"];
      // Gemini rejects an object schema without properties: leave it out.
      if (const auto p = fn.find("parameters"); p != fn.end() && p->is_object() &&
                                                !(p->contains("properties") && (*p)["properties"].empty() &&
                                                  p->value("type", "") == "object")) {
        d["parameters"] = sanitize_schema(*p);
      }
      decls.push_back(std::move(d));
    }
    if (!decls.empty()) out["tools"] = json::array({{{"functionDeclarations", std::move(decls)}}});
  }
  if (const auto it = in.find("tool_choice"); it != in.end() && !it->is_null() && out.contains("tools")) {
    json config;
    if (it->is_string() && *it == "auto") {
      config = {{"mode", "AUTO"}};
    } else if (it->is_string() && *it == "required") {
      config = {{"mode", "ANY"}};
    } else if (it->is_string() && *it == "none") {
      config = {{"mode", "NONE"}};
    } else if (it->is_object() && it->value("type", "") == "function" && it->contains("function") &&
               (*it)["function"].is_object() && (*it)["function"].contains("name") &&
               (*it)["function"]["name"].is_string()) {
      config = {{"mode", "ANY"}, {"allowedFunctionNames", json::array({(*it)["function"]["name"]})}};
    } else {
      return invalid("tool_choice must be \"auto\", \"required\", \"none\" or {type: \"function\", function: {name}}");
    }
    out["toolConfig"] = {{"functionCallingConfig", std::move(config)}};
  }

  json gen = json::object();
  for (const char* k : {"max_tokens", "max_completion_tokens"}) {
    if (const auto it = in.find(k); it != in.end() && !it->is_null()) {
      if (!it->is_number_integer() || it->get<std::int64_t>() < 1) return invalid(std::string(k) + " must be a positive integer");
      gen["maxOutputTokens"] = *it;
    }
  }
  const std::pair<const char*, const char*> numbers[] = {{"temperature", "temperature"},
                                                         {"top_p", "topP"},
                                                         {"presence_penalty", "presencePenalty"},
                                                         {"frequency_penalty", "frequencyPenalty"}};
  for (const auto& [from, to] : numbers) {
    if (const auto it = in.find(from); it != in.end() && !it->is_null()) {
      if (!it->is_number()) return invalid(std::string(from) + " must be a number");
      gen[to] = *it;
    }
  }
  if (const auto it = in.find("seed"); it != in.end() && it->is_number_integer()) gen["seed"] = *it;
  if (const auto it = in.find("n"); it != in.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<std::int64_t>() < 1) return invalid("n must be a positive integer");
    if (it->get<std::int64_t>() > 1) gen["candidateCount"] = *it;
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
    if (!stops.empty()) gen["stopSequences"] = std::move(stops);
  }
  if (const auto it = in.find("response_format"); it != in.end() && it->is_object()) {
    const std::string type = it->value("type", "");
    if (type == "json_object") {
      gen["responseMimeType"] = "application/json";
    } else if (type == "json_schema") {
      gen["responseMimeType"] = "application/json";
      const json js = it->value("json_schema", json::object());
      if (js.is_object() && js.contains("schema") && js["schema"].is_object()) gen["responseJsonSchema"] = js["schema"];
    } else if (type != "text") {
      return invalid("response_format.type must be text, json_object or json_schema");
    }
  }
  if (!gen.empty()) out["generationConfig"] = std::move(gen);
  return ok(std::move(out));
}

const char* finish_reason(std::string_view reason, bool called) {
  if (reason == "MAX_TOKENS") return "length";
  if (reason == "SAFETY" || reason == "RECITATION" || reason == "BLOCKLIST" || reason == "PROHIBITED_CONTENT" ||
      reason == "SPII" || reason == "IMAGE_SAFETY" || reason == "LANGUAGE") {
    return "content_filter";
  }
  return called ? "tool_calls" : "stop";  // STOP, MALFORMED_FUNCTION_CALL, OTHER...
}

json openai_usage(const json& u) {
  const auto number = [&u](const char* k) -> std::int64_t {
    if (!u.is_object()) return 0;
    const auto it = u.find(k);
    return it != u.end() && it->is_number_integer() ? it->get<std::int64_t>() : 0;
  };
  const std::int64_t prompt = number("promptTokenCount");  // includes cachedContentTokenCount
  const std::int64_t thoughts = number("thoughtsTokenCount");
  // OpenAI counts reasoning tokens in completion_tokens.
  const std::int64_t completion = number("candidatesTokenCount") + thoughts;
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", number("cachedContentTokenCount")}}},
          {"completion_tokens_details", {{"reasoning_tokens", thoughts}}}};
}

namespace {

// One candidate's parts -> (text, tool calls); `calls` numbers the ids.
void read_parts(const json& candidate, const ReplyIds& ids, int& calls, std::string& text, json& tool_calls) {
  const json content = candidate.value("content", json::object());
  if (!content.is_object() || !content.contains("parts") || !content["parts"].is_array()) return;
  for (const auto& p : content["parts"]) {
    if (!p.is_object() || p.value("thought", false)) continue;  // thought summaries are not the answer
    if (p.contains("text") && p["text"].is_string()) {
      text += p["text"].get<std::string>();
    } else if (p.contains("functionCall") && p["functionCall"].is_object()) {
      const json& fc = p["functionCall"];
      const std::string id = fc.contains("id") && fc["id"].is_string() ? fc["id"].get<std::string>()
                                                                        : "call_" + ids.seed + "_" + std::to_string(calls);
      ++calls;
      tool_calls.push_back({{"id", id},
                            {"type", "function"},
                            {"function", {{"name", fc.value("name", "")}, {"arguments", fc.value("args", json::object()).dump()}}}});
    }
  }
}

std::string reply_model(const json& r, const std::string& model) {
  return r.contains("modelVersion") && r["modelVersion"].is_string() ? r["modelVersion"].get<std::string>() : model;
}

}  // namespace

std::optional<std::string> to_chat_completion(const json& r, const std::string& model, const ReplyIds& ids) {
  if (!r.is_object() || (!r.contains("candidates") && !r.contains("promptFeedback"))) return std::nullopt;
  json choices = json::array();
  int calls = 0;
  const json candidates = r.value("candidates", json::array());
  if (candidates.is_array()) {
    for (std::size_t i = 0; i < candidates.size(); ++i) {
      const json& c = candidates[i];
      if (!c.is_object()) continue;
      std::string text;
      json tool_calls = json::array();
      read_parts(c, ids, calls, text, tool_calls);
      json message = {{"role", "assistant"}, {"refusal", nullptr}};
      message["content"] = text.empty() && !tool_calls.empty() ? json(nullptr) : json(text);
      const bool called = !tool_calls.empty();
      if (called) message["tool_calls"] = std::move(tool_calls);
      choices.push_back({{"index", c.value("index", static_cast<int>(i))},
                         {"message", std::move(message)},
                         {"logprobs", nullptr},
                         {"finish_reason", finish_reason(c.value("finishReason", ""), called)}});
    }
  }
  if (choices.empty()) {
    // The prompt itself was blocked (promptFeedback.blockReason).
    choices.push_back({{"index", 0},
                       {"message", {{"role", "assistant"}, {"content", nullptr}, {"refusal", nullptr}}},
                       {"logprobs", nullptr},
                       {"finish_reason", "content_filter"}});
  }
  const std::string id = r.contains("responseId") && r["responseId"].is_string() ? r["responseId"].get<std::string>()
                                                                                  : "chatcmpl-" + ids.seed;
  const json out = {{"id", id},
                    {"object", "chat.completion"},
                    {"created", ids.created},
                    {"model", reply_model(r, model)},
                    {"choices", std::move(choices)},
                    {"usage", openai_usage(r.value("usageMetadata", json::object()))}};
  return out.dump();
}

std::optional<UpstreamFailure> ChunkTranslator::on_event(const SseMessage& m, std::vector<std::string>& out) {
  if (m.data.empty()) return std::nullopt;
  const json r = json::parse(m.data, nullptr, false);
  if (!r.is_object()) return protocol_failure(provider_, "sent an event that is not a JSON object");
  if (r.contains("error")) {
    const json e = r["error"];
    const int code = e.is_object() && e.contains("code") && e["code"].is_number_integer() ? e["code"].get<int>() : 500;
    return failure_from_response(provider_, code, m.data, {});
  }
  if (!started_) {
    started_ = true;
    id_ = r.contains("responseId") && r["responseId"].is_string() ? r["responseId"].get<std::string>()
                                                                   : "chatcmpl-" + ids_.seed;
    model_ = reply_model(r, model_);
  }
  if (r.contains("usageMetadata") && r["usageMetadata"].is_object()) usage_ = r["usageMetadata"];
  const json candidates = r.value("candidates", json::array());
  if (!candidates.is_array() || candidates.empty()) {
    if (r.contains("promptFeedback") && r["promptFeedback"].is_object() && r["promptFeedback"].contains("blockReason")) {
      if (role_sent_.insert(0).second) out.push_back(make_chunk(id_, ids_.created, model_, 0, {{"role", "assistant"}, {"content", ""}}, nullptr));
      out.push_back(make_chunk(id_, ids_.created, model_, 0, json::object(), "content_filter"));
      finished_ = true;
    }
    return std::nullopt;
  }
  for (std::size_t i = 0; i < candidates.size(); ++i) {
    const json& c = candidates[i];
    if (!c.is_object()) continue;
    const int index = c.value("index", static_cast<int>(i));
    if (role_sent_.insert(index).second) {
      out.push_back(make_chunk(id_, ids_.created, model_, index, {{"role", "assistant"}, {"content", ""}}, nullptr));
    }
    std::string text;
    json tool_calls = json::array();
    const int first_call = calls_;
    read_parts(c, ids_, calls_, text, tool_calls);
    if (!text.empty()) out.push_back(make_chunk(id_, ids_.created, model_, index, {{"content", text}}, nullptr));
    if (!tool_calls.empty()) {
      called_.insert(index);
      // Gemini sends whole calls: id, name and all the arguments in one delta.
      for (std::size_t k = 0; k < tool_calls.size(); ++k) tool_calls[k]["index"] = first_call + static_cast<int>(k);
      out.push_back(make_chunk(id_, ids_.created, model_, index, {{"tool_calls", std::move(tool_calls)}}, nullptr));
    }
    if (c.contains("finishReason") && c["finishReason"].is_string()) {
      finished_ = true;
      out.push_back(make_chunk(id_, ids_.created, model_, index, json::object(),
                               finish_reason(c["finishReason"].get<std::string>(), called_.count(index) > 0)));
    }
  }
  return std::nullopt;
}

std::optional<UpstreamFailure> ChunkTranslator::on_end(std::vector<std::string>& out) {
  if (!finished_) {
    return UpstreamFailure{Error{502, "upstream_disconnected", "upstream " + provider_ + " ended the stream early"}};
  }
  out.push_back(make_usage_chunk(id_, ids_.created, model_, openai_usage(usage_)));
  return std::nullopt;
}

// ---------------------------------------------------------------- embeddings

namespace {

// The texts of an OpenAI embeddings `input`; 400 for token ids.
Result<std::vector<std::string>> embedding_texts(const json& openai) {
  const auto input = openai.find("input");
  std::vector<std::string> texts;
  if (input != openai.end() && input->is_string()) {
    texts.push_back(input->get<std::string>());
  } else if (input != openai.end() && input->is_array() && !input->empty()) {
    for (const auto& x : *input) {
      if (!x.is_string()) {
        return Error::bad_request("provider kind gemini takes input as text only (no token ids)", "invalid_request");
      }
      texts.push_back(x.get<std::string>());
    }
  } else {
    return Error::bad_request("input must be a string or a non-empty array of strings", "invalid_input");
  }
  return texts;
}

std::string float32_base64(const json& values) {
  std::string bytes;
  bytes.reserve(values.size() * 4);
  for (const auto& v : values) {
    const auto f = static_cast<float>(v.get<double>());
    std::uint32_t u = 0;
    std::memcpy(&u, &f, sizeof u);
    for (int k = 0; k < 4; ++k) bytes += static_cast<char>((u >> (8 * k)) & 0xFF);
  }
  std::string out(sodium_base64_encoded_len(bytes.size(), sodium_base64_VARIANT_ORIGINAL), '\0');
  sodium_bin2base64(out.data(), out.size(), reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(),
                    sodium_base64_VARIANT_ORIGINAL);
  out.pop_back();  // the terminating NUL
  return out;
}

}  // namespace

Result<json> to_batch_embed_request(const json& openai, const std::string& model) {
  auto texts = embedding_texts(openai);
  if (!texts) return texts.error();
  const std::string format = openai.value("encoding_format", "float");
  if (format != "float" && format != "base64") {
    return Error::bad_request("encoding_format must be \"float\" or \"base64\"", "invalid_request");
  }
  std::optional<std::int64_t> dims;
  if (const auto d = openai.find("dimensions"); d != openai.end() && !d->is_null()) {
    if (!d->is_number_integer() || d->get<std::int64_t>() < 1) {
      return Error::bad_request("dimensions must be a positive integer", "invalid_request");
    }
    dims = d->get<std::int64_t>();
  }
  json requests = json::array();
  for (auto& t : *texts) {
    json r = {{"model", "models/" + model}, {"content", {{"parts", json::array({{{"text", std::move(t)}}})}}}};
    if (dims) r["outputDimensionality"] = *dims;
    requests.push_back(std::move(r));
  }
  json out = {{"requests", std::move(requests)}};
  return Result<json>(boost::system::in_place_value, std::move(out));
}

std::optional<std::string> to_openai_embeddings(const json& response, const json& openai) {
  const auto embeddings = response.find("embeddings");
  if (!response.is_object() || embeddings == response.end() || !embeddings->is_array()) return std::nullopt;
  auto texts = embedding_texts(openai);
  if (!texts || texts->size() != embeddings->size()) return std::nullopt;
  const bool base64 = openai.value("encoding_format", "float") == "base64";
  json data = json::array();
  std::int64_t chars = 0;
  for (std::size_t i = 0; i < embeddings->size(); ++i) {
    const auto& e = (*embeddings)[i];
    if (!e.is_object() || !e.contains("values") || !e["values"].is_array()) return std::nullopt;
    for (const auto& v : e["values"]) {
      if (!v.is_number()) return std::nullopt;
    }
    json item = {{"object", "embedding"}, {"index", i}};
    item["embedding"] = base64 ? json(float32_base64(e["values"])) : e["values"];
    data.push_back(std::move(item));
    chars += static_cast<std::int64_t>((*texts)[i].size());
  }
  const std::int64_t prompt = (chars + 3) / 4;
  const json out = {{"object", "list"},
                    {"data", std::move(data)},
                    {"model", openai.value("model", "")},
                    {"usage", {{"prompt_tokens", prompt}, {"total_tokens", prompt}}}};
  return out.dump();
}

}  // namespace alou::gateway::gemini
