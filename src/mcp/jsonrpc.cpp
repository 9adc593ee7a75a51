#include "alou/mcp/jsonrpc.hpp"

namespace alou::mcp {

bool is_supported_version(std::string_view v) {
  for (auto s : kSupportedVersions) {
    if (s == v) return true;
  }
  return false;
}

namespace {
Error invalid(std::string what) { return Error::bad_request("invalid JSON-RPC message: " + what, "invalid_jsonrpc"); }
}  // namespace

Result<Message> parse_message(const json& j) {
  if (!j.is_object()) return invalid("not an object");
  const auto v = j.find("jsonrpc");
  if (v == j.end() || !v->is_string() || v->get_ref<const std::string&>() != "2.0") {
    return invalid("jsonrpc must be \"2.0\"");
  }
  Message m;
  const auto id = j.find("id");
  const bool has_id = id != j.end();
  if (has_id) {
    if (!id->is_string() && !id->is_number_integer()) return invalid("id must be a string or an integer");
    m.id = *id;
  }
  const auto method = j.find("method");
  if (method != j.end()) {
    if (!method->is_string()) return invalid("method must be a string");
    m.method = method->get<std::string>();
    if (auto p = j.find("params"); p != j.end()) {
      if (!p->is_object() && !p->is_array()) return invalid("params must be an object or an array");
      m.params = *p;
    }
    m.kind = has_id ? Message::Kind::kRequest : Message::Kind::kNotification;
    return m;
  }
  if (!has_id) return invalid("neither a method nor an id");
  m.kind = Message::Kind::kResponse;
  if (auto e = j.find("error"); e != j.end()) {
    if (!e->is_object()) return invalid("error must be an object");
    RpcError err;
    if (auto c = e->find("code"); c != e->end() && c->is_number_integer()) err.code = c->get<int>();
    if (auto msg = e->find("message"); msg != e->end() && msg->is_string()) err.message = msg->get<std::string>();
    if (auto d = e->find("data"); d != e->end()) err.data = *d;
    m.error = std::move(err);
    return m;
  }
  const auto r = j.find("result");
  if (r == j.end()) return invalid("a response needs a result or an error");
  m.result = *r;
  return m;
}

json make_request(const json& id, std::string_view method, json params) {
  json j = {{"jsonrpc", "2.0"}, {"id", id}, {"method", method}};
  if (!params.is_null()) j["params"] = std::move(params);
  return j;
}

json make_notification(std::string_view method, json params) {
  json j = {{"jsonrpc", "2.0"}, {"method", method}};
  if (!params.is_null()) j["params"] = std::move(params);
  return j;
}

json make_result(const json& id, json result) {
  return {{"jsonrpc", "2.0"}, {"id", id}, {"result", std::move(result)}};
}

json make_error(const json& id, int code, std::string_view message, json data) {
  json e = {{"code", code}, {"message", message}};
  if (!data.is_null()) e["data"] = std::move(data);
  return {{"jsonrpc", "2.0"}, {"id", id}, {"error", std::move(e)}};
}

bool is_valid_tool_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string exposed_name(std::string_view server, std::string_view tool) {
  std::string s(server);
  s += "__";
  s += tool;
  return s;
}

json text_result(std::string text, bool is_error) {
  return {{"content", json::array({{{"type", "text"}, {"text", std::move(text)}}})}, {"isError", is_error}};
}

}  // namespace alou::mcp
