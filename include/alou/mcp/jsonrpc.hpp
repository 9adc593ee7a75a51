#pragma once
// JSON-RPC 2.0 as MCP uses it (one message per line on stdio, one per POST
// over Streamable HTTP), the protocol versions Alou speaks, and the tool
// naming rule. Pure functions over nlohmann::json; thread-safe.
#include "alou/core/error.hpp"

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>

namespace alou::mcp {

using json = nlohmann::json;

// The version Alou asks for and prefers; older ones it accepts from servers
// and clients that do not speak the newest.
inline constexpr std::string_view kProtocolVersion = "2025-11-25";
inline constexpr std::string_view kSupportedVersions[] = {"2025-11-25", "2025-06-18", "2025-03-26"};
bool is_supported_version(std::string_view v);

// JSON-RPC error codes.
inline constexpr int kParseError = -32700;
inline constexpr int kInvalidRequest = -32600;
inline constexpr int kMethodNotFound = -32601;
inline constexpr int kInvalidParams = -32602;
inline constexpr int kInternalError = -32603;
// MCP: resource not found.
inline constexpr int kResourceNotFound = -32002;

struct RpcError {
  int code = kInternalError;
  std::string message;
  json data;  // null when absent
};

struct Message {
  enum class Kind { kRequest, kNotification, kResponse };
  Kind kind = Kind::kNotification;
  json id;                          // requests and responses: a string or an integer
  std::string method;               // requests and notifications
  json params;                      // null when absent
  json result;                      // responses without an error
  std::optional<RpcError> error;    // error responses
};

// Classifies one decoded JSON value. Errors (code "invalid_jsonrpc", 400)
// name what is wrong: not an object, jsonrpc != "2.0", a bad id, a method
// that is not a string, a response with neither result nor error.
Result<Message> parse_message(const json& j);

json make_request(const json& id, std::string_view method, json params = nullptr);
json make_notification(std::string_view method, json params = nullptr);
json make_result(const json& id, json result);
json make_error(const json& id, int code, std::string_view message, json data = nullptr);

// ^[a-zA-Z0-9_-]{1,64}$: what MCP clients such as Claude Desktop accept.
bool is_valid_tool_name(std::string_view name);
// "<server>__<tool>".
std::string exposed_name(std::string_view server, std::string_view tool);

// A CallToolResult with one text block and isError set as given.
json text_result(std::string text, bool is_error);

}  // namespace alou::mcp
