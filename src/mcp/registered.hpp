#pragma once
// Registered tools (POST /api/tools): their definitions, validated and
// normalized, and the LocalTools that run them.
//
// Command tool (kind "command"):
//   {kind, name, description, risk, input_schema, command: [argv template],
//    timeout_ms, limits: {cpu_s, memory_mb, fsize_mb, nproc}}
//   Each call runs the argv (no shell; "{{arg}}" in an element is replaced
//   by that argument: strings as they are, anything else as JSON) with the
//   arguments as JSON on stdin, a scrubbed environment (PATH, HOME = the
//   working directory, LANG), a fresh temp working directory removed
//   afterwards, the rlimits and the timeout (SIGKILL to its process group).
//   Exit 0: stdout as text; otherwise isError with the reason and stderr.
//   A run is recorded in the owner's RunningChildren while it lasts, so that
//   shutdown can end it; a call cancelled by its caller kills the group.
// OpenAPI tools (kind "openapi" at registration, stored as kind "http"):
//   {kind: "openapi", prefix, risk, openapi: {document} | openapi_file: path,
//    base_url?, operations?: [operationId]}
//   Each operation becomes a tool "<prefix>__<operationId>" whose input
//   schema has its path/query/header parameters and "body" (the JSON request
//   body); a call sends that request (2xx: the body as text; otherwise
//   isError with the status).
#include "local_tool.hpp"

#include "alou/core/error.hpp"

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

namespace alou::http {
class Client;
}

namespace alou::mcp {

class RunningChildren;

struct ToolDef {
  std::string name;
  std::string kind;      // "command" or "http"
  std::string owner;
  Risk risk = Risk::kExternalWrite;
  nlohmann::json spec;   // normalized definition (what is stored)
};

// A POST /api/tools body → one definition (command) or one per operation
// (openapi). Errors: 400 invalid_tool naming the field and the problem.
Result<std::vector<ToolDef>> parse_registration(const nlohmann::json& body, const std::string& owner);

// Builds the runnable tool from a stored definition. `client` must outlive
// it; command runs are recorded in `runs` (once it is closed, a call answers
// 503 shutting_down).
Result<std::shared_ptr<LocalTool>> make_local_tool(const ToolDef& def, http::Client& client,
                                                   std::shared_ptr<RunningChildren> runs);

}  // namespace alou::mcp
