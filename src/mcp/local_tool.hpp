#pragma once
// A tool that runs inside Alou (registered through POST /api/tools): a
// command run per call, or an HTTP operation from an OpenAPI document.
#include "alou/core/error.hpp"
#include "alou/mcp/catalogue.hpp"

#include <boost/asio/awaitable.hpp>
#include <nlohmann/json.hpp>

namespace alou::mcp {

class LocalTool {
 public:
  virtual ~LocalTool() = default;
  virtual const ToolInfo& info() const = 0;
  // A CallToolResult (isError: true when the tool ran and failed), or an
  // Error when it could not run. Runs on the caller's executor.
  virtual boost::asio::awaitable<Result<nlohmann::json>> call(nlohmann::json arguments) = 0;
};

}  // namespace alou::mcp
