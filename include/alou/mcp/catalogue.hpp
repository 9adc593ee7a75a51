#pragma once
// The tool catalogue: every tool of every configured MCP server (exposed as
// "<server>__<tool>") and every tool registered through POST /api/tools, in
// one list. This is the interface the agent uses; the REST routes and Alou's
// own MCP endpoint (/mcp) are built on it.
//
// Thread-safety: every member may be called from any io thread at once.
#include "alou/core/error.hpp"
#include "alou/core/principal.hpp"

#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace alou::mcp {

// How risky a call is; the agent asks for approval before external_write.
enum class Risk { kReadOnly, kExternalWrite };
const char* risk_name(Risk r);
std::optional<Risk> parse_risk(std::string_view s);

struct ToolInfo {
  std::string name;               // the exposed name, unique in the catalogue
  std::string title;              // may be empty
  std::string description;
  nlohmann::json input_schema;    // a JSON Schema object
  nlohmann::json output_schema;   // null when the tool declares none
  nlohmann::json annotations;     // MCP ToolAnnotations, null when none
  std::string source;             // "mcp", "command" or "http"
  std::string server;             // the MCP server ("" for registered tools)
  std::string upstream_name;      // the tool's own name at its source
  Risk risk = Risk::kExternalWrite;
  std::string owner;              // registered tools: who registered it

  // The MCP Tool object ({name, title?, description, inputSchema, ...}).
  nlohmann::json to_mcp() const;
  // The REST shape of GET /api/tools (adds source, server, risk).
  nlohmann::json to_api() const;
};

class ToolCatalogue {
 public:
  virtual ~ToolCatalogue() = default;

  // Every tool `who` may use (Principal::may_use_tool; every tool when
  // null), in catalogue order:
  // configured servers in config order, then registered tools.
  virtual std::vector<ToolInfo> list_tools(const Principal* who) const = 0;
  virtual std::optional<ToolInfo> find_tool(std::string_view name) const = 0;

  // Validates `arguments` (an object) against the tool's input schema and
  // runs the tool. Returns an MCP CallToolResult ({content, isError,
  // structuredContent?}); a tool that ran and failed (the server said
  // isError, a command exited non-zero or was killed) is a result with
  // isError: true, not an Error.
  // Errors: 403 tool_not_allowed (`who` is not null and its allow-list,
  // Principal::tools, leaves the name out; checked first, so it does not
  // tell whether the tool exists); 404 tool_not_found; 400 invalid_arguments (the message lists
  // every problem); 503 mcp_server_unavailable (not connected, restarting,
  // or it died during the call); 504 tool_timeout; 502 mcp_upstream_error
  // (the server answered with a JSON-RPC error).
  // Cancellation: cancelling the awaiting coroutine abandons the call; an
  // MCP server is sent notifications/cancelled, a command is killed.
  virtual boost::asio::awaitable<Result<nlohmann::json>> call_tool(std::string name, nlohmann::json arguments,
                                                                   const Principal* who) = 0;
};

}  // namespace alou::mcp
