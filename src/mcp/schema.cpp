// valijson reports failures by exception when VALIJSON_USE_EXCEPTIONS is set;
// they are caught here, at the module edge.
#define VALIJSON_USE_EXCEPTIONS 1
#include "schema.hpp"

// GCC 12 reports a false -Wmaybe-uninitialized inside <regex>, which valijson uses.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

#include <valijson/adapters/nlohmann_json_adapter.hpp>
#include <valijson/schema.hpp>
#include <valijson/schema_parser.hpp>
#include <valijson/validation_results.hpp>
#include <valijson/validator.hpp>

namespace alou::mcp {

InputSchema::InputSchema() = default;
InputSchema::~InputSchema() = default;

Result<std::shared_ptr<const InputSchema>> InputSchema::compile(const nlohmann::json& schema) {
  if (!schema.is_object()) return Error::bad_request("the input schema is not a JSON object", "invalid_schema");
  // MCP servers declare 2020-12 or draft-07; valijson speaks draft 7. The
  // "$schema" keyword is dropped so that a newer dialect's URI alone does
  // not make the tool unusable.
  nlohmann::json copy = schema;
  copy.erase("$schema");
  auto out = std::shared_ptr<InputSchema>(new InputSchema());
  out->schema_ = std::make_unique<valijson::Schema>();
  try {
    valijson::SchemaParser parser(valijson::SchemaParser::kDraft7);
    valijson::adapters::NlohmannJsonAdapter adapter(copy);
    parser.populateSchema(adapter, *out->schema_);
  } catch (const std::exception& e) {
    return Error::bad_request(std::string("the input schema is not usable: ") + e.what(), "invalid_schema");
  }
  return std::shared_ptr<const InputSchema>(std::move(out));
}

std::vector<std::string> InputSchema::validate(const nlohmann::json& value) const {
  std::vector<std::string> problems;
  try {
    valijson::Validator validator(valijson::Validator::kStrongTypes);
    valijson::ValidationResults results;
    valijson::adapters::NlohmannJsonAdapter adapter(value);
    if (validator.validate(*schema_, adapter, &results)) return problems;
    valijson::ValidationResults::Error err;
    while (results.popError(err)) {
      // valijson's context is "<root>", "[name]", "[0]": as a JSON pointer.
      std::string where;
      for (const auto& c : err.context) {
        if (c == "<root>") continue;
        std::string part = c.size() >= 2 && c.front() == '[' && c.back() == ']' ? c.substr(1, c.size() - 2) : c;
        if (part.size() >= 2 && part.front() == '"' && part.back() == '"') part = part.substr(1, part.size() - 2);
        where += "/" + part;
      }
      // valijson reports each failing parent too ("Failed to validate item
      // #0 in array"): the leaves say what is actually wrong.
      if (err.description.rfind("Failed to validate", 0) == 0) continue;
      problems.push_back((where.empty() ? std::string("/") : where) + ": " + err.description);
    }
    if (problems.empty()) problems.push_back("/: does not match the input schema");
  } catch (const std::exception& e) {
    problems.push_back(std::string("/: validation failed: ") + e.what());
  }
  return problems;
}

}  // namespace alou::mcp
