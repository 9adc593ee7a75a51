#pragma once
// A compiled JSON Schema (valijson, draft 7 semantics, through its nlohmann
// adapter) for a tool's input. Compiled once per catalogue change; validate()
// is const and thread-safe.
#include "alou/core/error.hpp"

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

namespace valijson {
class Schema;
}

namespace alou::mcp {

class InputSchema final {
 public:
  // Errors (400 invalid_schema): not an object, a construct valijson
  // rejects (a remote $ref, a malformed keyword); the message says which.
  static Result<std::shared_ptr<const InputSchema>> compile(const nlohmann::json& schema);
  ~InputSchema();

  // Every problem as "<json pointer>: <what>", empty when `value` is valid.
  std::vector<std::string> validate(const nlohmann::json& value) const;

 private:
  InputSchema();
  std::unique_ptr<valijson::Schema> schema_;
};

}  // namespace alou::mcp
